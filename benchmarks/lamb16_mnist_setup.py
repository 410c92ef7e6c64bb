"""The MNIST MLP set-up that `lamb16_mnist_accuracy.py` and
`lamb16_moment_error.py` share: the data, the optimizers by name, and the
learning rate (constant, or BERT's warmup over the first epoch and linear
decay to 0), with weight decay on all but the biases."""

import math

from lamb import schedules
from lamb.data import mnist as mnist_data
from lamb.optimizers.lamb import LAMB
from lamb.optimizers.lamb16 import LAMB16

OPTIMIZERS = {
    "lamb": LAMB,
    "lamb16": LAMB16,
    "lamb16_nearest": lambda **kwargs: LAMB16(moment_rounding="nearest", **kwargs),
    "lamb16_stochastic": lambda **kwargs: LAMB16(moment_rounding="stochastic", **kwargs),
    "lamb16_adaptive": lambda **kwargs: LAMB16(adaptive_trust=True, **kwargs),
}


def load_data(manual_dir):
    """((train images, labels), (test images, labels)), images scaled to [0, 1]."""
    splits = []
    for split in ("train", "test"):
        images, labels = mnist_data.load_mnist(split, manual_dir=manual_dir)
        splits.append((images.astype("float32") / 255.0, labels))
    return splits


def make_optimizer(name, learning_rate, weight_decay, decay, epochs, train_size, batch_size):
    """`OPTIMIZERS[name]` at `learning_rate` (with `decay`, the peak of BERT's
    schedule over `epochs`), with `weight_decay` except on biases."""
    if decay:
        steps_per_epoch = math.ceil(train_size / batch_size)
        learning_rate = schedules.WarmupPolynomialDecay(
            learning_rate, decay_steps=epochs * steps_per_epoch, warmup_steps=steps_per_epoch
        )
    return OPTIMIZERS[name](
        learning_rate=learning_rate, weight_decay=weight_decay, exclude_from_weight_decay=["bias"]
    )
