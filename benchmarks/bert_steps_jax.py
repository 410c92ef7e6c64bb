"""BERT pre-training steps under JAX on one synthetic batch: sequences/s and peak memory.

    KERAS_BACKEND=jax python benchmarks/bert_steps_jax.py \
        --bert_config=configs/bert_config_large.json --optimizer=lamb

Trains `lamb.models.bert.BertPretrainer` (keras-hub's BERT with BERT's two
heads) with LAMB or with Keras's AdamW, each step one XLA program
(`jit_compile`), under `mixed_bfloat16` by default, at sequence 128 with 20
masked-LM predictions per sequence (BERT's phase-1 shapes). Prints the
median sequences/s over `--rounds` rounds of `--steps` steps after one
compiling step, and the device's peak memory since the process started
where the device reports it (GPUs, TPUs; "n/a" on CPU): hence one optimizer
per process.

Imports neither TensorFlow nor anything of keras-hub's beyond what it needs
on import (`regex`, `tokenizers`; not `kagglehub`, `tensorflow-text`).

Published anchor for BERT-Large LAMB pre-training at sequence 128, mixed
precision, one A100: 485.6 sequences/s (NVIDIA, TensorFlow 2) and about 580
(NVIDIA, PyTorch).
"""

import argparse
import json
import statistics
import time

import keras
import numpy as np

import lamb
from lamb.models import bert


def synthetic_batch(config, batch, sequence, predictions):
    rng = np.random.default_rng(0)
    x = {
        "input_ids": rng.integers(0, config["vocab_size"], (batch, sequence)),
        "input_mask": np.ones((batch, sequence)),
        "segment_ids": rng.integers(0, config["type_vocab_size"], (batch, sequence)),
        "masked_lm_positions": rng.integers(0, sequence, (batch, predictions)),
    }
    y = {
        "masked_lm_ids": rng.integers(0, config["vocab_size"], (batch, predictions)),
        "masked_lm_weights": np.ones((batch, predictions), "float32"),
        "next_sentence_labels": rng.integers(0, 2, (batch,)),
    }
    return ({k: v.astype("int32") for k, v in x.items()},
            {k: v if k == "masked_lm_weights" else v.astype("int32") for k, v in y.items()})


def make_optimizer(name):
    if name == "lamb":
        return lamb.LAMB(1e-4, weight_decay=0.01, global_clipnorm=1.0,
                         exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"])
    return keras.optimizers.AdamW(1e-4, weight_decay=0.01, global_clipnorm=1.0)


def peak_memory_bytes():
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def measure(config, args):
    keras.utils.set_random_seed(0)
    model = bert.BertPretrainer(config)
    model.compile(optimizer=make_optimizer(args.optimizer), jit_compile=True)
    x, y = synthetic_batch(config, args.batch_size, args.sequence, args.predictions)
    model.train_on_batch(x, y)  # Compiles.
    rates = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for _ in range(args.steps):
            logs = model.train_on_batch(x, y, return_dict=True)
        float(logs["masked_lm_loss"])  # Waits for the last step.
        rates.append(args.batch_size * args.steps / (time.perf_counter() - started))
    return {"optimizer": args.optimizer, "sequences_per_s": statistics.median(rates),
            "peak_memory_bytes": peak_memory_bytes()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bert_config", default="configs/bert_config_base.json")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--sequence", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--optimizer", choices=("lamb", "adamw"), default="lamb")
    parser.add_argument("--dtype_policy", default="mixed_bfloat16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        parser.error(f"runs under KERAS_BACKEND=jax; it is {keras.backend.backend()!r}.")
    config = bert.load_bert_config(args.bert_config)
    keras.mixed_precision.set_dtype_policy(args.dtype_policy)
    import jax

    device = jax.devices()[0]
    result = measure(config, args)
    peak = result["peak_memory_bytes"]
    print(f"{args.bert_config} {args.optimizer}: {result['sequences_per_s']:.1f} sequences/s, "
          f"batch {args.batch_size} x {args.sequence}, {args.dtype_policy}, "
          f"peak memory {'n/a' if peak is None else f'{peak / 2**30:.2f} GiB'} "
          f"({device.platform}:{device.device_kind})")
    print(json.dumps({"bert_config": args.bert_config, **result}))


if __name__ == "__main__":
    main()
