"""`create_optimizer`: BERT's optimizer set-up for any optimizer of the package."""

import keras

from lamb import _checks
from lamb.optimizers.adam_weight_decay import AdamWeightDecay
from lamb.optimizers.lamb import LAMB
from lamb.optimizers.lamb16 import LAMB16
from lamb.optimizers.lars import LARS
from lamb.schedules import WarmupPolynomialDecay

BERT_EXCLUDE_FROM_WEIGHT_DECAY = ("LayerNorm", "layer_norm", "bias")


def _adamw(learning_rate, weight_decay, epsilon, exclude, **kwargs):
    return AdamWeightDecay(
        learning_rate,
        weight_decay=weight_decay,
        epsilon=epsilon,
        exclude_from_weight_decay=exclude,
        **kwargs,
    )


def _lamb(learning_rate, weight_decay, epsilon, exclude, **kwargs):
    return LAMB(
        learning_rate,
        weight_decay=weight_decay,
        epsilon=epsilon,
        exclude_from_weight_decay=exclude,
        **kwargs,
    )


def _lamb16(learning_rate, weight_decay, epsilon, exclude, **kwargs):
    return LAMB16(
        learning_rate,
        weight_decay=weight_decay,
        epsilon=epsilon,
        exclude_from_weight_decay=exclude,
        **kwargs,
    )


def _lars(learning_rate, weight_decay, epsilon, exclude, **kwargs):
    del epsilon  # LARS has no ε.
    return LARS(
        learning_rate,
        weight_decay=weight_decay,
        exclude_from_weight_decay=exclude,
        **kwargs,
    )


def _adam(learning_rate, weight_decay, epsilon, exclude, **kwargs):
    del weight_decay, exclude  # Plain Adam: no weight decay.
    for name in ("beta_1", "beta_2"):
        if name in kwargs:
            kwargs[name] = _checks.check_float(name, kwargs[name], 0.0, 1.0)
    return keras.optimizers.Adam(
        learning_rate, epsilon=_checks.check_float("epsilon", epsilon, low=0.0), **kwargs
    )


OPTIMIZER_TYPES = {
    "adamw": _adamw,
    "lamb": _lamb,
    "lamb16": _lamb16,
    "lars": _lars,
    "adam": _adam,
}


def create_optimizer(
    init_lr,
    num_train_steps,
    num_warmup_steps,
    optimizer_type="adamw",
    weight_decay=0.01,
    epsilon=1e-6,
    end_learning_rate=0.0,
    power=1.0,
    exclude_from_weight_decay=BERT_EXCLUDE_FROM_WEIGHT_DECAY,
    global_clipnorm=1.0,
    **optimizer_kwargs,
):
    """An optimizer set up as BERT's `create_optimizer` sets up AdamWeightDecay.

    Linear warmup to `init_lr` over `num_warmup_steps`, polynomial decay to
    `end_learning_rate` over `num_train_steps` (counted from step 0), weight
    decay 0.01 except on LayerNorm and bias variables, ε = 1e-6, and the
    gradients clipped to global norm 1.0.

    Args:
        init_lr: Peak learning rate.
        num_train_steps: Total optimizer steps (the decay length).
        num_warmup_steps: Linear-warmup steps.
        optimizer_type: One of `OPTIMIZER_TYPES`: `adamw` (BERT's
            AdamWeightDecay), `lamb`, `lamb16` (LAMB with 8-bit moments),
            `lars`, `adam` (Keras Adam, no decay).
        weight_decay: Weight-decay rate (ignored by `adam`).
        epsilon: ε of the Adam-type optimizers (ignored by `lars`).
        end_learning_rate: Rate at the end of the decay.
        power: Power of the polynomial decay.
        exclude_from_weight_decay: Regular expressions on `variable.path`.
        global_clipnorm: Global gradient-norm clipping, or `None`.
        **optimizer_kwargs: Further arguments of the chosen optimizer
            (`beta_1`, `momentum`, `gradient_accumulation_steps`, ...).

    Returns:
        A `keras.optimizers.Optimizer` with a `WarmupPolynomialDecay` schedule.
    """
    _checks.check_choice("optimizer_type", optimizer_type, OPTIMIZER_TYPES)
    if global_clipnorm is not None:
        _checks.check_float("global_clipnorm", global_clipnorm, low=0.0, low_inclusive=False)
    schedule = WarmupPolynomialDecay(
        initial_learning_rate=init_lr,
        decay_steps=num_train_steps,
        warmup_steps=num_warmup_steps,
        end_learning_rate=end_learning_rate,
        power=power,
    )
    return OPTIMIZER_TYPES[optimizer_type](
        schedule,
        weight_decay,
        epsilon,
        exclude_from_weight_decay,
        global_clipnorm=global_clipnorm,
        **optimizer_kwargs,
    )
