"""lamb: large-batch optimizers for Keras 3 (TensorFlow, JAX)."""

from lamb import schedules
from lamb.factory import OPTIMIZER_TYPES, create_optimizer
from lamb.optimizers.adam_weight_decay import AdamWeightDecay
from lamb.optimizers.lamb import LAMB
from lamb.optimizers.lamb16 import LAMB16
from lamb.optimizers.lars import LARS
from lamb.training import AccumulatingModel, GradientAccumulation

__version__ = "0.1.0"

__all__ = [
    "LAMB",
    "LAMB16",
    "AdamWeightDecay",
    "LARS",
    "AccumulatingModel",
    "GradientAccumulation",
    "OPTIMIZER_TYPES",
    "create_optimizer",
    "schedules",
]
