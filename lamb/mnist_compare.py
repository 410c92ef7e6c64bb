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

Known differences from the 2019 notebook: it trained on IDX images 5,000 to
59,999 (TF1's `read_data_sets` held out the first 5,000), while "first 55,000"
here is in tensorflow-datasets' stored order; its CNN kept dropout on when
testing; TF1's LSTM added its forget bias 1 as a constant, Keras initializes
the forget-gate bias to 1; it ran each setting 5 times on a GPU and reported
the maximum.
"""

import os

from absl import app, flags

from lamb.mnist.config import make_config
from lamb.mnist.protocols import PROTOCOLS
from lamb.mnist.sweep import run_sweep

FLAGS = flags.FLAGS

flags.DEFINE_enum(
    "protocol",
    "modern",
    PROTOCOLS,
    "Settings every flag below defaults to (see the module docstring).",
)
flags.DEFINE_list(
    "optimizers",
    "adam,adamw,lamb",
    "Optimizers to compare: adam, adamw (BERT's AdamWeightDecay), lamb, lars, "
    "keras_adamw, keras_lamb (Keras' own), lamb16 (when the package has it).",
)
flags.DEFINE_list("models", "mlp,cnn,birnn,bigru,bilstm", "Models: mlp, cnn, birnn, bigru, bilstm.")
flags.DEFINE_list(
    "batch_sizes", "64,128,256,512,1024,2048,4096,8192,16384", "Batch sizes to train with."
)
flags.DEFINE_integer(
    "epochs", None, "Epochs per run (protocol default: modern 10, reference2019 100)."
)
flags.DEFINE_string(
    "learning_rate",
    None,
    "Learning rate at --base_batch_size: one value for all optimizers, and/or "
    "name=value pairs per optimizer, e.g. '0.001' or '0.001,lamb=0.01,lars=1.0'.",
)
flags.DEFINE_string(
    "weight_decay",
    None,
    "Weight-decay rate, as --learning_rate (one value and/or name=value); a "
    "single value applies to every optimizer but adam, which has none.",
)
flags.DEFINE_enum(
    "lr_scaling",
    None,
    ["none", "sqrt", "linear"],
    "How the learning rate grows with the batch size from --base_batch_size.",
)
flags.DEFINE_integer("base_batch_size", None, "Batch size the --learning_rate values belong to.")
flags.DEFINE_float("warmup_epochs", None, "Epochs of linear learning-rate warmup from 0.")
flags.DEFINE_float(
    "lr_decay_power",
    None,
    "Power of the polynomial decay to 0 over the run (1: linear, as BERT; 0: constant).",
)
flags.DEFINE_integer(
    "train_examples",
    None,
    "Train on the first N training images (protocol default: modern 60000, "
    "reference2019 55000); smaller values make quick runs.",
)
flags.DEFINE_integer("test_examples", None, "Evaluate on the first N test images (default 10000).")
flags.DEFINE_integer("seed", None, "Seed of initialization and data order (default 12345).")
flags.DEFINE_string("output_dir", "results/mnist", "Where results, plots and run logs go.")
flags.DEFINE_string(
    "data_dir", None, "tensorflow-datasets data directory (default: tfds' default)."
)
flags.DEFINE_string(
    "mnist_manual_dir",
    os.environ.get("MNIST_MANUAL_DIR"),
    "Directory with the four MNIST IDX .gz files, used instead of downloading "
    "(default: $MNIST_MANUAL_DIR).",
)
flags.DEFINE_integer(
    "trust_ratio_every",
    0,
    "Log per-layer weight norm, update norm and trust ratio every N steps (0: off).",
)
flags.DEFINE_string("tensorboard_dir", None, "Write the trust-ratio logs to TensorBoard here too.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = make_config(
            FLAGS.protocol,
            optimizers=FLAGS.optimizers,
            models=FLAGS.models,
            batch_sizes=FLAGS.batch_sizes,
            output_dir=FLAGS.output_dir,
            epochs=FLAGS.epochs,
            learning_rate=FLAGS.learning_rate,
            weight_decay=FLAGS.weight_decay,
            lr_scaling=FLAGS.lr_scaling,
            base_batch_size=FLAGS.base_batch_size,
            warmup_epochs=FLAGS.warmup_epochs,
            lr_decay_power=FLAGS.lr_decay_power,
            train_examples=FLAGS.train_examples,
            test_examples=FLAGS.test_examples,
            seed=FLAGS.seed,
            data_dir=FLAGS.data_dir,
            mnist_manual_dir=FLAGS.mnist_manual_dir,
            trust_ratio_every=FLAGS.trust_ratio_every,
            tensorboard_dir=FLAGS.tensorboard_dir,
            argument_prefix="--",
        )
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    run_sweep(config, verbose=2)


if __name__ == "__main__":
    app.run(main)
