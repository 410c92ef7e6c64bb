"""LAMB16: LAMB with its two moments stored as 8-bit floats.

Each moment of a large variable is kept as one byte per element plus a
float32 absmax scale per row or per tensor: m as float8_e4m3fn (more
precision), v as float8_e5m2 (more range, as v holds squares). The bytes
are the formats' bit patterns in uint8 variables, encoded and decoded in
`keras.ops` (`lamb.optimizers.float8`), so the state saves and restores exactly in
`.keras`, `.weights.h5` and `tf.train.Checkpoint` files, on every backend
and under XLA.
"""

import keras
from keras import ops

from lamb import _checks
from lamb.optimizers import moments
from lamb.optimizers.lamb import LAMB

MAX_ADAPTIVE_TRUST = 2.0


@keras.saving.register_keras_serializable(package="lamb")
class LAMB16(LAMB):
    """LAMB whose moments take 16 bits per parameter instead of 64.

    The update is LAMB's (see `lamb.LAMB`), computed in the variable's dtype
    from the float32 moments of this step; only what is kept for the next
    step is rounded. For every variable with at least `min_8bit_size`
    elements, m is stored as float8_e4m3fn and v as float8_e5m2, each with a
    float32 absmax scale per row (`row_scales`) or per tensor
    (`moments.Float8Moments`); positive v entries never round to 0. Smaller
    variables (biases, LayerNorm) keep LAMB's state. A row's scale follows
    its own largest moment, so rows of rare tokens in an embedding keep
    their small moments instead of rounding them to 0 under the scale of the
    frequent rows. A row is the variable's last axes, as few as hold at
    least 128 elements (`float8.Scaling`), so the scales add at most 1/16
    byte per parameter to the codes' 2. v's codes round to nearest, or
    stochastically (`moment_rounding`) so that v follows changes smaller
    than half a code's spacing instead of staying at its code.

    With `adaptive_trust=True`, each layer-adapted variable's trust ratio r
    becomes `min((r · reference_learning_rate / learning_rate)^s, 2)` with
    `s = trust_exponent`: the step norm `lr · trust · ‖u‖` then interpolates
    between Adam's (s = 0) and a learning-rate-independent
    `reference_learning_rate · φ(‖w‖)` (s = 1), capped at twice Adam's.
    This tempers atypically large or small learning rates. `layer_statistics()`
    still reports LAMB's ratio r. The other arguments are `lamb.LAMB`'s.

    Args:
        min_8bit_size: Variables with fewer elements keep float moments.
        row_scales: Whether the 8-bit moments have a scale per row (else
            one per variable).
        moment_rounding: How v's codes round: "nearest" (ties to even: a
            code that a step moves by less than half its spacing stays) or
            "stochastic" (unbiased, its random bits a hash of the step, the
            element and the variable: deterministic, no state).
        adaptive_trust: Whether to rescale the trust ratio by the learning
            rate as above (off by default: plain LAMB).
        reference_learning_rate: The learning rate at which, with
            `trust_exponent = 1`, the adaptive trust equals LAMB's ratio
            (below the cap), > 0.
        trust_exponent: The exponent s of the adaptive trust, ≥ 0.

    References:
        - [You et al., 2019](https://arxiv.org/abs/1904.00962) (LAMB)
        - [Shan, LAMB16](https://github.com/vxst/LAMB16) (float8 moments,
          adaptive trust)
        - [Li et al., 2023](https://arxiv.org/abs/2309.01507) (the
          zero-point problem of low-bit second moments)
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        weight_decay=0.0,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
        bias_correction=True,
        weight_norm_bounds=None,
        min_8bit_size=4096,
        row_scales=True,
        moment_rounding="nearest",
        adaptive_trust=False,
        reference_learning_rate=1e-3,
        trust_exponent=0.382,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            weight_decay=weight_decay,
            exclude_from_weight_decay=exclude_from_weight_decay,
            exclude_from_layer_adaptation=exclude_from_layer_adaptation,
            bias_correction=bias_correction,
            weight_norm_bounds=weight_norm_bounds,
            **kwargs,
        )
        self.min_8bit_size = _checks.check_int("min_8bit_size", min_8bit_size, low=1)
        self.row_scales = _checks.check_bool("row_scales", row_scales)
        self.moment_rounding = _checks.check_choice(
            "moment_rounding", moment_rounding, moments.ROUNDINGS
        )
        self.adaptive_trust = _checks.check_bool("adaptive_trust", adaptive_trust)
        self.reference_learning_rate = _checks.check_float(
            "reference_learning_rate", reference_learning_rate, low=0.0, low_inclusive=False
        )
        self.trust_exponent = _checks.check_float("trust_exponent", trust_exponent, low=0.0)

    def _build_moments(self, var_list):
        return moments.Float8Moments(
            self, var_list, self.beta_1, self.beta_2, self.min_8bit_size, self.row_scales,
            v_rounding=self.moment_rounding,
        )

    def _ratio(self, variable, index, update, norm, learning_rate):
        ratio = super()._ratio(variable, index, update, norm, learning_rate)
        if self.adaptive_trust and self._adapts_layer[index]:
            ratio = self._learning_rate_adaptive_trust(
                ratio, ops.cast(learning_rate, variable.dtype)
            )
        return ratio

    def _learning_rate_adaptive_trust(self, ratio, learning_rate):
        """`min((ratio · reference_learning_rate / learning_rate)^s, 2)`."""
        scaled = ratio * (self.reference_learning_rate / learning_rate)
        return ops.minimum(ops.power(scaled, self.trust_exponent), MAX_ADAPTIVE_TRUST)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "min_8bit_size": self.min_8bit_size,
                "row_scales": self.row_scales,
                "moment_rounding": self.moment_rounding,
                "adaptive_trust": self.adaptive_trust,
                "reference_learning_rate": self.reference_learning_rate,
                "trust_exponent": self.trust_exponent,
            }
        )
        return config
