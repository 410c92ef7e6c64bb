"""The one table of optimizer names, used by the factory, the apps and the
benchmarks, with one way to build each from the same arguments."""

import keras

from lamb import _checks
from lamb.optimizers.adam_weight_decay import AdamWeightDecay
from lamb.optimizers.base import check_keras_keywords
from lamb.optimizers.lamb import LAMB
from lamb.optimizers.lamb16 import LAMB16
from lamb.optimizers.lars import LARS
from lamb.optimizers.rules import compile_rules

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

# Strings that `keras.optimizers.get` and `model.compile(optimizer=...)` take
# once `lamb` is imported, as Keras takes "adam" (saved files keep the
# registered names, "lamb>LAMB", ...). Added to Keras's global custom objects
# (`keras.saving.get_custom_objects()`, its public table for this) without
# replacing an entry already there. None is a string Keras resolves itself:
# "adamw" stays Keras's AdamW (BERT's is "adamweightdecay").
KERAS_ALIASES = {
    alias: cls
    for cls in (LAMB, LAMB16, LARS, AdamWeightDecay)
    for alias in (cls.__name__.lower(), cls.__name__)
}


def register_keras_aliases():
    """Adds `KERAS_ALIASES` to Keras's global custom objects (done on import)."""
    custom_objects = keras.saving.get_custom_objects()
    for alias, cls in KERAS_ALIASES.items():
        custom_objects.setdefault(alias, cls)


register_keras_aliases()


def check_name(name, argument="optimizer"):
    """`name` if it is in `OPTIMIZERS`, else `ValueError` listing them (and the
    closest, for a typo: `_checks.check_choice`)."""
    return _checks.check_choice(argument, name, OPTIMIZERS)


def create(name, learning_rate, weight_decay=0.0, exclude_from_weight_decay=None, **options):
    """The optimizer `name` with a learning rate (or schedule), a weight
    decay, the variables to exclude from it, and further constructor keywords.

    Raises `ValueError` for a weight decay on an optimizer without one
    (instead of dropping it), for an unknown name, and for the arguments
    that the package's optimizers refuse, also where Keras's own would take
    them.
    """
    cls = OPTIMIZERS[check_name(name)]
    if name in KERAS_BUILTINS:  # Keras checks none of these.
        weight_decay = _checks.check_float(
            "weight_decay", 0.0 if weight_decay is None else weight_decay, low=0.0
        )
        exclude_from_weight_decay = _keras_exclusions(exclude_from_weight_decay)
        learning_rate = _checks.check_learning_rate(learning_rate)
        for key, low, high, low_inclusive in (
            ("beta_1", 0.0, 1.0, True), ("beta_2", 0.0, 1.0, True), ("epsilon", 0.0, None, False),
        ):
            if options.get(key) is not None:
                options[key] = _checks.check_float(key, options[key], low, high, low_inclusive)
        check_keras_keywords(options)
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
            optimizer.exclude_from_weight_decay(var_names=exclude_from_weight_decay)
        return optimizer
    return cls(
        learning_rate,
        weight_decay=weight_decay,
        exclude_from_weight_decay=exclude_from_weight_decay,
        **options,
    )


def _keras_exclusions(exclude_from_weight_decay):
    """The exclusion list as the regular expressions Keras's own optimizers
    search in variable names, checked as the package's optimizers check it
    (a bare string is refused, not split into letters); they take no
    callables."""
    rules = compile_rules("exclude_from_weight_decay", exclude_from_weight_decay)
    if rules is None:
        return None
    if any(callable(rule) for rule in rules):
        raise ValueError(
            "Keras's own optimizers (adam, keras_adamw, keras_lamb) exclude variables "
            "by regular expressions only; received a callable in exclude_from_weight_decay="
            f"{exclude_from_weight_decay!r}."
        )
    return [rule.pattern for rule in rules]
