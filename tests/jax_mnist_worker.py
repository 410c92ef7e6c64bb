"""The JAX side of `tests/test_jax_mnist.py` (run under KERAS_BACKEND=jax).

Every run goes through the app's own code: the distribution from its flags
(`mnist_compare.distribution_from_flags`), `make_config`, `plan_runs` and
`train_and_evaluate`, on synthetic MNIST-shaped data (`synthetic_mnist`):
`STEPS` LAMB steps of the MLP at batch `BATCH`, `global_clipnorm` below the
gradient's norm.

`python -m tests.jax_mnist_worker devices OUT_DIR [MANUAL_DIR SWEEP_JSON]`: on
the CPU devices `XLA_FLAGS` makes, one device, `data_parallel`,
`model_parallel` on (2, 2) and `data_parallel` with
`gradient_accumulation_steps=4` (through `--optimizer_options`); writes the
one-device weights to OUT_DIR/reference.npz. With MNIST in MANUAL_DIR, also
`TF_CELL` from the initial weights in OUT_DIR/tf_cell.npz (`tf_cell`, run
under TensorFlow), and the sweep of the `make_config` arguments SWEEP_JSON
into OUT_DIR/sweep (`run_sweep`, one device). Prints one JSON line of
measurements.

`python -m tests.jax_mnist_worker process ID PORT OUT_DIR`: one of 2
processes joined over 127.0.0.1:PORT (the app's process flags) training
`data_parallel` on the devices of both; prints the max abs difference from
OUT_DIR/reference.npz.
"""

import contextlib
import json
import os
import sys

import keras
import numpy as np
from absl import flags

from lamb.data import mnist as mnist_data
from lamb.mnist.config import make_config
from lamb.mnist.plan import plan_runs
from lamb.mnist.sweep import run_sweep
from lamb.mnist.training import load_data, train_and_evaluate
from lamb.models import mnist as mnist_models
from tests.subprocesses import gathered_weights, gradient_norm, max_difference

STEPS, BATCH, ACCUMULATION, TEST = 3, 16, 4, 16
CLIPNORM = 0.05  # Below the gradient's global norm (measured and printed).
# The TensorFlow-vs-JAX cell on real MNIST.
TF_CELL = dict(optimizers="lamb", models="mlp", batch_sizes="64", epochs=1, train_examples=256,
               test_examples=100)


@contextlib.contextmanager
def built_models(initial=None):
    """The models the app builds, as `(model, initial weights)` in a list;
    with `initial`, each starts from those weights instead of its own."""
    built = []
    build = mnist_models.build_model

    def build_and_record(*args, **kwargs):
        model = build(*args, **kwargs)
        if initial is not None:
            model.set_weights(initial)
        built.append((model, model.get_weights()))
        return model

    mnist_models.build_model = build_and_record
    try:
        yield built
    finally:
        mnist_models.build_model = build


def train_cell(config, data, initial=None):
    """The app's one run of `config`: `(model, initial weights, result row)`."""
    (spec,) = plan_runs(config)
    with built_models(initial) as built:
        row = train_and_evaluate(spec, data, config)
    (model, initial_weights), = built
    return model, initial_weights, row


def tf_cell(output_dir, manual_dir, out):
    """`TF_CELL` (run under TensorFlow): initial and final weights and the row to `out`."""
    config = make_config(output_dir=output_dir, mnist_manual_dir=manual_dir, **TF_CELL)
    model, initial, row = train_cell(config, load_data(config, log=lambda line: None))
    np.savez(out, initial=np.array(initial, dtype=object), final=np.array(
        model.get_weights(), dtype=object), row=json.dumps(row))


def synthetic_mnist():
    rng = np.random.default_rng(0)
    return tuple(
        (rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
         rng.integers(0, 10, size=(n,)).astype(np.int32))
        for n in (STEPS * BATCH, TEST)
    )


def use_flags(**values):
    """The app's distribution for these flag values (the others unset);
    returns the devices each batch is split over."""
    from lamb import mnist_compare  # Its flags; not in the pytest process beside other apps'.

    keras.distribution.set_distribution(None)
    for name in ("distribution", *mnist_compare.DISTRIBUTION_FLAGS):
        flags.FLAGS[name].value = flags.FLAGS[name].default
    for name, value in values.items():
        flags.FLAGS[name].value = value
    return mnist_compare.batch_devices(mnist_compare.distribution_from_flags())


def equality_config(output_dir, batch_devices, accumulation=None):
    """The MLP, LAMB at a constant rate, clipped; with `accumulation`, its
    micro-batches at batch `BATCH // accumulation`."""
    options = f"lamb.global_clipnorm={CLIPNORM}"
    if accumulation:
        options += f",lamb.gradient_accumulation_steps={accumulation}"
    return make_config(
        optimizers="lamb", models="mlp", batch_sizes=str(BATCH // (accumulation or 1)),
        epochs=1, train_examples=STEPS * BATCH, test_examples=TEST, learning_rate=0.01,
        lr_scaling="none", warmup_epochs=0.0, lr_decay_power=0.0, optimizer_options=options,
        output_dir=output_dir, batch_devices=batch_devices,
    )


def first_batch_gradient_norm(initial, data):
    """The global norm of the first batch's gradient at the initial weights."""
    (images, labels), _ = data
    x, y = next(iter(mnist_data.train_dataset(images, labels, BATCH, 12345)))
    model = mnist_models.build_model("mlp")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.set_weights(initial)
    return gradient_norm(model, (np.asarray(x), np.asarray(y)))


def devices_run(out_dir, manual_dir=None, sweep_json=None):
    import jax

    flags.FLAGS(["jax_mnist_worker"])
    data = synthetic_mnist()
    results = {"devices": len(jax.devices())}
    use_flags()
    reference, initial, reference_row = train_cell(
        equality_config(os.path.join(out_dir, "one_device"), 1), data)
    expected = gathered_weights(reference)
    np.savez(os.path.join(out_dir, "reference.npz"), *expected)
    results["gradient_norm"] = first_batch_gradient_norm(initial, data)
    results["reference_test_loss"] = reference_row["test_loss"]
    for name, flag_values, accumulation in (
        ("data_parallel", {"distribution": "data_parallel"}, None),
        ("model_parallel", {"distribution": "model_parallel", "mesh_shape": "2,2"}, None),
        ("data_parallel_accumulation", {"distribution": "data_parallel"}, ACCUMULATION),
    ):
        batch_devices = use_flags(**flag_values)
        model, _, row = train_cell(
            equality_config(os.path.join(out_dir, name), batch_devices, accumulation), data)
        results[name] = {
            "batch_devices": batch_devices,
            "difference": max_difference(gathered_weights(model), expected),
            "test_loss": row["test_loss"],
            "sharded": sorted(v.path for v in model.weights
                              if any(axis is not None for axis in v.value.sharding.spec))
        }
    try:
        use_flags(distribution="model_parallel", mesh_shape="1,3")
    except ValueError as error:
        results["model_axis_error"] = str(error)
    use_flags()
    if manual_dir:
        results["tf_cell"] = compare_with_tensorflow(
            os.path.join(out_dir, "tf_cell.npz"), manual_dir, out_dir)
        run_sweep(make_config(**json.loads(sweep_json), output_dir=os.path.join(out_dir, "sweep")),
                  log=lambda line: None)
    print(json.dumps(results))


def compare_with_tensorflow(tf_cell_path, manual_dir, out_dir):
    """`TF_CELL` from TensorFlow's initial weights: its final weights' max
    abs difference from TensorFlow's, and both result rows."""
    tf_run = np.load(tf_cell_path, allow_pickle=True)
    config = make_config(output_dir=os.path.join(out_dir, "tf_cell"), mnist_manual_dir=manual_dir,
                         **TF_CELL)
    model, _, row = train_cell(config, load_data(config, log=lambda line: None),
                               initial=list(tf_run["initial"]))
    return {
        "difference": max_difference(model.get_weights(), list(tf_run["final"])),
        "jax_row": row,
        "tensorflow_row": json.loads(str(tf_run["row"])),
    }


def process_run(process_id, port, out_dir):
    import jax

    flags.FLAGS(["jax_mnist_worker"])
    batch_devices = use_flags(distribution="data_parallel", coordinator_address=f"127.0.0.1:{port}",
                              num_processes=2, process_id=process_id)
    model, _, _ = train_cell(
        equality_config(os.path.join(out_dir, f"process_{process_id}"), batch_devices),
        synthetic_mnist())
    expected = list(np.load(os.path.join(out_dir, "reference.npz")).values())
    print(json.dumps({"process": process_id, "devices": len(jax.devices()),
                      "local_devices": len(jax.local_devices()), "batch_devices": batch_devices,
                      "difference": max_difference(gathered_weights(model), expected)}))


if __name__ == "__main__":
    if sys.argv[1] == "devices":
        devices_run(*sys.argv[2:])
    else:
        process_run(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
