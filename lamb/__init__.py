"""lamb: large-batch optimizers for Keras 3 (TensorFlow, JAX)."""

from lamb import _startup

_startup.before_tensorflow()  # Only in the apps' processes: see `lamb._startup`.

from lamb import schedules  # noqa: E402
from lamb._version import __version__  # noqa: E402
from lamb.factory import DECAY_SCHEDULES, OPTIMIZER_TYPES, create_optimizer  # noqa: E402
from lamb.optimizers.adam_weight_decay import AdamWeightDecay  # noqa: E402
from lamb.optimizers.lamb import LAMB  # noqa: E402
from lamb.optimizers.lamb16 import LAMB16  # noqa: E402
from lamb.optimizers.lars import LARS  # noqa: E402
from lamb.optimizers.registry import KERAS_ALIASES  # noqa: E402
from lamb.optimizers.rules import bert_layer_index, fewer_than_2_dimensions  # noqa: E402
from lamb.training import AccumulatingModel, GradientAccumulation  # noqa: E402

__all__ = [
    "LAMB",
    "LAMB16",
    "AdamWeightDecay",
    "LARS",
    "AccumulatingModel",
    "GradientAccumulation",
    "DECAY_SCHEDULES",
    "KERAS_ALIASES",
    "OPTIMIZER_TYPES",
    "bert_layer_index",
    "create_optimizer",
    "fewer_than_2_dimensions",
    "schedules",
    "__version__",
]
