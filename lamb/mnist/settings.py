"""A sweep's settings: `SETTINGS` is the one list of them, each with its name,
default and help. `config.make_config` takes them by name and
`lamb.mnist_compare` defines a flag for each.
"""

import dataclasses

from lamb import schedules
from lamb.mnist.protocols import PROTOCOLS
from lamb.models import mnist as mnist_models

LR_SCALING_RULES = ("none",) + schedules.SCALING_RULES


@dataclasses.dataclass(frozen=True)
class Setting:
    """A setting of a sweep: an argument of `make_config`, and the flag of
    `lamb.mnist_compare` of the same name."""

    name: str
    default: object  # `None` for most: the protocol's value (see `make_config`).
    help: str  # The flag's help.
    kind: str = "string"  # The flag's kind, as in absl's DEFINE_<kind>: enum, list, ...
    choices: tuple = ()  # An enum's values.
    environ: str = None  # The flag defaults to this environment variable instead.


SETTINGS = {
    setting.name: setting
    for setting in (
        Setting(
            "protocol",
            "modern",
            "Settings every flag below defaults to (see the module docstring).",
            "enum",
            PROTOCOLS,
        ),
        Setting(
            "optimizers",
            ("adam", "adamw", "lamb"),
            "Optimizers to compare: adam, adamw (BERT's AdamWeightDecay), lamb, lars, "
            "keras_adamw, keras_lamb (Keras' own), lamb16 (when the package has it).",
            "list",
        ),
        Setting("models", mnist_models.MODELS, "Models: mlp, cnn, birnn, bigru, bilstm.", "list"),
        Setting(
            "batch_sizes",
            (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
            "Batch sizes to train with.",
            "list",
        ),
        Setting(
            "epochs",
            None,
            "Epochs per run: one value for all models and/or model=value pairs, e.g. '10' or "
            "'10,cnn=3,bigru=3' (protocol default: modern 10, reference2019 100).",
        ),
        Setting(
            "learning_rate",
            None,
            "Learning rate at --base_batch_size: one value for all optimizers, and/or "
            "name=value pairs per optimizer, e.g. '0.001' or '0.001,lamb=0.01,lars=1.0'.",
        ),
        Setting(
            "weight_decay",
            None,
            "Weight-decay rate, as --learning_rate (one value and/or name=value); a "
            "single value applies to every optimizer but adam, which has none.",
        ),
        Setting(
            "lr_scaling",
            None,
            "How the learning rate grows with the batch size from --base_batch_size.",
            "enum",
            LR_SCALING_RULES,
        ),
        Setting(
            "base_batch_size", None, "Batch size the --learning_rate values belong to.", "integer"
        ),
        Setting("warmup_epochs", None, "Epochs of linear learning-rate warmup from 0.", "float"),
        Setting(
            "lr_decay_power",
            None,
            "Power of the polynomial decay to 0 over the run (1: linear, as BERT; 0: constant).",
            "float",
        ),
        Setting(
            "exclude_from_weight_decay",
            None,
            "Regular expressions (comma-separated, re.search on variable.path) of the variables "
            "that get no weight decay, or 'none' (protocol default: modern 'bias', "
            "reference2019 none).",
        ),
        Setting(
            "optimizer_options",
            None,
            "More constructor arguments of the optimizers, as optimizer.argument=value pairs, "
            "e.g. 'lamb.bias_correction=true,lamb.exclude_from_layer_adaptation=bias'. Values: "
            "true, false, numbers, none, [] (an empty list), or for exclude_* arguments one "
            "regular expression (join several with |). They add to the protocol's "
            "(reference2019: adam.epsilon=1e-08, lamb.bias_correction=false).",
        ),
        Setting(
            "train_examples",
            None,
            "Train on the first N training images (protocol default: modern 60000, "
            "reference2019 55000); smaller values make quick runs.",
            "integer",
        ),
        Setting(
            "test_examples", None, "Evaluate on the first N test images (default 10000).", "integer"
        ),
        Setting("seed", None, "Seed of initialization and data order (default 12345).", "integer"),
        Setting("output_dir", "results/mnist", "Where results, plots and run logs go."),
        Setting("data_dir", None, "tensorflow-datasets data directory (default: tfds' default)."),
        Setting(
            "mnist_manual_dir",
            None,
            "Directory with the four MNIST IDX .gz files, used instead of downloading "
            "(default: $MNIST_MANUAL_DIR).",
            environ="MNIST_MANUAL_DIR",
        ),
        Setting(
            "trust_ratio_every",
            0,
            "Log per-layer weight norm, update norm and trust ratio every N steps (0: off).",
            "integer",
        ),
        Setting(
            "tensorboard_dir",
            None,
            "Write TensorBoard logs here, a folder per run: loss and accuracy per epoch "
            "(train/, validation/) and, with --trust_ratio_every, the trust-ratio logs.",
        ),
    )
}
