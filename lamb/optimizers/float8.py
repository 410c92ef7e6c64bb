"""The float8 codec of LAMB16's moments, in `keras.ops`.

Codes are the formats' bit patterns (float8_e4m3fn, float8_e5m2) in uint8
tensors, encoded and decoded with integer and float32 arithmetic, since
TensorFlow cannot bitcast to float8 and HDF5 has no float8 type. Scaling is
absmax: one float32 scale per tensor, or per row (`Scaling`).
"""

import math

from keras import ops

# The smallest normal float32: the scale's floor, so that 1/scale is finite.
_FLOAT32_TINY = 2.0**-126
_ABSMAX_HALVINGS = 10
# A row of row-wise scaling holds at least this many elements, so that its
# float32 scale adds at most 1/32 byte per element to the code's one.
MIN_ROW_SIZE = 128


class Float8Format:
    """An 8-bit float format: sign, exponent and mantissa bits as in IEEE 754.

    `encode` rounds float32 values to the nearest representable value (ties
    to even), saturating at ±max_value, and returns its bit pattern as uint8
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
        # Rounding half to even at the last kept bit, then rebiasing the
        # exponent, in one addition to the float32 bit pattern.
        self._normal_rounding = ((1 << (self._shift - 1)) - 1) - ((127 - exponent_bias) << 23)
        # Adding 2^k whose ulp is the smallest subnormal rounds a magnitude
        # below smallest_normal to a multiple of it (float addition rounds
        # half to even), which lands in the low bits of 2^k.
        self._subnormal_rounder = 2.0 ** (23 - exponent_bias - mantissa_bits + 1)
        self._subnormal_rounder_bits = (127 + 23 - exponent_bias - mantissa_bits + 1) << 23
        self._exponent_offset = (127 - exponent_bias) << mantissa_bits

    def encode(self, x, keep_nonzero=False):
        """The codes of `x`; with `keep_nonzero`, nonzero values below the
        smallest subnormal round to it (keeping their sign) instead of to 0."""
        magnitude = ops.minimum(ops.abs(x), self.max_value)
        bits = ops.view(magnitude, "int32")
        lowest_kept_bit = ops.bitwise_and(ops.right_shift(bits, self._shift), 1)
        normal = ops.right_shift(bits + self._normal_rounding + lowest_kept_bit, self._shift)
        subnormal = (
            ops.view(magnitude + self._subnormal_rounder, "int32")
            - self._subnormal_rounder_bits
        )
        if keep_nonzero:  # bits > 0 exactly where magnitude > 0
            subnormal = ops.maximum(subnormal, ops.minimum(bits, 1))
        code = ops.where(magnitude < self.smallest_normal, subnormal, normal)
        sign = ops.bitwise_and(ops.right_shift(ops.view(x, "int32"), 24), 128)  # also -0.0
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


class Scaling:
    """Which elements of a tensor of `shape` share a scale: all (`per_row`
    false), or each row, the tensor's last axes, as few as hold at least
    `MIN_ROW_SIZE` elements: (30522, 128) has a scale per 128-element row,
    (768, 12, 64) one per (12, 64) slice. A tensor with fewer elements than
    that is one row.

    The codes keep the tensor's shape; the scales have `shape`, the leading
    axes (`()` for one scale).
    """

    def __init__(self, tensor_shape, per_row):
        tensor_shape = tuple(tensor_shape)
        leading = 0
        if per_row:
            leading = next(
                (k for k in range(len(tensor_shape) - 1, -1, -1)
                 if math.prod(tensor_shape[k:]) >= MIN_ROW_SIZE),
                0,
            )
        self.shape = tensor_shape[:leading]
        self._row_axes = tuple(range(leading, len(tensor_shape)))

    def absmax(self, x):
        """max|x| of each row, of `shape`."""
        if not self.shape:
            return absmax(x)
        return ops.max(ops.abs(x), axis=self._row_axes)

    def expand(self, scales):
        """`scales` (of `shape`) broadcastable against the tensor."""
        if not self.shape:
            return scales
        return ops.reshape(scales, self.shape + (1,) * len(self._row_axes))


def quantize(x, float8_format, keep_nonzero=False, per_row=False):
    """`(codes, scales)` with `x ≈ float8_format.decode(codes) * scales`
    (the scales expanded by `Scaling.expand`).

    Each scale maps its elements' max|x| onto the format's largest value
    (absmax scaling, `absmax_scale`); values are then rounded
    (`encode_scaled`).

    Args:
        x: A tensor.
        float8_format: `E4M3FN` or `E5M2`.
        keep_nonzero: Round nonzero values below the smallest subnormal to
            it instead of to 0 (for the second moment: a zero there would
            make the next step's 1/√v explode).
        per_row: One scale per row instead of per tensor (`Scaling`).

    Returns:
        uint8 codes of `x`'s shape and float32 scales of `Scaling(x.shape,
        per_row).shape` (a scalar per tensor).
    """
    x = ops.cast(x, "float32")
    scaling = Scaling(x.shape, per_row)
    scales = absmax_scale(scaling.absmax(x), float8_format)
    return encode_scaled(x, scaling.expand(scales), float8_format, keep_nonzero), scales


def absmax_scale(x_absmax, float8_format):
    """The scale that maps max|x| onto the format's largest value, floored at
    the smallest normal float32 so that an all-zero x gets zero codes instead
    of a division by zero."""
    return ops.maximum(x_absmax * (1.0 / float8_format.max_value), _FLOAT32_TINY)


def encode_scaled(x, scale, float8_format, keep_nonzero=False):
    """The codes of `x / scale` (`scale` broadcastable against `x`),
    saturated at the format's largest value (float8 casts do not saturate);
    `keep_nonzero` as in `quantize`."""
    return float8_format.encode(ops.cast(x, "float32") * (1.0 / scale), keep_nonzero)


def dequantize(codes, scale, float8_format, dtype="float32"):
    """`float8_format.decode(codes) * scale` as `dtype` (`scale`
    broadcastable against `codes`)."""
    return ops.cast(float8_format.decode(codes) * scale, dtype)
