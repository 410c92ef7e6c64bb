"""The original optimizers' names, with the originals' defaults, as Keras 3 optimizers.

Each name gives the results of the TensorFlow 1 code it is named after, with
that code's argument names and defaults (exclusion lists are regular
expressions searched in Keras 3's `variable.path`, as the originals searched
TF1 variable names):

- `AdamWeightDecayOptimizer`: google-research/bert's `optimization.py`: Adam
  without bias correction, λ·w added to the update, `weight_decay_rate=0.0`.
- `LAMBOptimizer`: the 2019 TensorFlow LAMB (ymcui/LAMB_Optimizer_TF
  `optimization.py`, arXiv:1904.00962 v3): BERT's AdamWeightDecay times the
  trust ratio ‖w‖/‖u‖, `weight_decay_rate=0.01`, no bias correction, and the
  trust ratio on every variable (also those excluded from weight decay).
- `LARSOptimizer`: google-research/simclr's `lars_optimizer.py` (classic
  momentum): trust ratio eeta·‖w‖/‖g + λw‖, `weight_decay=0.0`, and
  `exclude_from_layer_adaptation` falling back to the weight-decay list when
  empty or None. `trust_ratio_formula="separate"` gives
  `tf.contrib.opt.LARSOptimizer`'s eeta·‖w‖/(‖g‖ + λ‖w‖ + ε) (see `lamb.LARS`).
- `LAMB16Optimizer`: `LAMBOptimizer` with 8-bit-float moments (this
  package's own; the same defaults, so the name is the only change).
- `create_optimizer`: `lamb.create_optimizer`, BERT's recipe (linear warmup
  and decay, weight decay 0.01 except LayerNorm and bias, ε = 1e-6, global
  clipping to 1.0) for any optimizer. Unlike BERT's, which takes the loss and
  returns a TF1 train op, it takes `(init_lr, num_train_steps,
  num_warmup_steps, optimizer_type="adamw", ...)` and returns an optimizer.

Further keywords go to the `lamb` optimizer (`clipnorm`, `global_clipnorm`,
`skip_nonfinite_gradients`, ...).
"""

from lamb import LAMB, LAMB16, LARS, AdamWeightDecay, create_optimizer

__all__ = [
    "create_optimizer",
    "AdamWeightDecayOptimizer",
    "LAMBOptimizer",
    "LAMB16Optimizer",
    "LARSOptimizer",
]


def AdamWeightDecayOptimizer(
    learning_rate,
    weight_decay_rate=0.0,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-6,
    exclude_from_weight_decay=None,
    name="AdamWeightDecayOptimizer",
    **kwargs,
):
    """BERT's AdamWeightDecayOptimizer, with its defaults: a `lamb.AdamWeightDecay`."""
    return AdamWeightDecay(
        learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        weight_decay=weight_decay_rate,
        exclude_from_weight_decay=exclude_from_weight_decay,
        name=name,
        **kwargs,
    )


def LAMBOptimizer(
    learning_rate,
    weight_decay_rate=0.01,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-6,
    exclude_from_weight_decay=None,
    exclude_from_layer_adaptation=(),
    bias_correction=False,
    name="LAMBOptimizer",
    **kwargs,
):
    """The 2019 TensorFlow LAMB (ymcui/LAMB_Optimizer_TF), with its defaults: a `lamb.LAMB`.

    `exclude_from_layer_adaptation` and `bias_correction` are this package's
    (the original has neither: every variable gets the trust ratio, and the
    moments are not bias-corrected); their defaults keep the original's math.
    """
    return LAMB(
        learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        weight_decay=weight_decay_rate,
        exclude_from_weight_decay=exclude_from_weight_decay,
        exclude_from_layer_adaptation=list(exclude_from_layer_adaptation or ()),
        bias_correction=bias_correction,
        name=name,
        **kwargs,
    )


def LAMB16Optimizer(
    learning_rate,
    weight_decay_rate=0.01,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-6,
    exclude_from_weight_decay=None,
    exclude_from_layer_adaptation=(),
    bias_correction=False,
    name="LAMB16Optimizer",
    **kwargs,
):
    """`LAMBOptimizer` with 8-bit-float moments: a `lamb.LAMB16`, the same defaults."""
    return LAMB16(
        learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        weight_decay=weight_decay_rate,
        exclude_from_weight_decay=exclude_from_weight_decay,
        exclude_from_layer_adaptation=list(exclude_from_layer_adaptation or ()),
        bias_correction=bias_correction,
        name=name,
        **kwargs,
    )


def LARSOptimizer(
    learning_rate,
    momentum=0.9,
    use_nesterov=False,
    weight_decay=0.0,
    exclude_from_weight_decay=None,
    exclude_from_layer_adaptation=None,
    classic_momentum=True,
    eeta=0.001,
    name="LARSOptimizer",
    **kwargs,
):
    """SimCLR's LARSOptimizer, with its defaults: a `lamb.LARS`.

    As in SimCLR, an empty or None `exclude_from_layer_adaptation` means the
    weight-decay list. Only classic momentum (SimCLR's default) is offered:
    `classic_momentum=False` raises `ValueError`.
    """
    if classic_momentum is not True:
        raise ValueError(
            "`classic_momentum` must be True (lamb.LARS has classic momentum only); "
            f"received classic_momentum={classic_momentum!r}."
        )
    return LARS(
        learning_rate,
        momentum=momentum,
        nesterov=use_nesterov,
        weight_decay=weight_decay,
        eeta=eeta,
        exclude_from_weight_decay=exclude_from_weight_decay,
        exclude_from_layer_adaptation=exclude_from_layer_adaptation or None,
        name=name,
        **kwargs,
    )
