"""Each optimizer against the NumPy references on variables that take the
fast step (at least `xla_cpu.LARGE_VARIABLE_SIZE` elements).

The value tests of `test_reference_math.py` and `test_lamb16.py` use
variables of at most 480 elements: they take the plain `update_step`. Here
the same references, run over larger variables with a small bias in the
same step, check what large variables get instead, the scheduled twin
(`_scheduled_update_step`): LAMB's separately written copy of u for its
norm, LAMB16's recomputing 8-bit step (codes and scales bit for bit),
LARS's rewritten g + λ·w, and the matrix-vector norm (rows of 4096 split
in halves). Under TensorFlow on CPU, "eager" runs the twin with the
matrix-vector norms only and "jit" (`jit_compile=True`) the restructured
one; under JAX both run the restructured one (`xla_cpu.compiling_with_xla` is always true),
on CPU `xla_cpu.JaxCpuPlan` where JAX's XLA does not fuse x² into
matrix-vector products (jaxlib 0.10): LAMB's u written once for its norm
and the update, plain reductions.
"""

import keras
import numpy as np
import pytest
from keras import ops

import lamb
from lamb.optimizers import xla_cpu
from tests import reference
from tests.optimizers import test_reference_math
from tests.optimizers.helpers import gradient_sequence, initial_values, matches, run_optimizer
from tests.optimizers.test_lamb16 import np_lamb16

# (path, shape, initial values), as `helpers.VARIABLE_SPECS`: the helpers give
# `head/kernel` a zero gradient on even steps and `frozen/kernel` always one
# (both norms of its trust ratio zero).
FAST_PATH_SPECS = [
    ("encoder/dense/kernel", (512, 256), "normal"),  # matrix-vector norm
    ("encoder/dense/bias", (256,), "zeros"),  # small: the plain step
    ("encoder/wide/kernel", (64, 4096), "normal"),  # norm over rows of 2048
    ("encoder/layer_norm/gamma", (256,), "ones"),  # small
    ("head/kernel", (8192, 8), "normal"),  # 2^16 ((4096, 8) is below); rows < 16: viewed as rows of 2048
    ("frozen/kernel", (2**16,), "zeros"),  # rank 1: viewed as rows of 2048
]
LARGE = ["encoder/dense/kernel", "encoder/wide/kernel", "head/kernel", "frozen/kernel"]
NUM_STEPS = 24
MODES = ["eager", "jit"]

# |actual - expected| <= ATOL + RTOL·|expected|, per element, against float64
# references. RTOL: the float32 weights (|w| up to about 12 here) are rounded
# once per step, half an ulp (2^-24·|w|) each time: about √24·2^-24 ≈ 3e-7
# relative after 24 steps as a random walk, 1.4e-6 at worst (measured: at
# most 4.5e-7 of the variable's largest |w|). ATOL: β2 = 0.999 as float32
# puts 1 − β2^t off by 1.3e-5 relative at t = 1, hence u by 6e-6; the trust
# ratio cancels that, but not where the ratio is 1 (excluded variables:
# measured at most 1.0e-6 absolute, 1e-7 with the references' β's rounded
# to float32 too). Both bounds are about twice the measured errors. A wrong
# copy of u changes the trust ratio, hence every element of the step: 4.1·v
# for 4·v in LAMB's copy moves the weights by up to 1e-2, and even its ε
# left unscaled (ε, not 2·ε, beside 2·m and 4·v) by 4e-6 to 1.6e-5.
RTOL, ATOL = 1e-6, 2e-6


def test_the_variables_take_the_fast_step():
    sizes = {path: int(np.prod(shape)) for path, shape, _ in FAST_PATH_SPECS}
    assert [path for path in sizes if sizes[path] >= xla_cpu.LARGE_VARIABLE_SIZE] == LARGE
    assert min(sizes[path] for path in LARGE) == xla_cpu.LARGE_VARIABLE_SIZE


def _run(optimizer, mode):
    values = initial_values(specs=FAST_PATH_SPECS)
    gradients = gradient_sequence(NUM_STEPS, specs=FAST_PATH_SPECS)
    return values, gradients, run_optimizer(optimizer, values, gradients, mode, FAST_PATH_SPECS)


def _assert_close(actual, expected, float8_flips=0.0):
    """Every element within the bounds above; with `float8_flips`, that
    fraction of a variable's elements may be off by up to 1e-4 of the
    variable's largest |w| instead (a stored float8 code one step apart at
    some step)."""
    for (path, _, _), a, e in zip(FAST_PATH_SPECS, actual, expected):
        if float8_flips:
            off = np.abs(a - e) > ATOL + RTOL * np.abs(e)
            assert off.mean() <= float8_flips, (path, off.sum())
            np.testing.assert_allclose(a[off], e[off], atol=1e-4 * np.abs(e).max(), err_msg=path)
            a = np.where(off, e, a)
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL, err_msg=path)


def _decays_and_adapts(kwargs, path):
    decay_list = kwargs.get("exclude_from_weight_decay")
    adapt_list = kwargs.get("exclude_from_layer_adaptation", decay_list)
    decays = kwargs.get("weight_decay", 0.0) > 0 and not matches(decay_list, path)
    return decays, not matches(adapt_list, path)


# ----------------------------------------------------------------------------
# LAMB: the reference loop of test_reference_math.

LAMB_CASES = {
    "decay_with_exclusions": dict(
        learning_rate=0.01,
        weight_decay=0.01,
        exclude_from_weight_decay=["bias", "layer_norm"],
        exclude_from_layer_adaptation=["bias", "layer_norm", "head"],
    ),
    "no_bias_correction_with_bounds": dict(
        learning_rate=0.02,
        weight_decay=0.1,
        bias_correction=False,
        weight_norm_bounds=(1.0, 300.0),  # clips ‖w‖ of the two wider kernels
        exclude_from_weight_decay=["bias"],
    ),
    "no_decay": dict(learning_rate=0.005, beta_1=0.8, beta_2=0.99, epsilon=1e-5),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(LAMB_CASES))
def test_lamb_matches_reference(case, mode):
    kwargs = LAMB_CASES[case]
    values, gradients, actual = _run(lamb.LAMB(**kwargs), mode)
    _assert_close(actual, test_reference_math._lamb_reference(kwargs, values, gradients, FAST_PATH_SPECS))


# ----------------------------------------------------------------------------
# LAMB16: test_lamb16's NumPy float8 model (float32 moments, codes and scales
# per row of (512, 256) and (64, 4096), per tensor of the others or of all,
# by ml_dtypes), its moments rounded once under jit as XLA rounds them.

LAMB16_CASES = {
    "decay_with_exclusions": LAMB_CASES["decay_with_exclusions"],
    "no_bias_correction_with_bounds": dict(
        LAMB_CASES["no_bias_correction_with_bounds"], beta_1=0.8, beta_2=0.99, weight_decay=0.05
    ),
    "scales_per_tensor": dict(LAMB_CASES["decay_with_exclusions"], row_scales=False),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(LAMB16_CASES))
def test_lamb16_matches_numpy_model(case, mode):
    kwargs = LAMB16_CASES[case]
    optimizer = lamb.LAMB16(**kwargs)  # min_8bit_size 4096: float moments for the small ones
    values, gradients, actual = _run(optimizer, mode)
    expected, expected_state = np_lamb16(
        kwargs, values, gradients, optimizer.min_8bit_size,
        paths=[path for path, _, _ in FAST_PATH_SPECS], fused=mode == "jit",
    )
    # Under JAX, XLA computes the row maxima from moments rounded twice and
    # the codes from moments rounded once: the scales can differ from the
    # model's in the last bit, and a code can flip at some step.
    jax_row_scales = (
        mode == "jit" and keras.backend.backend() == "jax" and optimizer.row_scales
    )
    _assert_close(actual, expected, float8_flips=1e-5 if jax_row_scales else 0.0)

    assert sorted(expected_state) == sorted(LARGE)
    state = {v.name: ops.convert_to_numpy(v) for v in optimizer.variables}
    for path, (m_codes, v_codes, scales) in expected_state.items():
        prefix = path.replace("/", "_")
        np.testing.assert_array_equal(state[prefix + "_momentum"], m_codes.view(np.uint8), err_msg=path)
        np.testing.assert_array_equal(state[prefix + "_velocity"], v_codes.view(np.uint8), err_msg=path)
        if jax_row_scales:
            np.testing.assert_allclose(state[prefix + "_moment_scales"], scales, rtol=2**-20)  # a few ulps
        else:
            np.testing.assert_array_equal(state[prefix + "_moment_scales"], scales, err_msg=path)


# ----------------------------------------------------------------------------
# LARS and AdamWeightDecay: the steps of tests/reference.py.

LARS_CASES = {
    "classic_momentum": dict(
        learning_rate=1.0, weight_decay=1e-3, exclude_from_weight_decay=["bias", "layer_norm"]
    ),
    "nesterov": dict(
        learning_rate=2.0,
        momentum=0.8,
        weight_decay=0.01,
        eeta=0.01,
        nesterov=True,
        exclude_from_weight_decay=["bias"],
        exclude_from_layer_adaptation=["bias", "head"],
    ),
    "separate_trust_ratio": dict(
        learning_rate=1.0, weight_decay=0.01, eeta=0.01, trust_ratio_formula="separate",
        epsilon=1e-3, exclude_from_weight_decay=["bias", "layer_norm"],
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(LARS_CASES))
def test_lars_matches_reference(case, mode):
    kwargs = LARS_CASES[case]
    values, gradients, actual = _run(lamb.LARS(**kwargs), mode)

    weights = [v.astype("float64") for v in values]
    velocity = [np.zeros_like(w) for w in weights]
    for grads in gradients:
        for i, (path, _, _) in enumerate(FAST_PATH_SPECS):
            decays, adapts = _decays_and_adapts(kwargs, path)
            weights[i], velocity[i] = reference.lars_step(
                weights[i], grads[i].astype("float64"), velocity[i],
                lr=kwargs["learning_rate"], momentum=kwargs.get("momentum", 0.9),
                weight_decay=kwargs["weight_decay"], eeta=kwargs.get("eeta", 0.001),
                nesterov=kwargs.get("nesterov", False), decays=decays, adapts=adapts,
                formula=kwargs.get("trust_ratio_formula", "decayed"),
                epsilon=kwargs.get("epsilon", 0.0),
            )
    _assert_close(actual, weights)


ADAMW_KWARGS = dict(
    learning_rate=0.01, weight_decay=0.01, exclude_from_weight_decay=["layer_norm", "bias"]
)


@pytest.mark.parametrize("mode", MODES)
def test_adam_weight_decay_matches_reference(mode):
    kwargs = ADAMW_KWARGS
    values, gradients, actual = _run(lamb.AdamWeightDecay(**kwargs), mode)

    weights = [v.astype("float64") for v in values]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for grads in gradients:
        for i, (path, _, _) in enumerate(FAST_PATH_SPECS):
            weights[i], m[i], v[i] = reference.adam_weight_decay_step(
                weights[i], grads[i].astype("float64"), m[i], v[i],
                lr=kwargs["learning_rate"], beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                weight_decay=kwargs["weight_decay"], decays=_decays_and_adapts(kwargs, path)[0],
            )
    _assert_close(actual, weights)
