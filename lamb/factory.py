"""`create_optimizer`: BERT's optimizer set-up for any optimizer of the package."""

from lamb import _checks
from lamb.optimizers import registry
from lamb.schedules import WarmupCosineDecay, WarmupPolynomialDecay

BERT_EXCLUDE_FROM_WEIGHT_DECAY = ("LayerNorm", "layer_norm", "bias")
OPTIMIZER_TYPES = tuple(registry.OPTIMIZERS)
DECAY_SCHEDULES = ("polynomial", "cosine")


def create_optimizer(
    init_lr,
    num_train_steps,
    num_warmup_steps,
    optimizer_type="adamw",
    weight_decay=None,
    epsilon=1e-6,
    end_learning_rate=0.0,
    power=1.0,
    exclude_from_weight_decay=BERT_EXCLUDE_FROM_WEIGHT_DECAY,
    global_clipnorm=1.0,
    decay_schedule="polynomial",
    alpha=0.0,
    warmup_power=1.0,
    decay_after_warmup=False,
    start_warmup_step=0,
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
            `lars`, `adam` (Keras Adam, no decay), `keras_adamw`,
            `keras_lamb` (Keras's own).
        weight_decay: Weight-decay rate; `None`: BERT's 0.01, and none for
            `adam` (which refuses any other).
        epsilon: ε of the Adam-type optimizers (ignored by `lars`).
        end_learning_rate: Rate at the end of the polynomial decay.
        power: Power of the polynomial decay.
        exclude_from_weight_decay: Regular expressions on `variable.path`.
        global_clipnorm: Global gradient-norm clipping, or `None`.
        decay_schedule: `"polynomial"` (BERT's, `WarmupPolynomialDecay`) or
            `"cosine"` (`WarmupCosineDecay`, to `alpha · init_lr`).
        alpha: The cosine decay's floor, a fraction of `init_lr` in [0, 1].
        warmup_power: The warmup's power (1: linear).
        decay_after_warmup: Whether the decay is counted from the warmup's
            end (HuggingFace) instead of from step 0 (BERT).
        start_warmup_step: The step at which the schedule starts (MLPerf
            BERT). The three as in `lamb.schedules.WarmupPolynomialDecay`.
        **optimizer_kwargs: Further arguments of the chosen optimizer
            (`beta_1`, `momentum`, `gradient_accumulation_steps`, ...).

    Returns:
        A `keras.optimizers.Optimizer` with a `WarmupPolynomialDecay` or
        `WarmupCosineDecay` schedule.
    """
    registry.check_name(optimizer_type, "optimizer_type")
    _checks.check_float("init_lr", init_lr, low=0.0)
    _checks.check_int("num_train_steps", num_train_steps, low=1)
    _checks.check_int("num_warmup_steps", num_warmup_steps, low=0, high=num_train_steps)
    if weight_decay is None:
        weight_decay = 0.0 if optimizer_type in registry.WITHOUT_WEIGHT_DECAY else 0.01
    if optimizer_type not in registry.WITHOUT_EPSILON:
        optimizer_kwargs["epsilon"] = epsilon
    if global_clipnorm is not None:
        _checks.check_float("global_clipnorm", global_clipnorm, low=0.0, low_inclusive=False)
    _checks.check_choice("decay_schedule", decay_schedule, DECAY_SCHEDULES)
    options = dict(
        initial_learning_rate=init_lr,
        decay_steps=num_train_steps,
        warmup_steps=num_warmup_steps,
        warmup_power=warmup_power,
        decay_after_warmup=decay_after_warmup,
        start_warmup_step=start_warmup_step,
    )
    if decay_schedule == "cosine":
        if end_learning_rate or power != 1.0:
            raise ValueError(
                "`end_learning_rate` and `power` belong to the polynomial decay; the "
                "cosine decay's floor is `alpha` (a fraction of init_lr); received "
                f"end_learning_rate={end_learning_rate!r}, power={power!r}."
            )
        schedule = WarmupCosineDecay(alpha=alpha, **options)
    else:
        if alpha:
            raise ValueError(
                "`alpha` is the cosine decay's floor (decay_schedule='cosine'); the "
                f"polynomial decay ends at end_learning_rate; received alpha={alpha!r}."
            )
        schedule = WarmupPolynomialDecay(end_learning_rate=end_learning_rate, power=power, **options)
    return registry.create(
        optimizer_type,
        schedule,
        weight_decay,
        exclude_from_weight_decay,
        global_clipnorm=global_clipnorm,
        **optimizer_kwargs,
    )
