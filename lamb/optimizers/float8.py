"""The float8 codec of LAMB16's moments, in `keras.ops`.

Codes are the formats' bit patterns (float8_e4m3fn, float8_e5m2) in uint8
tensors, encoded and decoded with integer and float32 arithmetic, since
TensorFlow cannot bitcast to float8 and HDF5 has no float8 type. Scaling is
absmax: one float32 scale per tensor, or per row (`Scaling`). Rounding is to
nearest, or stochastic with random bits from `rounding_bits`.
"""

import math

import numpy as np
from keras import ops

# The smallest normal float32: the scale's floor, so that 1/scale is finite.
_FLOAT32_TINY = 2.0**-126
_ABSMAX_HALVINGS = 10
# A row of row-wise scaling holds at least this many elements, so that its
# float32 scale adds at most 1/32 byte per element to the code's one.
MIN_ROW_SIZE = 128
# Multipliers of lowbias32 (C. Wellons, "Prospecting for hash functions",
# 2018), a 32-bit integer finalizer, and 2^32 / golden ratio (a Weyl step).
_MIX_MULTIPLIERS = (np.uint32(0x7FEB352D), np.uint32(0x846CA68B))
_GOLDEN = np.uint32(0x9E3779B9)


class Float8Format:
    """An 8-bit float format: sign, exponent and mantissa bits as in IEEE 754.

    `encode` rounds float32 values to the nearest representable value (ties
    to even) or stochastically, saturating at ±max_value, and returns its bit
    pattern as uint8 (never an infinity or NaN); `decode` maps bit patterns
    back to float32 exactly.

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
        # A magnitude as a fixed-point number whose bits above the lowest
        # `_shift` are its code: for normal values, the float32 bit pattern
        # rebiased; for subnormal ones, magnitude / smallest_subnormal · 2^_shift.
        self._rebias = (127 - exponent_bias) << 23
        self._subnormal_fixed_point = 2.0**self._shift / self.smallest_subnormal

    def encode(self, x, keep_nonzero=False, random_bits=None):
        """The codes of `x`; with `keep_nonzero`, nonzero values below the
        smallest subnormal round to it (keeping their sign) instead of to 0.

        With `random_bits` (uniform uint32, broadcastable against `x`, e.g.
        `rounding_bits`), rounding is stochastic: a magnitude between two
        neighbouring codes rounds up with the probability of its position
        between them (to 2^-`_shift` of their spacing), so that it is
        unbiased on average."""
        magnitude = ops.minimum(ops.abs(x), self.max_value)
        bits = ops.view(magnitude, "int32")
        if random_bits is None:
            code = self._nearest_code(magnitude, bits)
        else:
            code = self._stochastic_code(magnitude, bits, random_bits)
        if keep_nonzero:  # bits > 0 exactly where magnitude > 0
            code = ops.maximum(code, ops.minimum(bits, 1))
        sign = ops.bitwise_and(ops.right_shift(ops.view(x, "int32"), 24), 128)  # also -0.0
        return ops.cast(code + sign, "uint8")

    def _nearest_code(self, magnitude, bits):
        lowest_kept_bit = ops.bitwise_and(ops.right_shift(bits, self._shift), 1)
        normal = ops.right_shift(bits + self._normal_rounding + lowest_kept_bit, self._shift)
        subnormal = (
            ops.view(magnitude + self._subnormal_rounder, "int32")
            - self._subnormal_rounder_bits
        )
        return ops.where(magnitude < self.smallest_normal, subnormal, normal)

    def _stochastic_code(self, magnitude, bits, random_bits):
        """The fixed-point magnitude plus `_shift` random bits, truncated:
        the truncated bits' share of the code spacing is the chance of
        carrying into the code above. A saturated magnitude has none."""
        fixed_point = ops.where(
            magnitude < self.smallest_normal,
            ops.cast(magnitude * self._subnormal_fixed_point, "int32"),  # < 2^23: exact
            bits - self._rebias,
        )
        noise = ops.cast(ops.right_shift(random_bits, 32 - self._shift), "int32")
        return ops.right_shift(fixed_point + noise, self._shift)

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


def _mix32(x):
    """lowbias32: each input bit flips each output bit with probability ~1/2."""
    for multiplier, shift in zip(_MIX_MULTIPLIERS, (16, 15)):
        x = ops.bitwise_xor(x, ops.right_shift(x, shift)) * multiplier
    return ops.bitwise_xor(x, ops.right_shift(x, 16))


def rounding_bits(shape, step, seed):
    """Uniform uint32 random bits for each element of a tensor of `shape`:
    a hash of the element's index in the flattened tensor, `step` (an integer
    scalar tensor) and `seed` (an integer below 2^32), mix(index · 2^32/φ +
    mix(step + mix(seed))). No state: the same arguments give the same bits
    on every backend and device, and under sharding each shard's elements
    keep their whole-tensor index."""
    offset = _mix32(ops.cast(step, "uint32") + _mix32(np.uint32(seed)))
    index = ops.cast(ops.reshape(ops.arange(math.prod(shape), dtype="int32"), shape), "uint32")
    return _mix32(index * _GOLDEN + offset)


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


def quantize(x, float8_format, keep_nonzero=False, per_row=False, random_bits=None):
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
        random_bits: `rounding_bits` of `x`'s shape to round stochastically
            instead of to nearest (`Float8Format.encode`).

    Returns:
        uint8 codes of `x`'s shape and float32 scales of `Scaling(x.shape,
        per_row).shape` (a scalar per tensor).
    """
    x = ops.cast(x, "float32")
    scaling = Scaling(x.shape, per_row)
    scales = absmax_scale(scaling.absmax(x), float8_format)
    codes = encode_scaled(x, scaling.expand(scales), float8_format, keep_nonzero, random_bits)
    return codes, scales


def absmax_scale(x_absmax, float8_format):
    """The scale that maps max|x| onto the format's largest value, floored at
    the smallest normal float32 so that an all-zero x gets zero codes instead
    of a division by zero."""
    return ops.maximum(x_absmax * (1.0 / float8_format.max_value), _FLOAT32_TINY)


def encode_scaled(x, scale, float8_format, keep_nonzero=False, random_bits=None):
    """The codes of `x / scale` (`scale` broadcastable against `x`),
    saturated at the format's largest value (float8 casts do not saturate);
    `keep_nonzero` and `random_bits` as in `quantize`."""
    return float8_format.encode(
        ops.cast(x, "float32") * (1.0 / scale), keep_nonzero, random_bits
    )


def dequantize(codes, scale, float8_format, dtype="float32"):
    """`float8_format.decode(codes) * scale` as `dtype` (`scale`
    broadcastable against `codes`)."""
    return ops.cast(float8_format.decode(codes) * scale, dtype)
