"""LAMB16: LAMB with its two moments stored as 8-bit floats.

Each moment of a large variable is kept as one byte per element plus a
float32 per-tensor scale: m as float8_e4m3fn (more precision), v as
float8_e5m2 (more range, as v holds squares). The bytes are the formats' bit
patterns in uint8 variables, encoded and decoded in `keras.ops`
(`lamb.optimizers.float8`), so the state saves and restores exactly in
`.keras`, `.weights.h5` and `tf.train.Checkpoint` files, on every backend
and under XLA.
"""

import math

import keras
from keras import ops

from lamb import _checks
from lamb.optimizers import base
from lamb.optimizers.float8 import (
    E4M3FN,
    E5M2,
    absmax,
    absmax_scale,
    dequantize,
    encode_scaled,
    quantize,
)
from lamb.optimizers.lamb import LAMB

MAX_ADAPTIVE_TRUST = 2.0


@keras.saving.register_keras_serializable(package="lamb")
class LAMB16(LAMB):
    """LAMB whose moments take 16 bits per parameter instead of 64.

    The update is LAMB's (see `lamb.LAMB`), computed in the variable's dtype
    from the float32 moments of this step; only what is kept for the next
    step is rounded. For every variable with at least `min_8bit_size`
    elements, m is stored as float8_e4m3fn and v as float8_e5m2, each with a
    float32 per-tensor absmax scale (`quantize`); positive v entries never
    round to 0. Smaller variables (biases, LayerNorm) keep LAMB's state.

    With `adaptive_trust=True`, each layer-adapted variable's trust ratio r
    becomes `min((r · reference_learning_rate / learning_rate)^s, 2)` with
    `s = trust_exponent`: the step norm `lr · trust · ‖u‖` then interpolates
    between Adam's (s = 0) and a learning-rate-independent
    `reference_learning_rate · φ(‖w‖)` (s = 1), capped at twice Adam's.
    This tempers atypically large or small learning rates. `layer_statistics()`
    still reports LAMB's ratio r.

    Args:
        min_8bit_size: Variables with fewer elements keep float moments.
        adaptive_trust: Whether to rescale the trust ratio by the learning
            rate as above (off by default: plain LAMB).
        reference_learning_rate: The learning rate at which, with
            `trust_exponent = 1`, the adaptive trust equals LAMB's ratio
            (below the cap), > 0.
        trust_exponent: The exponent s of the adaptive trust, ≥ 0.
        (other arguments as in `lamb.LAMB`)

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
        self.adaptive_trust = _checks.check_bool("adaptive_trust", adaptive_trust)
        self.reference_learning_rate = _checks.check_float(
            "reference_learning_rate", reference_learning_rate, low=0.0, low_inclusive=False
        )
        self.trust_exponent = _checks.check_float("trust_exponent", trust_exponent, low=0.0)

    def _build_moments(self, var_list):
        """m and v as codes with their scales for variables of at least
        `min_8bit_size` elements, else as float variables."""
        self._momentums, self._velocities, self._moment_scales = [], [], []
        for variable in var_list:
            if self._overwrite_variable_with_gradient(variable):
                momentum = velocity = scales = None
            elif math.prod(variable.shape) >= self.min_8bit_size:
                momentum = self._add_codes(variable, "momentum")
                velocity = self._add_codes(variable, "velocity")
                scales = self.add_variable(
                    shape=(2,),
                    dtype="float32",
                    name=variable.path.replace("/", "_") + "_moment_scales",
                )
            else:
                momentum = self.add_variable_from_reference(variable, "momentum")
                velocity = self.add_variable_from_reference(variable, "velocity")
                scales = None
            self._momentums.append(momentum)
            self._velocities.append(velocity)
            self._moment_scales.append(scales)

    def _add_codes(self, variable, name):
        return self.add_variable(
            shape=variable.shape,
            dtype="uint8",
            name=f"{variable.path.replace('/', '_')}_{name}",
            layout=getattr(variable, "_layout", None),
        )

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        gradient = base.dense_gradient(gradient, variable)
        if self._moment_scales[index] is not None and base.compiling_with_xla():
            self._recomputing_8bit_step(gradient, variable, learning_rate, index)
            return
        m, v = self._next_moments(*self._read_moments(index, dtype), gradient)
        self._write_moments(index, m, v)
        update, update_for_norm = self._lamb_directions(m, v, variable, index)
        self._apply_update(variable, index, learning_rate, update, update_for_norm)
        self._end_step(variable, index)

    def _apply_update(self, variable, index, learning_rate, update, update_for_norm):
        ratio = self._scaled_step(variable, index, update_for_norm, self._clip_weight_norm)
        if self.adaptive_trust and self._adapts_layer[index]:
            ratio = self._learning_rate_adaptive_trust(ratio, learning_rate)
        self.assign_sub(variable, learning_rate * ratio * update)

    def _recomputing_8bit_step(self, gradient, variable, learning_rate, index):
        """`update_step` for a variable with 8-bit moments, under XLA.

        Every consumer of the new moments (the update, its norm, the moments'
        absmax and their encoding) recomputes them from the stored codes and
        the gradient, each as its own power-of-two multiple of them (exact:
        the same values as the other path, barring overflow), so that XLA
        fuses each copy into its consumer instead of writing float32 moments
        to memory. All of them read the state before it is overwritten.
        """
        dtype = variable.dtype
        m, v = self._new_moments(index, gradient, dtype, 1.0)
        update = self._add_weight_decay(
            self._adam_direction(m, v, dtype), variable, index
        )
        m, v = self._new_moments(index, gradient, dtype, 2.0)
        update_for_norm = self._add_weight_decay(
            self._adam_direction(m, v, dtype, multiple=2.0), variable, index
        )
        m, v = self._new_moments(index, gradient, dtype, 4.0)
        m_scale = absmax_scale(absmax(m) * 0.25, E4M3FN)
        v_scale = absmax_scale(absmax(v) * (1.0 / 16.0), E5M2)
        m, v = self._new_moments(index, gradient, dtype, 8.0)
        self._apply_update(variable, index, learning_rate, update, update_for_norm)
        # Depending on the updated variable, the encoding comes after every
        # read of the old codes: XLA overwrites them in place, not a copy.
        after_update = base.zero_after(variable)
        self.assign(
            self._momentums[index],
            encode_scaled(m, (m_scale + after_update) * 8.0, E4M3FN),
        )
        self.assign(
            self._velocities[index],
            encode_scaled(v, (v_scale + after_update) * 64.0, E5M2, keep_nonzero=True),
        )
        self.assign(self._moment_scales[index], ops.stack([m_scale, v_scale]))
        self._end_step(variable, index, after_update)

    def _new_moments(self, index, gradient, dtype, multiple):
        """`multiple`·m and `multiple`²·v of this step, from the stored codes."""
        scales = self._after_previous_step(self._moment_scales[index], "float32", index)
        m = dequantize(self._momentums[index], scales[0] * multiple, E4M3FN, dtype)
        v = dequantize(self._velocities[index], scales[1] * multiple**2, E5M2, dtype)
        return self._next_moments(m, v, gradient, multiple)

    def _next_moments(self, m, v, gradient, multiple=1.0):
        """This step's m and v (or `multiple`·m and `multiple`²·v, from such
        multiples of the previous ones) and the gradient."""
        square = base.saturated_square(gradient)
        if multiple != 1.0:
            gradient, square = gradient * multiple, square * multiple**2
        m = m + (gradient - m) * (1.0 - self.beta_1)
        v = v + (square - v) * (1.0 - self.beta_2)
        return m, v

    def _read_moments(self, index, dtype):
        """m and v as `dtype` tensors."""
        m, v, scales = (
            self._momentums[index],
            self._velocities[index],
            self._moment_scales[index],
        )
        if scales is None:
            return m, v
        return (
            dequantize(m, scales[0], E4M3FN, dtype),
            dequantize(v, scales[1], E5M2, dtype),
        )

    def _write_moments(self, index, m, v):
        scales = self._moment_scales[index]
        if scales is None:
            self.assign(self._momentums[index], m)
            self.assign(self._velocities[index], v)
            return
        m_codes, m_scale = quantize(m, E4M3FN)
        v_codes, v_scale = quantize(v, E5M2, keep_nonzero=True)
        self.assign(self._momentums[index], m_codes)
        self.assign(self._velocities[index], v_codes)
        self.assign(scales, ops.stack([m_scale, v_scale]))

    def _learning_rate_adaptive_trust(self, ratio, learning_rate):
        """`min((ratio · reference_learning_rate / learning_rate)^s, 2)`."""
        scaled = ratio * (self.reference_learning_rate / learning_rate)
        return ops.minimum(ops.power(scaled, self.trust_exponent), MAX_ADAPTIVE_TRUST)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "min_8bit_size": self.min_8bit_size,
                "adaptive_trust": self.adaptive_trust,
                "reference_learning_rate": self.reference_learning_rate,
                "trust_exponent": self.trust_exponent,
            }
        )
        return config
