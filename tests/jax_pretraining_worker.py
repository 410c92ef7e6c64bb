"""The JAX side of `tests/test_jax_pretraining.py` (run under KERAS_BACKEND=jax).

`python -m tests.jax_pretraining_worker devices DATA OUT`: on the 4 CPU
devices `XLA_FLAGS` makes, runs `lamb.run_pretraining` in this process (its
`pretrain`) on the records and BERT config in DATA: one device, then
`data_parallel`, `model_parallel` on (2, 2) and `data_parallel` with
`--gradient_accumulation_steps=4`, each in its own folder under OUT, and the
last resumed from its checkpoint of step 2 (a copy of its folder); prints
one JSON line of measurements and writes the initial weights and those of
one device after training to OUT/initial.npz and OUT/one_device.npz.

`python -m tests.jax_pretraining_worker process ID PORT DATA OUT`: one of 2
processes joined over 127.0.0.1:PORT running the app `data_parallel` on the
devices of both (output folder OUT/processes); prints the max abs difference
of its weights from OUT/one_device.npz.
"""

import json
import os
import shutil
import sys

from absl import flags
import numpy as np

from lamb import jax_distribution, run_pretraining
from lamb.data import pretraining as data
from lamb.models import bert
from lamb.pretraining import jax_checkpoints, train
from tests.subprocesses import gathered_weights, gradient_norm, max_difference

STEPS = 4
BATCH = 16
SEQUENCE, PREDICTIONS = 16, 3
ACCUMULATION = 4
CLIP_NORM = 0.1  # Below the gradient's global norm (measured and printed).
CONFIGURATIONS = {
    "one_device": [],
    "data_parallel": ["--distribution=data_parallel"],
    "model_parallel": ["--distribution=model_parallel", "--mesh_shape=2,2"],
    "accumulation": ["--distribution=data_parallel",
                     f"--gradient_accumulation_steps={ACCUMULATION}"],
}
# Flags refused on the JAX backend, each with its one-line error.
REFUSED = {
    "strategy": ["--strategy=mirrored"],
    "processes_without_distribution": [
        "--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=0"],
    "keras_optimizer_accumulation": ["--optimizer=keras_adamw", "--gradient_accumulation_steps=2"],
    "fp16_accumulation": ["--mixed_precision=fp16", "--gradient_accumulation_steps=2"],
    "batch_not_divisible": ["--distribution=data_parallel", "--train_batch_size=6"],
}


def app_flags(data_dir, output_dir):
    """The flags of every run (the TensorFlow one in the test too)."""
    return [
        f"--bert_config_file={os.path.join(data_dir, 'bert_config.json')}",
        f"--input_file={os.path.join(data_dir, 'data-*.tfrecord')}",
        f"--output_dir={output_dir}",
        f"--max_seq_length={SEQUENCE}", f"--max_predictions_per_seq={PREDICTIONS}",
        f"--train_batch_size={BATCH}", f"--num_train_steps={STEPS}", "--num_warmup_steps=2",
        "--learning_rate=1e-2", f"--clip_norm={CLIP_NORM}", "--optimizer=lamb",
        "--save_checkpoints_steps=2", "--iterations_per_loop=2",
    ]


def pretrain(args):
    """`lamb.run_pretraining` with `args`; the trained model."""
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["run_pretraining", *args])
    return run_pretraining.pretrain(["run_pretraining"])


def initial_model(data_dir):
    """The app's model before training (its seed) and its first batch."""
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["run_pretraining", *app_flags(data_dir, "unused")])
    model = train.build_model(bert.load_bert_config(flags.FLAGS.bert_config_file))
    dataset = data.make_dataset(
        data.expand_input_files(flags.FLAGS.input_file), BATCH, SEQUENCE, PREDICTIONS,
        flags.FLAGS.seed,
    )
    batch = tuple(
        {name: value.numpy() for name, value in tree.items()} for tree in next(iter(dataset))
    )
    return model, batch


def devices_run(data_dir, out):
    import jax

    model, first_batch = initial_model(data_dir)
    results = {"devices": len(jax.devices()), "gradient_norm": gradient_norm(model, first_batch)}
    np.savez(os.path.join(out, "initial.npz"), *model.get_weights())
    reference = None
    for name, extra in CONFIGURATIONS.items():
        model = pretrain(app_flags(data_dir, os.path.join(out, name)) + extra)
        values = gathered_weights(model)
        if reference is None:
            reference = values
            np.savez(os.path.join(out, "one_device.npz"), *values)
            results["optimizer_bytes_one_device"] = sum(
                v.value.nbytes for v in model.optimizer.variables)
        results[name] = max_difference(values, reference)
        results[f"{name}_iterations"] = int(model.optimizer.iterations)
        if name == "model_parallel":
            results["optimizer_bytes_per_device"] = sorted(
                jax_distribution.bytes_per_device(model.optimizer.variables).values())
    # The accumulation run resumed from its checkpoint of step STEPS / 2.
    resumed = os.path.join(out, "accumulation_resumed")
    shutil.copytree(os.path.join(out, "accumulation"), resumed)
    shutil.rmtree(jax_checkpoints.step_path(resumed, STEPS))
    os.remove(os.path.join(resumed, "metrics.json"))
    model = pretrain(app_flags(data_dir, resumed) + CONFIGURATIONS["accumulation"])
    results["accumulation_resumed"] = max_difference(
        gathered_weights(model), reference)
    results["accumulation_resumed_iterations"] = int(model.optimizer.iterations)
    for name, extra in REFUSED.items():
        try:
            pretrain(app_flags(data_dir, os.path.join(out, "refused")) + extra)
        except ValueError as error:
            results[f"refused_{name}"] = str(error)
    print(json.dumps(results))


def process_run(process_id, port, data_dir, out):
    import jax

    model = pretrain(app_flags(data_dir, os.path.join(out, "processes")) + [
        "--distribution=data_parallel", f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2", f"--process_id={process_id}",
    ])
    expected = list(np.load(os.path.join(out, "one_device.npz")).values())
    print(json.dumps({"process": process_id, "devices": len(jax.devices()),
                      "local_devices": len(jax.local_devices()),
                      "difference": max_difference(
                          gathered_weights(model), expected)}))


if __name__ == "__main__":
    if sys.argv[1] == "devices":
        devices_run(sys.argv[2], sys.argv[3])
    else:
        process_run(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
