"""Compare optimizers on MNIST across models and batch sizes.

    python -m lamb.mnist_compare --optimizers=adam,adamw,lamb --models=mlp,cnn \\
        --batch_sizes=64,1024,8192 --epochs=5 --output_dir=results/mnist

Trains every (model, batch size, optimizer) of the grid and writes to
`--output_dir`: `results.csv` (one row per run, appended), `results.md` (one
table per batch size: optimizers × models, test accuracy in %),
`accuracy_vs_batch_size.png`, `accuracy_per_epoch.png`, and per run
`runs/<model>-<optimizer>-b<batch size>-<run id>/` with the per-epoch log
(`epochs.csv`) and, with `--trust_ratio_every`, the trust-ratio log and plot.
A run whose settings match a row of `results.csv` is not run again, so
repeating the command resumes a sweep, also after a kill at any moment: a
run's row is added once its folder is complete, `results.csv`, `results.md`
and the plots are written to a temporary file and renamed into place, and the
folder of a run killed before its row was added is deleted and the run trained
again from scratch (resuming it mid-way would give other numbers than an
uninterrupted run). Damaged lines of `results.csv` are skipped with a warning.
The sweep ends by printing where its results are.

A run whose loss diverges (non-finite, or 1000 times its first step's, for 3
steps in a row or at its last step: `lamb.mnist.training.DivergenceGuard`)
is stopped there with a line naming the step and the losses; its cell says
`diverged (step N)` in `results.md`, has no test accuracy in `results.csv`
(`diverged_at_step` instead) and an × in the plots; the sweep goes on to the
next run. Exit status: 0 when every run of the grid has an accuracy; 3 when
the sweep finished but runs diverged (also when repeated, as their rows are
kept: change their settings to run them again); 1 for a bad flag or input.

Protocols (`--protocol`); every setting can still be overridden by its flag:

- `modern` (default): Keras' default (Glorot) initialization; learning rates
  at `--base_batch_size` 64 (Adam, AdamW 1e-3; LAMB 5e-3; LARS 1.0) scaled to
  each batch size by the square-root rule; linear warmup over 1 epoch, then linear
  decay to 0 (BERT's schedule); weight decay 0.01 except on biases (none for
  Adam); 60,000 training images; 10 epochs; seed 12345.
- `reference2019`: the settings of the 2019 TensorFlow LAMB experiment
  (ymcui/LAMB_Optimizer_TF, `mnist_tensorflow.ipynb`): constant learning rate
  0.001 for every optimizer, not scaled with the batch size; the TF1
  initialization of `lamb.models.mnist` (N(0, 1) for every weight and bias the
  notebook created); the first 55,000 training images, `55000 // batch_size`
  steps per epoch; 100 epochs; seed 12345. Adam is Keras Adam with TF1's
  ε = 1e-8; AdamW is BERT's AdamWeightDecay with weight decay 0.0; LAMB has
  weight decay 0.01 on every variable and no bias correction.

Both evaluate on the first `--test_examples` (default all 10,000) test images
after every epoch; the test accuracy reported is the one after the last epoch.

On the JAX backend (`KERAS_BACKEND=jax`) the same flags train the same way
(tf.data stays the input pipeline), and `--distribution` spreads each run's
steps over several devices (`keras.distribution`; one XLA program per step):
`data_parallel` splits every batch over all devices; `model_parallel` makes a
`--mesh_shape=BATCH,MODEL` mesh, splits every batch on BATCH and on MODEL the
kernels of `lamb.jax_distribution.MNIST_MLP_LAYOUTS`: the MLP's hidden and
output kernels, the CNN's dense and output kernels (its convolutions are
replicated) and the RNNs' output kernel (their recurrent cells are replicated:
they train data-parallel on BATCH). Every batch size and `--test_examples` must
then be divisible by the devices of the batch axis. Several processes
(machines) join with `--coordinator_address`, `--num_processes` and
`--process_id`; each writes its own `--output_dir`. Under TensorFlow the app
trains on one device and refuses these flags.

Known differences from the 2019 notebook: it trained on IDX images 5,000 to
59,999 (TF1's `read_data_sets` held out the first 5,000), while "first 55,000"
here is in tensorflow-datasets' stored order; its CNN kept dropout on when
testing; TF1's LSTM added its forget bias 1 as a constant, Keras initializes
the forget-gate bias to 1; it ran each setting 5 times on a GPU and reported
the maximum.
"""

import logging as std_logging
import os
import warnings

import keras
from absl import flags, logging

from lamb import _app, jax_distribution
from lamb.mnist.config import make_config
from lamb.mnist.settings import SETTINGS
from lamb.mnist.sweep import run_sweep

FLAGS = flags.FLAGS
DIVERGED_EXIT_STATUS = 3  # The sweep finished, but runs diverged.


def _define_flags():
    """A flag for each setting of `make_config`, with its name, default and help."""
    for setting in SETTINGS.values():
        default = os.environ.get(setting.environ) if setting.environ else setting.default
        if setting.kind == "list":
            default = ",".join(map(str, default))
        if setting.kind == "enum":
            _app.define_choice(setting.name, default, setting.choices, setting.help)
        else:
            getattr(flags, f"DEFINE_{setting.kind}")(setting.name, default, setting.help)


_define_flags()
jax_distribution.define_flags()
DISTRIBUTION_FLAGS = ("mesh_shape", "coordinator_address", "num_processes", "process_id")
# The narrowest dimension `MNIST_MLP_LAYOUTS` splits: the MLP's and the RNNs' 256 (the CNN's 1024).
SPLIT_WIDTH = 256


def main(argv):
    """Checks the flags (errors: `ValueError` naming the flag; warnings logged
    on one line each, as the apps' others), then runs the sweep; returns the
    exit status (see the module docstring)."""
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: every setting is a --flag.")
    distribution = distribution_from_flags()
    with warnings.catch_warnings():  # Restores showwarning on leaving.
        warnings.showwarning = lambda message, *details, **more: logging.warning("%s", message)
        config = make_config(
            **{name: FLAGS[name].value for name in SETTINGS},
            argument_prefix="--",
            batch_devices=batch_devices(distribution),
        )
    rows = run_sweep(config, verbose=2)
    if any(row["diverged_at_step"] is not None for row in rows):
        return DIVERGED_EXIT_STATUS
    return 0


def distribution_from_flags():
    """The `keras.distribution` of `--distribution` and the process flags, set
    for every run (None: one device); under TensorFlow, `ValueError` if any is set."""
    if keras.backend.backend() == "jax":
        # Not JAX's INFO line on each platform it has no library for (libtpu).
        std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
        if FLAGS.distribution == "model_parallel" and FLAGS.mesh_shape is not None:
            model_axis = jax_distribution.parse_mesh_shape(FLAGS.mesh_shape)[1]
            if SPLIT_WIDTH % model_axis:
                raise ValueError(
                    f"--mesh_shape={FLAGS.mesh_shape}: MODEL ({model_axis}) must divide "
                    f"{SPLIT_WIDTH}, the width of the kernels model_parallel splits."
                )
        return jax_distribution.configure_from_flags(jax_distribution.MNIST_MLP_LAYOUTS)
    given = [f"--{name}" for name in DISTRIBUTION_FLAGS if FLAGS[name].value is not None]
    if FLAGS.distribution != "none":
        given.insert(0, f"--distribution={FLAGS.distribution}")
    if given:
        raise ValueError(
            f"{given[0]} needs the JAX backend (KERAS_BACKEND=jax); KERAS_BACKEND is "
            f"{keras.backend.backend()!r}, where mnist_compare trains on one device."
        )
    return None


def batch_devices(distribution):
    """How many devices each batch is split over: the distribution's batch axis."""
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)]


def run():
    """The app (`python -m lamb.mnist_compare`, `lamb-mnist-compare`): errors on one line."""
    _app.run(main)


if __name__ == "__main__":
    run()
