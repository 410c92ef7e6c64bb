"""LAMB16 against a NumPy model of its float8 state (ml_dtypes), in training,
under heavy-tailed gradients, and through every way of saving."""

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import keras
import ml_dtypes
import numpy as np
import pytest
from keras import ops

from lamb.optimizers.float8 import (
    E4M3FN,
    E5M2,
    Scaling,
    absmax,
    dequantize,
    quantize,
    rounding_bits,
)
from lamb.optimizers.lamb16 import LAMB16
from tests.optimizers.helpers import (
    VARIABLE_SPECS,
    gradient_sequence,
    initial_values,
    matches,
    run_optimizer,
)
from tests.optimizers.test_training import (
    BATCH_SIZE,
    assert_weights_close,
    make_data,
    make_model,
    train,
    weights,
)

ROOT = Path(__file__).resolve().parents[2]
FORMATS = {f.name: f for f in (E4M3FN, E5M2)}
MODES = ["eager", "jit"]


class Limits(NamedTuple):
    """A float8 format's limits as Python floats, from the formats' definitions
    (OCP 8-bit floating point, 2023), not from ml_dtypes: whose `finfo` fields are
    float8 scalars in some versions, so that `1.0 / finfo.max` rounds to 1/512."""

    max: float
    smallest_normal: float
    smallest_subnormal: float
    mantissa_bits: int


LIMITS = {
    "float8_e4m3fn": Limits(448.0, 2.0**-6, 2.0**-9, 3),
    "float8_e5m2": Limits(57344.0, 2.0**-14, 2.0**-16, 2),
}


def compiled(function, mode):
    """`function` as is ("eager") or XLA-compiled ("jit") on this backend."""
    if mode == "eager":
        return function
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(function, jit_compile=True)
    import jax

    return jax.jit(function)


# ----------------------------------------------------------------------------
# NumPy model of the state: float32 arithmetic, float8 rounding by ml_dtypes.


def np_row_axes(shape, per_row):
    """The axes that share a scale: all, or the last ones, as few as hold at
    least 128 elements."""
    if per_row:
        for k in range(len(shape) - 1, -1, -1):
            if np.prod(shape[k:]) >= 128:
                return tuple(range(k, len(shape)))
    return tuple(range(len(shape)))


def np_mix32(x):
    """lowbias32 (C. Wellons, 2018) on uint32 arrays."""
    x = np.asarray(x, np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def np_rounding_bits(shape, step, seed):
    """mix(index · 0x9E3779B9 + mix(step + mix(seed))) of each element's flat index."""
    offset = np_mix32(np.asarray(step % 2**32, np.uint32) + np_mix32(seed))
    index = np.arange(int(np.prod(shape)), dtype=np.uint32).reshape(shape)
    return np_mix32(index * np.uint32(0x9E3779B9) + offset)


def np_stochastic_round(normalized, name, random_bits):
    """`normalized` (within the format's range) rounded to the code below or
    above it: up where the top `23 − mantissa_bits` random bits, as a fraction
    u in [0, 1), reach 1 − the value's position between the two codes."""
    dtype, limits = getattr(ml_dtypes, name), LIMITS[name]
    grid = np.arange(128, dtype=np.uint8).view(dtype).astype(np.float64)
    grid = grid[np.isfinite(grid) & (grid <= limits.max)]
    magnitude = np.abs(normalized).astype(np.float64)
    below_index = np.searchsorted(grid, magnitude, side="right") - 1
    below = grid[below_index]
    above = grid[np.minimum(below_index + 1, len(grid) - 1)]
    position = np.where(above > below, (magnitude - below) / np.where(above > below, above - below, 1), 0)
    kept_bits = 23 - limits.mantissa_bits
    u = (random_bits >> np.uint32(32 - kept_bits)).astype(np.float64) / 2.0**kept_bits
    rounded = np.where(u >= 1 - position, above, below)
    return np.copysign(rounded, normalized).astype(np.float32)


def np_quantize(x, name, keep_nonzero=False, per_row=False, random_bits=None):
    """Codes (as ml_dtypes float8) and float32 scales (of the leading axes'
    shape, a scalar per tensor), as `float8.quantize` defines them: rounded
    to nearest, or stochastically with `random_bits` (`np_stochastic_round`)."""
    dtype, limits = getattr(ml_dtypes, name), LIMITS[name]
    max_value = np.float32(limits.max)
    x = np.asarray(x, np.float32)
    axes = np_row_axes(x.shape, per_row)
    scales = np.maximum(
        np.abs(x).max(axis=axes, keepdims=True) * np.float32(1.0 / limits.max),
        np.float32(2.0**-126),
    )
    normalized = np.clip(x * (np.float32(1.0) / scales), -max_value, max_value)
    if random_bits is not None:
        rounded = np_stochastic_round(normalized, name, random_bits)
        if keep_nonzero:
            smallest = np.copysign(np.float32(limits.smallest_subnormal), normalized)
            rounded = np.where((normalized != 0) & (rounded == 0), smallest, rounded)
        return rounded.astype(dtype), scales.reshape(x.shape[: len(x.shape) - len(axes)])
    if keep_nonzero:
        smallest = np.float32(limits.smallest_subnormal)
        raised = np.sign(normalized) * np.maximum(np.abs(normalized), smallest)
        normalized = np.where(normalized != 0, raised, normalized)
    return normalized.astype(dtype), scales.reshape(x.shape[: len(x.shape) - len(axes)])


def np_dequantize(codes, scales):
    expanded = scales.reshape(scales.shape + (1,) * (codes.ndim - scales.ndim))
    return codes.astype(np.float32) * expanded


def np_moment(previous, target, rate, fused=False):
    """`previous + (target - previous)·rate` in float32; `fused`: rounded once,
    as XLA on CPU computes it (it contracts this into a fused multiply-add).
    The two differ in the last bit of about a third of the elements, which
    puts a few float8 codes per million on the other side of a rounding
    boundary each step: rounded twice is LAMB16's step outside XLA, bit for
    bit, not under it."""
    if not fused:
        return previous + (target - previous) * rate
    return (previous + (target - previous).astype(np.float64) * rate).astype(np.float32)


def np_lamb16(kwargs, values, gradients, min_8bit_size, paths=None, fused=False):
    """Weights (float64 update math) and final float8 state after `gradients`,
    for variables at `paths` (default: `VARIABLE_SPECS`'); `fused` as in
    `np_moment`; scales per row unless `kwargs` has `row_scales=False`; v
    rounded to nearest, or with `moment_rounding="stochastic"` with the bits
    of the step before the update (`iterations`) and the variable's index."""
    per_row = kwargs.get("row_scales", True)
    stochastic = kwargs.get("moment_rounding", "nearest") == "stochastic"
    paths = paths or [path for path, _, _ in VARIABLE_SPECS]
    beta_1, beta_2 = kwargs.get("beta_1", 0.9), kwargs.get("beta_2", 0.999)
    epsilon, lr = kwargs.get("epsilon", 1e-6), kwargs["learning_rate"]
    weight_decay = kwargs.get("weight_decay", 0.0)
    bounds = kwargs.get("weight_norm_bounds")
    decay_list = kwargs.get("exclude_from_weight_decay")
    adapt_list = kwargs.get("exclude_from_layer_adaptation", decay_list)
    weights_ = [v.astype(np.float64) for v in values]
    m = [np.zeros_like(v) for v in values]  # float32, as stored
    v = [np.zeros_like(v) for v in values]
    state = {}
    for t, grads in enumerate(gradients, start=1):
        for i, path in enumerate(paths):
            g = grads[i]
            m[i] = np_moment(m[i], g, np.float32(1.0 - beta_1), fused)
            v[i] = np_moment(v[i], g * g, np.float32(1.0 - beta_2), fused)
            m_hat, v_hat = m[i].astype(np.float64), v[i].astype(np.float64)
            if kwargs.get("bias_correction", True):
                m_hat, v_hat = m_hat / (1 - beta_1**t), v_hat / (1 - beta_2**t)
            u = m_hat / (np.sqrt(v_hat) + epsilon)
            w = weights_[i]
            if weight_decay > 0 and not matches(decay_list, path):
                u = u + weight_decay * w
            ratio = 1.0
            if not matches(adapt_list, path):
                w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(u)
                if w_norm > 0 and u_norm > 0:
                    ratio = (w_norm if bounds is None else np.clip(w_norm, *bounds)) / u_norm
                if kwargs.get("adaptive_trust"):
                    scaled = ratio * kwargs.get("reference_learning_rate", 1e-3) / lr
                    ratio = min(scaled ** kwargs.get("trust_exponent", 0.382), 2.0)
            weights_[i] = w - lr * ratio * u
            if m[i].size >= min_8bit_size:
                m_codes, m_scales = np_quantize(m[i], "float8_e4m3fn", per_row=per_row)
                bits = None
                if stochastic:
                    bits = np_rounding_bits(v[i].shape, t - 1, i)
                v_codes, v_scales = np_quantize(v[i], "float8_e5m2", True, per_row, bits)
                m[i], v[i] = np_dequantize(m_codes, m_scales), np_dequantize(v_codes, v_scales)
                state[path] = (m_codes, v_codes, np.stack([m_scales, v_scales]))
    return weights_, state


# ----------------------------------------------------------------------------
# The float8 formats and the quantization, per tensor and per row.


def _format_test_values(name):
    """Every finite value of the format, the midpoints between neighbours
    (ties), random values over the whole range, and signed zeros."""
    dtype = getattr(ml_dtypes, name)
    grid = np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)
    grid = np.unique(grid[np.isfinite(grid)])
    midpoints = (grid[:-1] + grid[1:]) / 2
    rng = np.random.default_rng(0)
    max_value = LIMITS[name].max
    magnitudes = np.exp(rng.uniform(np.log(1e-7), np.log(max_value), 20000))
    random = magnitudes * rng.choice([-1.0, 1.0], magnitudes.size)
    values = np.concatenate([grid, midpoints, random, [0.0, -0.0]]).astype(np.float32)
    return np.clip(values, -max_value, max_value)


@pytest.mark.parametrize("name", list(FORMATS))
def test_format_limits_agree_with_ml_dtypes_and_the_package(name):
    """The limits the NumPy model uses, read from ml_dtypes as Python floats
    (whatever the type of its scalars) and from the package's formats."""
    limits, info, package = LIMITS[name], ml_dtypes.finfo(getattr(ml_dtypes, name)), FORMATS[name]
    assert (float(info.max), float(info.smallest_normal), float(info.smallest_subnormal),
            int(info.nmant)) == limits
    assert (package.max_value, package.smallest_normal, package.smallest_subnormal,
            package.mantissa_bits) == limits


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(FORMATS))
def test_float8_codes_are_ml_dtypes_bit_patterns(name, mode):
    """Encoding rounds like ml_dtypes (to nearest, ties to even) and the
    stored bytes are the format's bits; decoding is exact."""
    float8_format, dtype = FORMATS[name], getattr(ml_dtypes, name)
    values = _format_test_values(name)
    codes = ops.convert_to_numpy(compiled(float8_format.encode, mode)(values))
    np.testing.assert_array_equal(codes, values.astype(dtype).view(np.uint8))

    all_codes = np.arange(256, dtype=np.uint8)
    expected = all_codes.view(dtype).astype(np.float32)
    finite = np.isfinite(expected)
    decoded = ops.convert_to_numpy(compiled(float8_format.decode, mode)(all_codes[finite]))
    np.testing.assert_array_equal(decoded, expected[finite])


@pytest.mark.parametrize("mode", MODES)
def test_absmax_is_exact_for_every_size(mode):
    rng = np.random.default_rng(2)
    for shape in [(1,), (3,), (2, 512), (1025,), (7, 13, 11), (4096,), (1000, 1001)]:
        x = rng.standard_t(1.5, size=shape).astype(np.float32)
        assert ops.convert_to_numpy(compiled(absmax, mode)(x)) == np.abs(x).max(), shape


@pytest.mark.parametrize(
    "shape, scales_shape",
    [((30522, 128), (30522,)), ((768, 12, 64), (768,)), ((5, 100, 3), (5,)), ((100,), ()),
     ((4096,), ()), ((3, 3, 32, 64), (3, 3))],
)
def test_a_row_is_the_fewest_last_axes_of_at_least_128_elements(shape, scales_shape):
    assert Scaling(shape, per_row=True).shape == scales_shape
    assert Scaling(shape, per_row=False).shape == ()


def _moment_like_tensors():
    rng = np.random.default_rng(1)
    return {
        "normal": rng.normal(scale=1e-3, size=50000),
        "student_t_1.5": rng.standard_t(1.5, size=50000),
        "squares": rng.standard_t(3.0, size=50000) ** 2,
        "sparse": rng.normal(size=50000) * (rng.uniform(size=50000) < 0.01),
        "zeros": np.zeros(4096),
    }


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape, per_row", [((50000,), False), ((125, 400), True), ((50, 20, 50), True)])
@pytest.mark.parametrize("name", list(FORMATS))
def test_quantize_round_trip_matches_the_numpy_model(name, shape, per_row, mode):
    """Same codes and scales as the NumPy model; the round-trip error is
    at most half a unit in the last place of the format (relative to the
    value in the normal range, to the scaled smallest subnormal below)."""
    float8_format, limits = FORMATS[name], LIMITS[name]
    keep_nonzero = name == "float8_e5m2"
    round_trip = compiled(
        lambda x: quantize(x, float8_format, keep_nonzero=keep_nonzero, per_row=per_row), mode
    )
    for kind, x in _moment_like_tensors().items():
        x = x.astype(np.float32)[: np.prod(shape)].reshape(shape) if x.size >= np.prod(shape) else x
        codes, scales = (ops.convert_to_numpy(t) for t in round_trip(x))
        expected_codes, expected_scales = np_quantize(x, name, keep_nonzero, per_row)
        np.testing.assert_array_equal(codes, expected_codes.view(np.uint8), err_msg=kind)
        np.testing.assert_array_equal(scales, expected_scales, err_msg=kind)

        expanded = Scaling(x.shape, per_row).expand(scales)
        restored = ops.convert_to_numpy(dequantize(codes, expanded, float8_format))
        assert np.isfinite(restored).all() and np.isfinite(scales).all(), kind
        error = np.abs(restored - x)
        scale = np.broadcast_to(ops.convert_to_numpy(expanded), x.shape)
        normal = np.abs(x) >= limits.smallest_normal * scale
        half_ulp = 2.0 ** -(limits.mantissa_bits + 1)
        assert (error[normal] <= half_ulp * np.abs(x[normal]) * (1 + 1e-6)).all(), kind
        subnormal_step = limits.smallest_subnormal * scale
        assert (error[~normal] <= subnormal_step[~normal] * (1 + 1e-6)).all(), kind
        if keep_nonzero:  # no zero-point
            nonzero = x != 0
            np.testing.assert_array_equal(
                np.sign(restored[nonzero]), np.sign(x[nonzero]), err_msg=kind
            )
        if kind == "zeros":
            assert not restored.any()


def test_row_scales_keep_small_rows_that_one_scale_rounds_to_zero():
    """An embedding whose rows differ by 2^20 in magnitude (rare and frequent
    tokens): one scale per tensor rounds the small rows' m to 0 (e4m3 spans
    about 2^17); a scale per row keeps them as it keeps the large rows (row
    norms within 2%, under 1% of the entries rounded to 0)."""
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(64, 256)).astype(np.float32)
    rows[::2] *= np.float32(2.0**-20)
    for per_row in (False, True):
        codes, scales = quantize(rows, E4M3FN, per_row=per_row)
        expanded = Scaling(rows.shape, per_row).expand(scales)
        restored = ops.convert_to_numpy(dequantize(codes, expanded, E4M3FN))
        for start in [1, 0] if per_row else [1]:
            part, original = restored[start::2], rows[start::2]
            np.testing.assert_allclose(
                np.linalg.norm(part, axis=1), np.linalg.norm(original, axis=1), rtol=0.02
            )
            assert (part == 0).mean() < 0.01, (per_row, start)
        if not per_row:
            assert not restored[::2].any()


# ----------------------------------------------------------------------------
# Stochastic rounding: the hash, the codes, unbiasedness.

SEED = 0xDEADBEEF


@pytest.mark.parametrize("mode", MODES)
def test_rounding_bits_are_the_numpy_hash_of_step_index_and_seed(mode):
    """Also for a step beyond 2^32 (int64 `iterations`), which wraps."""
    for step in (0, 1, 7, 2**33 + 5):
        bits = compiled(lambda s: rounding_bits((3, 5, 7), s, SEED), mode)(
            ops.convert_to_tensor(np.int64(step))
        )
        np.testing.assert_array_equal(
            ops.convert_to_numpy(bits), np_rounding_bits((3, 5, 7), step, SEED), err_msg=step
        )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(FORMATS))
def test_stochastic_codes_match_the_numpy_model_bit_for_bit(name, mode):
    """Every finite value, midpoints, random values and zeros of each sign;
    then `quantize` with row scales and `keep_nonzero` on moment-like tensors."""
    float8_format = FORMATS[name]
    values = _format_test_values(name)
    bits = np_rounding_bits(values.shape, 3, SEED)
    codes = compiled(lambda x, b: float8_format.encode(x, random_bits=b), mode)(values, bits)
    expected, _ = np_quantize(values, name, random_bits=bits)
    # np_quantize scales by the absmax, which is the format's largest value here.
    assert np.abs(values).max() == LIMITS[name].max
    np.testing.assert_array_equal(ops.convert_to_numpy(codes), expected.view(np.uint8))

    keep_nonzero = name == "float8_e5m2"
    encode = compiled(
        lambda x, b: quantize(x, float8_format, keep_nonzero, per_row=True, random_bits=b), mode
    )
    for kind, x in _moment_like_tensors().items():
        x = x.astype(np.float32)[:4000].reshape(25, 160)
        bits = np_rounding_bits(x.shape, 11, SEED)
        codes, scales = (ops.convert_to_numpy(t) for t in encode(x, bits))
        expected_codes, expected_scales = np_quantize(x, name, keep_nonzero, True, bits)
        np.testing.assert_array_equal(codes, expected_codes.view(np.uint8), err_msg=kind)
        np.testing.assert_array_equal(scales, expected_scales, err_msg=kind)


def _decode_rounded(x, float8_format, steps, random):
    """x encoded at each of `steps` (with `rounding_bits` if `random`, else to
    nearest) and decoded: (steps, x.size) float32."""
    rounded = []
    for step in steps:
        bits = rounding_bits(x.shape, ops.convert_to_tensor(step), SEED) if random else None
        rounded.append(ops.convert_to_numpy(float8_format.decode(float8_format.encode(x, random_bits=bits))))
    return np.stack(rounded)


@pytest.mark.parametrize(
    "name, value, below, above",
    [("float8_e5m2", 1.1, 1.0, 1.25),  # normal
     ("float8_e5m2", 2.3 * 2.0**-16, 2.0 * 2.0**-16, 3.0 * 2.0**-16),  # subnormal
     ("float8_e4m3fn", 100.3, 96.0, 104.0),
     ("float8_e5m2", 57000.0, 49152.0, 57344.0)],  # rounds up to the largest value
)
def test_stochastic_rounding_is_unbiased_and_nearest_is_not(name, value, below, above):
    """The mean of 2^16 elements' roundings of one value is within 4.5 standard
    errors of the value (0.2-0.4 % of the spacing); rounding to nearest is
    over 40 standard errors off."""
    float8_format = FORMATS[name]
    x = np.full(2**16, value, np.float32)
    stochastic = _decode_rounded(x, float8_format, [5], random=True)[0]
    assert set(np.unique(stochastic)) == {below, above}
    position = (np.float32(value) - below) / (above - below)
    standard_error = (above - below) * np.sqrt(position * (1 - position) / x.size)
    assert abs(stochastic.astype(np.float64).mean() - np.float32(value)) < 4.5 * standard_error
    nearest = _decode_rounded(x, float8_format, [5], random=False)[0]
    assert abs(nearest.mean() - np.float32(value)) > 40 * standard_error


def test_rounding_up_frequencies_have_the_binomial_distribution():
    """1024 elements at 16 positions between two e5m2 codes, 256 steps: each
    position rounds up at its frequency; the elements' counts of rounding up
    vary across elements, and across steps, as independent draws would (a
    hash whose bits depend on the element or the step would show an excess)."""
    positions = (np.arange(16) + 0.5) / 16
    x = np.repeat(1.0 + 0.25 * positions, 64).astype(np.float32)
    probability = np.repeat(positions, 64)
    up = _decode_rounded(x, E5M2, range(256), random=True) > 1.0
    frequencies = up.reshape(256, 16, 64).mean(axis=(0, 2))
    np.testing.assert_allclose(frequencies, positions, atol=4.5 * np.sqrt(0.25 / (256 * 64)))
    binomial_variance = probability * (1 - probability)
    per_element = (up.sum(axis=0) - 256 * probability) ** 2 / (256 * binomial_variance)
    per_step = (up.sum(axis=1) - probability.sum()) ** 2 / binomial_variance.sum()
    assert 0.8 < per_element.mean() < 1.2, per_element.mean()
    assert 0.7 < per_step.mean() < 1.3, per_step.mean()


JAX_CODES = """
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from keras import ops
from lamb.optimizers.float8 import E5M2, rounding_bits

def encode(x):
    bits = rounding_bits(x.shape, ops.convert_to_tensor(np.int64(123)), 77)
    return E5M2.encode(x, True, bits)

x = np.random.default_rng(0).standard_t(2.0, size=(40, 128)).astype(np.float32) ** 2
print(np.asarray(jax.jit(encode)(x)).tobytes().hex())
rows = NamedSharding(Mesh(np.array(jax.devices()), ("rows",)), PartitionSpec("rows", None))
sharded = jax.jit(encode, out_shardings=rows)(jax.device_put(x, rows))
assert len(sharded.addressable_shards) == 4
print(np.asarray(sharded).tobytes().hex())
"""


@pytest.mark.tensorflow_only
def test_jax_rounds_to_the_same_codes_as_tensorflow_also_sharded():
    """The same step, seed and values give the same stochastic codes under
    JAX as under TensorFlow, also with the tensor's rows split over 4 devices
    (each shard's elements keep their whole-tensor index)."""
    pytest.importorskip("jax")
    result = subprocess.run(
        [sys.executable, "-c", JAX_CODES], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(
            os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(ROOT),
            XLA_FLAGS="--xla_force_host_platform_device_count=4",
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    x = np.random.default_rng(0).standard_t(2.0, size=(40, 128)).astype(np.float32) ** 2
    bits = rounding_bits(x.shape, ops.convert_to_tensor(np.int64(123)), 77)
    codes = ops.convert_to_numpy(E5M2.encode(x, True, bits)).tobytes().hex()
    assert result.stdout.split()[-2:] == [codes, codes]


# ----------------------------------------------------------------------------
# The optimizer's math.

LAMB16_CASES = {
    "all_8bit": (dict(learning_rate=0.01, weight_decay=0.01, exclude_from_weight_decay=["bias", "layer_norm"]), 1),
    "mixed_sizes": (dict(learning_rate=0.02, beta_1=0.8, beta_2=0.99, weight_decay=0.05, exclude_from_layer_adaptation=["gamma"]), 16),
    "adaptive_trust": (dict(learning_rate=0.02, weight_decay=0.01, exclude_from_weight_decay=["bias"], adaptive_trust=True), 1),
    "per_tensor": (dict(learning_rate=0.01, weight_decay=0.01, row_scales=False), 1),
    "stochastic": (dict(learning_rate=0.01, weight_decay=0.01, moment_rounding="stochastic"), 1),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(LAMB16_CASES))
def test_lamb16_matches_numpy_model(case, mode):
    kwargs, min_8bit_size = LAMB16_CASES[case]
    values, gradients = initial_values(), gradient_sequence(num_steps=12)
    optimizer = LAMB16(min_8bit_size=min_8bit_size, **kwargs)
    actual = run_optimizer(optimizer, values, gradients, mode)
    expected, expected_state = np_lamb16(kwargs, values, gradients, min_8bit_size)
    for (path, _, _), a, e in zip(VARIABLE_SPECS, actual, expected):
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-6, err_msg=path)

    state = {v.name: ops.convert_to_numpy(v) for v in optimizer.variables}
    for path, (m_codes, v_codes, scales) in expected_state.items():
        prefix = path.replace("/", "_")
        np.testing.assert_array_equal(state[prefix + "_momentum"], m_codes.view(np.uint8))
        np.testing.assert_array_equal(state[prefix + "_velocity"], v_codes.view(np.uint8))
        np.testing.assert_allclose(state[prefix + "_moment_scales"], scales, rtol=1e-6)
    quantized = sum(state[name].dtype == np.uint8 for name in state) // 2
    assert quantized == len(expected_state)


def test_state_takes_two_bytes_per_parameter_from_min_8bit_size():
    """Two bytes a parameter plus two float32 scales a row (or a tensor);
    float32 moments below `min_8bit_size`."""
    def state_bytes(shape, **kwargs):
        optimizer = LAMB16(**kwargs)
        optimizer.build([keras.Variable(np.zeros(shape, "float32"))])
        moments = [v for v in optimizer.variables if v.name.endswith(("momentum", "velocity", "scales"))]
        return sum(np.dtype(v.dtype).itemsize * int(np.prod(v.shape)) for v in moments)

    assert state_bytes(4095) == 8 * 4095
    assert state_bytes(4096) == 2 * 4096 + 8
    assert state_bytes((32, 128)) == 2 * 4096 + 8 * 32
    assert state_bytes((32, 8, 16)) == 2 * 4096 + 8 * 32  # rows of (8, 16)
    assert state_bytes((64, 4, 16)) == 2 * 4096 + 8  # (4, 16) is under 128: one row
    assert state_bytes((32, 128), row_scales=False) == 2 * 4096 + 8


def test_config_round_trips_and_bad_arguments_are_named():
    arguments = dict(
        learning_rate=0.02, beta_1=0.8, beta_2=0.95, epsilon=1e-5, weight_decay=0.03,
        exclude_from_weight_decay=["bias"], exclude_from_layer_adaptation=["gamma"],
        bias_correction=False, weight_norm_bounds=[0.1, 10.0], min_8bit_size=1024,
        row_scales=False, moment_rounding="stochastic", adaptive_trust=True, reference_learning_rate=0.002, trust_exponent=0.5,
        gradient_accumulation_steps=2, name="custom",
    )
    config = LAMB16(**arguments).get_config()
    for name, value in arguments.items():
        assert config[name] == pytest.approx(value), name
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(LAMB16(**arguments)))
    assert type(restored) is LAMB16 and restored.get_config() == config

    for bad, message in [
        (dict(min_8bit_size=0), r"`min_8bit_size` must be an integer in \[1, inf\)"),
        (dict(row_scales="yes"), r"`row_scales` must be"),
        (
            dict(moment_rounding="up"),
            r"`moment_rounding` must be one of \['nearest', 'stochastic'\]; received "
            r"moment_rounding='up'\.",
        ),
        (dict(reference_learning_rate=0.0), r"`reference_learning_rate` must be a finite number in \(0.0, inf\)"),
        (dict(trust_exponent=-0.5), r"`trust_exponent` must be a finite number in \[0.0, inf\)"),
        (dict(beta_2=1.0), r"`beta_2` must be a finite number in \[0.0, 1.0\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            LAMB16(**bad)


# ----------------------------------------------------------------------------
# Robustness: heavy tails, bursts, zeros.


def _heavy_tailed_gradients(shapes, num_steps, seed=0):
    """Student-t(1.5) gradients; every 50th step a burst scaled by 1e6 and
    every 7th step one element at 1e6."""
    rng = np.random.default_rng(seed)
    steps = []
    for step in range(num_steps):
        grads = []
        for shape in shapes:
            g = rng.standard_t(1.5, size=shape).astype(np.float32)
            if step % 50 == 49:
                g *= 1e6
            if step % 7 == 3:
                g.flat[rng.integers(g.size)] = 1e6
            grads.append(g)
        steps.append(grads)
    return steps


def _finite(optimizer, model_values, optimizer_values):
    """Whether weights and state are finite: float values finite, and no code
    is a NaN or infinity of its format (e4m3fn: 0x7F, e5m2: 0x7C and above)."""
    checks = [ops.all(ops.isfinite(w)) for w in model_values]
    for variable, value in zip(optimizer.variables, optimizer_values):
        if variable.dtype == "uint8":
            largest_finite = 0x7E if variable.name.endswith("momentum") else 0x7B
            magnitude_codes = ops.bitwise_and(ops.cast(value, "int32"), 127)
            checks.append(ops.max(magnitude_codes) <= largest_finite)
        elif "float" in variable.dtype:
            checks.append(ops.all(ops.isfinite(value)))
    return ops.all(ops.stack(checks))


def _xla_stepper(optimizer, variables):
    """An XLA-compiled `step(grads)` that applies `grads` and returns whether
    the weights and the optimizer state are all finite afterwards."""
    optimizer.build(variables)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def apply_and_check(grads):
            optimizer.apply_gradients(zip(grads, variables))
            return _finite(optimizer, variables, optimizer.variables)

        return lambda grads: bool(apply_and_check([tf.constant(g) for g in grads]))

    import jax

    @jax.jit
    def apply(optimizer_values, grads, model_values):
        model_values, optimizer_values = optimizer.stateless_apply(
            optimizer_values, grads, model_values
        )
        finite = _finite(optimizer, model_values, optimizer_values)
        return model_values, optimizer_values, finite

    def step(grads):
        model_values, optimizer_values, finite = apply(
            [v.value for v in optimizer.variables], grads, [v.value for v in variables]
        )
        for variable, value in zip(variables + optimizer.variables, model_values + optimizer_values):
            variable.assign(value)
        return bool(finite)

    return step


def test_heavy_tailed_gradients_never_make_state_or_weights_non_finite():
    shapes = [(64, 64), (4096,), (4096,), (16,)]
    values = [
        np.random.default_rng(1).normal(scale=0.05, size=shapes[0]).astype(np.float32),
        np.zeros(shapes[1], np.float32),  # zero-initialized, trained
        np.zeros(shapes[2], np.float32),  # all-zero, all-zero gradients
        np.zeros(shapes[3], np.float32),  # small: float state
    ]
    variables = [keras.Variable(v, name=f"v{i}") for i, v in enumerate(values)]
    optimizer = LAMB16(learning_rate=0.02, weight_decay=0.01)
    step = _xla_stepper(optimizer, variables)
    for number, grads in enumerate(_heavy_tailed_gradients(shapes, num_steps=1000)):
        grads[2] = np.zeros(shapes[2], np.float32)
        assert step(grads), f"a non-finite weight or state after step {number}"
    assert int(optimizer.iterations) == 1000
    trained, untouched = (ops.convert_to_numpy(v) for v in variables[1:3])
    assert trained.any() and not untouched.any()
    state = {v.name: ops.convert_to_numpy(v) for v in optimizer.variables}
    assert not state["v2_momentum"].any() and not state["v2_velocity"].any()
    assert state["v0_velocity"].min() > 0  # no second moment rounded to zero


# ----------------------------------------------------------------------------
# Training, distribution, saving.


def _lamb16(**kwargs):
    return LAMB16(
        learning_rate=kwargs.pop("learning_rate", 0.01), weight_decay=0.01,
        exclude_from_weight_decay=["bias", "layer_norm"], min_8bit_size=64, **kwargs)


def _optimizer_state(optimizer):
    return [np.asarray(ops.convert_to_numpy(v)) for v in optimizer.variables]


def _wide_model(seed=0):
    """`make_model` with a (8, 256) first kernel: 8-bit moments with a scale per row."""
    return make_model(seed, width=256)


def _assert_row_scales(optimizer):
    assert (2, 8) in [tuple(v.shape) for v in optimizer.variables if v.name.endswith("moment_scales")]


@pytest.mark.parametrize(
    "policy, rounding",
    [("float32", "nearest"), ("mixed_float16", "nearest"), ("float32", "stochastic")],
)
def test_save_load_round_trips_bit_exactly_and_training_continues_identically(
    policy, rounding, tmp_path
):
    """`.keras` and `.weights.h5` files restore the state bit-exactly, also
    through the LossScaleOptimizer that mixed_float16 wraps around LAMB16;
    stochastic rounding continues with the bits of the restored step."""
    keras.config.set_dtype_policy(policy)
    model = train(_lamb16(moment_rounding=rounding), epochs=2, model=_wide_model(), jit_compile=True)
    _assert_row_scales(model.optimizer)
    model.save(tmp_path / "model.keras")
    model.save_weights(tmp_path / "model.weights.h5")
    saved_state = _optimizer_state(model.optimizer)
    x, y = make_data()
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=2, shuffle=False, verbose=0)

    restored = keras.saving.load_model(tmp_path / "model.keras")
    from_weights = _wide_model(seed=1)
    from_weights.compile(
        optimizer=_lamb16(moment_rounding=rounding), loss="sparse_categorical_crossentropy"
    )
    from_weights.optimizer.build(from_weights.trainable_variables)
    from_weights.load_weights(tmp_path / "model.weights.h5")
    for loaded in (restored, from_weights):
        assert type(loaded.optimizer) is type(model.optimizer)
        for saved, value in zip(saved_state, _optimizer_state(loaded.optimizer)):
            assert saved.dtype == value.dtype
            np.testing.assert_array_equal(saved, value)
    restored.fit(x, y, batch_size=BATCH_SIZE, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(weights(restored), weights(model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.tensorflow_only
def test_tf_train_checkpoint_restores_the_state_bit_exactly(tmp_path):
    """Also with stochastic rounding: training goes on as if uninterrupted."""
    import tensorflow as tf

    model = train(_lamb16(moment_rounding="stochastic"), epochs=2, model=_wide_model())
    _assert_row_scales(model.optimizer)
    prefix = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(str(tmp_path / "ckpt"))
    saved_state = _optimizer_state(model.optimizer)
    x, y = make_data()
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=2, shuffle=False, verbose=0)

    restored = _wide_model(seed=1)
    optimizer = _lamb16(moment_rounding="stochastic")
    restored.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    optimizer.build(restored.trainable_variables)
    tf.train.Checkpoint(model=restored, optimizer=optimizer).restore(prefix).assert_consumed()
    for saved, value in zip(saved_state, _optimizer_state(optimizer)):
        np.testing.assert_array_equal(saved, value)
    restored.fit(x, y, batch_size=BATCH_SIZE, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(weights(restored), weights(model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.tensorflow_only
def test_mirrored_strategy_matches_one_device():
    import tensorflow as tf

    single = train(_lamb16(), jit_compile=True)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    with tf.distribute.MirroredStrategy(devices).scope():
        model = make_model()
        model.compile(optimizer=_lamb16(), loss="sparse_categorical_crossentropy", jit_compile=False)
    x, y = make_data()
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=2, shuffle=False, verbose=0)
    assert_weights_close(model, single, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_equals_the_larger_batch():
    large_batch = train(_lamb16(), jit_compile=True)
    accumulated = train(_lamb16(gradient_accumulation_steps=2), batch_size=BATCH_SIZE // 2, jit_compile=True)
    assert int(accumulated.optimizer.iterations) == int(large_batch.optimizer.iterations)
    assert_weights_close(accumulated, large_batch, rtol=1e-5, atol=1e-6)


def test_mixed_bfloat16_trains():
    """(mixed_float16 is trained in the saving test.)"""
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = make_model()
    before = weights(model)
    train(_lamb16(adaptive_trust=True), epochs=2, model=model, jit_compile=True)
    after = weights(model)
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in after)
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
