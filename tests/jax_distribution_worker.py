"""The JAX side of `tests/test_jax_distribution.py` (run under KERAS_BACKEND=jax).

`python -m tests.jax_distribution_worker devices OUT.npz`: on the CPU devices
`XLA_FLAGS` makes, trains the MNIST MLP and a tiny BERT for `STEPS` LAMB steps
on one device, with `data_parallel`, `model_parallel` on (2, 2) and Keras's
`gradient_accumulation_steps=4`; prints one JSON line of measurements and
writes the one-device MLP weights to OUT.npz.

`python -m tests.jax_distribution_worker process ID PORT REFERENCE.npz`: one
of 2 processes joined over 127.0.0.1:PORT training the MLP `data_parallel`
on the devices of both; prints the max abs difference from REFERENCE.npz.
"""

import contextlib
import json
import sys

import keras
import numpy as np

import lamb
from lamb import jax_distribution
from tests.subprocesses import gathered_weights, gradient_norm, max_difference

STEPS = 3
BATCH = 16
ACCUMULATION = 4
CLIPNORM = 0.05  # Below the gradients' global norms (measured and printed).
TINY_BERT = {
    "attention_probs_dropout_prob": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "max_position_embeddings": 16,
    "num_attention_heads": 2,
    "num_hidden_layers": 1,
    "type_vocab_size": 2,
    "vocab_size": 64,
}
SEQUENCE, PREDICTIONS = 8, 2


def mlp_batches(rng):
    return [
        (rng.uniform(size=(BATCH, 28, 28)).astype("float32"),
         rng.integers(0, 10, size=(BATCH,)).astype("int32"))
        for _ in range(STEPS)
    ]


def bert_batches(rng):
    batches = []
    for _ in range(STEPS):
        x = {
            "input_ids": rng.integers(0, 64, size=(BATCH, SEQUENCE)),
            "input_mask": np.ones((BATCH, SEQUENCE)),
            "segment_ids": rng.integers(0, 2, size=(BATCH, SEQUENCE)),
            "masked_lm_positions": rng.integers(0, SEQUENCE, size=(BATCH, PREDICTIONS)),
        }
        # Every prediction real: each micro-batch's loss has the same weight.
        y = {
            "masked_lm_ids": rng.integers(0, 64, size=(BATCH, PREDICTIONS)),
            "masked_lm_weights": np.ones((BATCH, PREDICTIONS)),
            "next_sentence_labels": rng.integers(0, 2, size=(BATCH,)),
        }
        batches.append(({k: v.astype("int32") for k, v in x.items()},
                        {k: v.astype("float32" if k == "masked_lm_weights" else "int32")
                         for k, v in y.items()}))
    return batches


def build(kind):
    if kind == "mlp":
        from lamb.models import mnist

        model = mnist.build_model("mlp")
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model
    from lamb.models import bert

    return bert.BertPretrainer(dict(TINY_BERT))


def make_optimizer(name="lamb", accumulation=None, skip_nonfinite=False):
    """LAMB or Keras's AdamW, clipped below the gradients' norm, with a
    schedule that changes the rate at every optimizer step."""
    rate = keras.optimizers.schedules.PolynomialDecay(1e-2, 2 * STEPS, 0.0)
    kwargs = {"global_clipnorm": CLIPNORM, "gradient_accumulation_steps": accumulation}
    if name == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=0.01, **kwargs)
    return lamb.LAMB(rate, weight_decay=0.01, exclude_from_weight_decay=["bias", "gamma", "beta"],
                     skip_nonfinite_gradients=skip_nonfinite, **kwargs)


def micro_batches(batch, parts):
    x, y = batch
    size = len(keras.tree.flatten(y)[0]) // parts
    split = lambda tree, i: keras.tree.map_structure(  # noqa: E731
        lambda a: a[i * size:(i + 1) * size], tree)
    return [(split(x, i), split(y, i)) for i in range(parts)]


def train(kind, initial, batches, distribution=None, accumulation=None, **optimizer_kwargs):
    """The model after `len(batches)` optimizer steps, with its optimizer."""
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    with scope:
        model = build(kind)
        model.set_weights(initial)
        model.optimizer = make_optimizer(accumulation=accumulation, **optimizer_kwargs)
        model.compile(optimizer=model.optimizer, loss=getattr(model, "loss", None))
        for batch in batches:
            for x, y in micro_batches(batch, accumulation or 1):
                model.train_on_batch(x, y)
    return model


def devices_run(out):
    import jax

    rng = np.random.default_rng(0)
    results = {"devices": len(jax.devices())}
    try:
        jax_distribution.make_distribution("model_parallel", "3,2")
    except ValueError as error:
        results["mesh_error"] = str(error)
    for kind, layouts, batches in (
        ("mlp", jax_distribution.MNIST_MLP_LAYOUTS, mlp_batches(rng)),
        ("bert", jax_distribution.BERT_LAYOUTS, bert_batches(rng)),
    ):
        keras.utils.set_random_seed(1)
        initial = build(kind).get_weights()
        results[f"{kind}_gradient_norm"] = gradient_norm(_with(build(kind), initial), batches[0])
        reference = train(kind, initial, batches)
        expected = gathered_weights(reference)
        if kind == "mlp":
            np.savez(out, *expected)
        data_parallel = jax_distribution.make_distribution("data_parallel")
        model_parallel = jax_distribution.make_distribution("model_parallel", "2,2", layouts)
        for name, model in (
            ("data_parallel", train(kind, initial, batches, data_parallel)),
            ("model_parallel", train(kind, initial, batches, model_parallel)),
            ("data_parallel_accumulation",
             train(kind, initial, batches, data_parallel, accumulation=ACCUMULATION)),
        ):
            results[f"{kind}_{name}"] = max_difference(gathered_weights(model), expected)
            if name == "model_parallel":
                results[f"{kind}_sharding"] = _state_sharding(model)
                results[f"{kind}_optimizer_bytes_one_device"] = sum(
                    v.value.nbytes for v in reference.optimizer.variables)
                results[f"{kind}_optimizer_bytes_per_device"] = sorted(
                    jax_distribution.bytes_per_device(model.optimizer.variables).values())
        if kind == "mlp":
            results.update(
                _keras_accumulation_facts(initial, batches, expected, data_parallel))
    print(json.dumps(results))


def _with(model, initial):
    model.set_weights(initial)
    return model


def _state_sharding(model):
    """Per sharded kernel: its partition spec and those of its optimizer variables."""
    by_path = {}
    for variable in model.trainable_variables:
        spec = tuple(variable.value.sharding.spec)
        if any(axis is not None for axis in spec):
            by_path[variable.path] = {"variable": [str(a) for a in spec], "state": []}
    for variable in model.optimizer.variables:
        for path, entry in by_path.items():
            if path.replace("/", "_") + "_" in variable.path:
                entry["state"].append([str(a) for a in variable.value.sharding.spec])
    return by_path


def _keras_accumulation_facts(initial, batches, expected_lamb, data_parallel):
    """What Keras's `gradient_accumulation_steps` does on JAX: its schedules
    under LAMB (`expected_lamb`: whole batches) and Keras's AdamW (one
    device), and a non-finite micro-batch under `skip_nonfinite_gradients`
    (one device and `data_parallel`)."""
    facts = {}
    facts["schedule_lamb_accumulation"] = max_difference(
        gathered_weights(train("mlp", initial, batches, accumulation=ACCUMULATION)), expected_lamb)
    facts["schedule_adamw_accumulation"] = max_difference(
        gathered_weights(train("mlp", initial, batches, accumulation=ACCUMULATION, name="adamw")),
        gathered_weights(train("mlp", initial, batches, name="adamw")))
    # The second micro-batch of step 1 non-finite, then step 2's micro-batches;
    # the reference: step 2's micro-batches alone.
    x, y = batches[0]
    x = x.copy()
    x[BATCH // ACCUMULATION:2 * BATCH // ACCUMULATION] = np.nan
    without_step_1 = gathered_weights(train(
        "mlp", initial, batches[1:2], accumulation=ACCUMULATION, skip_nonfinite=True))
    for name, distribution in (("one_device", None), ("data_parallel", data_parallel)):
        scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
        with scope:
            model = build("mlp")
            model.set_weights(initial)
            model.compile(optimizer=make_optimizer(accumulation=ACCUMULATION, skip_nonfinite=True),
                          loss=model.loss)
            iterations, changed = [], []
            for micro_x, micro_y in micro_batches((x, y), ACCUMULATION) + micro_batches(
                    batches[1], ACCUMULATION):
                model.train_on_batch(micro_x, micro_y)
                iterations.append(int(model.optimizer.iterations))
                changed.append(max_difference(gathered_weights(model), initial) > 0)
        facts[f"nonfinite_iterations_after_each_micro_batch_{name}"] = iterations
        facts[f"nonfinite_weights_changed_after_each_micro_batch_{name}"] = changed
        facts[f"nonfinite_skipped_steps_{name}"] = model.optimizer.skipped_steps
        facts[f"nonfinite_difference_from_the_run_without_step_1_{name}"] = max_difference(
            gathered_weights(model), without_step_1)
    return facts


def process_run(process_id, port, reference):
    jax_distribution.initialize_processes(f"127.0.0.1:{port}", 2, process_id)
    import jax

    rng = np.random.default_rng(0)
    batches = mlp_batches(rng)
    keras.utils.set_random_seed(1)
    initial = build("mlp").get_weights()
    half = BATCH // 2
    local = [(x[process_id * half:(process_id + 1) * half],
              y[process_id * half:(process_id + 1) * half]) for x, y in batches]
    distribution = jax_distribution.make_distribution("data_parallel")
    model = train("mlp", initial, local, distribution)
    expected = list(np.load(reference).values())
    print(json.dumps({"process": process_id, "devices": len(jax.devices()),
                      "local_devices": len(jax.local_devices()),
                      "difference": max_difference(gathered_weights(model), expected)}))


if __name__ == "__main__":
    if sys.argv[1] == "devices":
        devices_run(sys.argv[2])
    else:
        process_run(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
