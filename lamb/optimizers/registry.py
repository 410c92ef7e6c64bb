"""The one table of optimizer names, used by the factory, the apps and the
benchmarks, with one way to build each from the same arguments."""

import difflib

import keras

from lamb import _checks
from lamb.optimizers.adam_weight_decay import AdamWeightDecay
from lamb.optimizers.lamb import LAMB
from lamb.optimizers.lamb16 import LAMB16
from lamb.optimizers.lars import LARS

OPTIMIZERS = {
    "adam": keras.optimizers.Adam,  # Keras's Adam: no weight decay
    "adamw": AdamWeightDecay,  # BERT's AdamWeightDecayOptimizer
    "lamb": LAMB,
    "lamb16": LAMB16,
    "lars": LARS,
    "keras_adamw": keras.optimizers.AdamW,
    "keras_lamb": keras.optimizers.Lamb,
}
WITHOUT_WEIGHT_DECAY = ("adam",)
WITHOUT_EPSILON = ("lars",)
# Keras's own optimizers exclude variables by substrings of their names
# (`Optimizer.exclude_from_weight_decay(var_names=...)`), not by regular
# expressions on their paths.
KERAS_BUILTINS = ("adam", "keras_adamw", "keras_lamb")


def check_name(name, argument="optimizer"):
    """`name` if it is in `OPTIMIZERS`, else `ValueError` listing them (and the
    closest, for a typo)."""
    if name in OPTIMIZERS:
        return name
    close = difflib.get_close_matches(str(name).lower(), OPTIMIZERS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"`{argument}` must be one of {sorted(OPTIMIZERS)}; received {argument}={name!r}.{hint}"
    )


def create(name, learning_rate, weight_decay=0.0, exclude_from_weight_decay=None, **options):
    """The optimizer `name` with a learning rate (or schedule), a weight
    decay, the variables to exclude from it, and further constructor keywords.

    Raises `ValueError` for a weight decay on an optimizer without one
    (instead of dropping it) and for an unknown name.
    """
    cls = OPTIMIZERS[check_name(name)]
    if name in KERAS_BUILTINS:  # Keras checks none of these.
        for key, low, high in (("beta_1", 0.0, 1.0), ("beta_2", 0.0, 1.0), ("epsilon", 0.0, None)):
            if key in options:
                options[key] = _checks.check_float(key, options[key], low, high)
    if name in WITHOUT_WEIGHT_DECAY:
        if weight_decay:
            raise ValueError(
                f"{name} has no weight decay (use adamw or keras_adamw); received "
                f"weight_decay={weight_decay}."
            )
        return cls(learning_rate, **options)
    if name in KERAS_BUILTINS:
        optimizer = cls(learning_rate, weight_decay=weight_decay, **options)
        if exclude_from_weight_decay:
            optimizer.exclude_from_weight_decay(var_names=list(exclude_from_weight_decay))
        return optimizer
    return cls(
        learning_rate,
        weight_decay=weight_decay,
        exclude_from_weight_decay=exclude_from_weight_decay,
        **options,
    )
