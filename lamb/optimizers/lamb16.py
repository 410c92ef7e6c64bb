"""LAMB16: LAMB with its two moments stored as 8-bit floats.

Each moment of a large variable is kept as one byte per element plus a
float32 per-tensor scale: m as float8_e4m3fn (more precision), v as
float8_e5m2 (more range, as v holds squares). The bytes are the formats' bit
patterns in uint8 variables, encoded and decoded here in `keras.ops`
(TensorFlow cannot bitcast to float8, and HDF5 has no float8 type), so the
state saves and restores exactly in `.keras`, `.weights.h5` and
`tf.train.Checkpoint` files, on every backend and under XLA.
"""

import math

import keras
from keras import ops

from lamb.optimizers import base
from lamb.optimizers.lamb import LAMB

# The smallest normal float32: the scale's floor, so that 1/scale is finite.
_FLOAT32_TINY = 2.0**-126
_ABSMAX_HALVINGS = 10
MAX_ADAPTIVE_TRUST = 2.0


class Float8Format:
    """An 8-bit float format: sign, exponent and mantissa bits as in IEEE 754.

    `encode` rounds float32 values in [-max_value, max_value] to the nearest
    representable value (ties to even) and returns its bit pattern as uint8
    (never an infinity or NaN); `decode` maps bit patterns back to float32
    exactly.

    Args:
        name: The format's `ml_dtypes` name.
        mantissa_bits: Explicit mantissa bits.
        exponent_bias: Exponent bias.
        max_value: Largest finite value.
    """

    def __init__(self, name, mantissa_bits, exponent_bias, max_value):
        self.name = name
        self.mantissa_bits = mantissa_bits
        self.max_value = max_value
        self.smallest_normal = 2.0 ** (1 - exponent_bias)
        self.smallest_subnormal = 2.0 ** (1 - exponent_bias - mantissa_bits)
        self._shift = 23 - mantissa_bits  # float32 mantissa bits dropped
        self._exponent_offset = (127 - exponent_bias) << mantissa_bits

    def encode(self, x):
        magnitude = ops.abs(x)
        bits = ops.view(magnitude, "int32")
        # Normal range: round the float32 bit pattern half-to-even at the
        # format's last mantissa bit, then rebias the exponent.
        lowest_kept_bit = ops.bitwise_and(ops.right_shift(bits, self._shift), 1)
        rounded = bits + ((1 << (self._shift - 1)) - 1) + lowest_kept_bit
        normal = ops.right_shift(rounded, self._shift) - self._exponent_offset
        # Subnormal range: the code is the multiple of the smallest subnormal.
        subnormal = ops.cast(ops.round(magnitude / self.smallest_subnormal), "int32")
        code = ops.where(magnitude < self.smallest_normal, subnormal, normal)
        sign = ops.where(ops.view(x, "int32") < 0, 128, 0)  # also -0.0
        return ops.cast(code + sign, "uint8")

    def decode(self, codes):
        codes = ops.cast(codes, "int32")
        magnitude_code = ops.bitwise_and(codes, 127)
        normal = ops.view(
            ops.left_shift(magnitude_code + self._exponent_offset, self._shift),
            "float32",
        )
        subnormal = ops.cast(magnitude_code, "float32") * self.smallest_subnormal
        magnitude = ops.where(
            magnitude_code < (1 << self.mantissa_bits), subnormal, normal
        )
        return ops.where(codes >= 128, -magnitude, magnitude)


E4M3FN = Float8Format("float8_e4m3fn", mantissa_bits=3, exponent_bias=7, max_value=448.0)
E5M2 = Float8Format("float8_e5m2", mantissa_bits=2, exponent_bias=15, max_value=57344.0)


def absmax(x):
    """max|x|, exactly: elementwise maxima of halves, then a short reduction.

    XLA on CPU runs a full reduction several times below memory speed; the
    halvings fuse into one elementwise pass that leaves 1/1024 of the
    elements to reduce.
    """
    magnitude = ops.reshape(ops.abs(x), (-1,))
    size = magnitude.shape[0]
    halvings = min(_ABSMAX_HALVINGS, size.bit_length() - 1)
    halved_size = size - size % 2**halvings
    halved = magnitude[:halved_size]
    for _ in range(halvings):
        half = halved.shape[0] // 2
        halved = ops.maximum(halved[:half], halved[half:])
    result = ops.max(halved)
    if halved_size < size:
        result = ops.maximum(result, ops.max(magnitude[halved_size:]))
    return result


def quantize(x, float8_format, keep_positive=False):
    """`(codes, scale)` with `x ≈ float8_format.decode(codes) * scale`.

    The scale maps max|x| onto the format's largest value (absmax scaling),
    floored at the smallest normal float32 so that an all-zero `x` gets zero
    codes instead of a division by zero. Values are clipped to the format's
    range before rounding (float8 casts do not saturate).

    Args:
        x: A tensor.
        float8_format: `E4M3FN` or `E5M2`.
        keep_positive: Round positive values below the smallest subnormal up
            to it instead of to 0 (for the second moment: a zero there would
            make the next step's 1/√v explode).

    Returns:
        uint8 codes of `x`'s shape and a float32 scalar scale.
    """
    x = ops.cast(x, "float32")
    max_value = float8_format.max_value
    scale = ops.maximum(absmax(x) * (1.0 / max_value), _FLOAT32_TINY)
    normalized = ops.clip(x * (1.0 / scale), -max_value, max_value)
    if keep_positive:
        normalized = ops.where(
            normalized > 0.0,
            ops.maximum(normalized, float8_format.smallest_subnormal),
            normalized,
        )
    return float8_format.encode(normalized), scale


def dequantize(codes, scale, float8_format, dtype="float32"):
    """`float8_format.decode(codes) * scale` as `dtype`."""
    return ops.cast(float8_format.decode(codes) * scale, dtype)


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
        self.min_8bit_size = int(base.check_range("min_8bit_size", min_8bit_size, low=1))
        self.adaptive_trust = bool(adaptive_trust)
        self.reference_learning_rate = float(
            base.check_range(
                "reference_learning_rate", reference_learning_rate, low=0.0, low_inclusive=False
            )
        )
        self.trust_exponent = float(base.check_range("trust_exponent", trust_exponent, low=0.0))

    def build(self, var_list):
        if self.built:
            return
        # The trust-ratio bookkeeping of LayerAdaptiveOptimizer, without
        # LAMB.build's float moments: they are created here.
        super(LAMB, self).build(var_list)
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
        m, v = self._read_moments(index, dtype)

        m = m + (gradient - m) * (1.0 - self.beta_1)
        v = v + (ops.square(gradient) - v) * (1.0 - self.beta_2)
        self._write_moments(index, m, v)
        update, update_for_norm = self._lamb_directions(m, v, variable, index)
        ratio = self._scaled_step(variable, index, update_for_norm, self._clip_weight_norm)
        if self.adaptive_trust and self._adapts_layer[index]:
            ratio = self._learning_rate_adaptive_trust(ratio, learning_rate)
        self.assign_sub(variable, learning_rate * ratio * update)

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
        v_codes, v_scale = quantize(v, E5M2, keep_positive=True)
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
