"""The optax peers of `benchmarks/optimizer_step.py` compute the same steps
as the optimizers they are compared with: `jax_steps.optax_lamb` as
`lamb.LAMB`, `jax_steps.optax_adam` as `keras.optimizers.Adam`, to float32
rounding (ours XLA-compiled, on variables large enough for the fast step,
and eagerly), so that the benchmark compares the speed of one computation.
Under the JAX backend only (`tests/test_jax_backend.py` runs this folder so):
in the TensorFlow run, computing with JAX would start its threads in the
process of the suite's forking tests.
"""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import lamb
from tests.optimizers.helpers import gradient_sequence, initial_values, run_optimizer

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs under the JAX backend")
BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")


def jax_steps():
    """benchmarks/jax_steps.py (which imports JAX and optax)."""
    pytest.importorskip("optax")
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    import jax_steps

    return jax_steps

# A kernel that takes the fast step (2^17 elements) and two small variables
# with non-zero values, so that excluding them from the trust ratio changes
# their step.
SPECS = [
    ("encoder/dense/kernel", (512, 256), "normal"),
    ("encoder/dense/bias", (256,), "normal"),
    ("encoder/layer_norm/gamma", (256,), "ones"),
]
PATHS = [path for path, _, _ in SPECS]
EXCLUDE = ["bias", "layer_norm"]
# Differences are float32 roundings of the same operations in another order
# (LAMB's bias corrections as two factors, Keras's ε before the correction):
# measured at most 4.8e-7 absolute, two ulps of weights of 2 to 4. The
# mismatches these tests exist for are far outside: optax.lamb's unmasked
# trust ratio moves the excluded variables by up to 2e-3 after one step, and
# optax.adam's constant ε (instead of Keras's placement) by 5e-3.
RTOL, ATOL = 2e-6, 1e-7


def run_optax(transformation, values, gradients):
    import jax.numpy as jnp
    import optax

    params = [jnp.asarray(value) for value in values]
    state = transformation.init(params)
    for grads in gradients:
        updates, state = transformation.update([jnp.asarray(g) for g in grads], state, params)
        params = optax.apply_updates(params, updates)
    return [np.asarray(p) for p in params]


def assert_close(actual, expected):
    for path, a, e in zip(PATHS, actual, expected):
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL, err_msg=path)


LAMB_CASES = {
    # optax's trust ratio masked to the adapted variables (optax.lamb's chain)
    "excluded_from_decay_and_trust_ratio": dict(exclude_from_weight_decay=EXCLUDE),
    # every variable adapted: optax.lamb itself
    "excluded_from_decay_only": dict(exclude_from_weight_decay=EXCLUDE, exclude_from_layer_adaptation=[]),
}


@pytest.mark.parametrize("mode", ["jit", "eager"])
@pytest.mark.parametrize("num_steps", [1, 3])
@pytest.mark.parametrize("epsilon", [1e-6, 1e-2])
@pytest.mark.parametrize("case", sorted(LAMB_CASES))
def test_optax_lamb_takes_lamb_steps(case, epsilon, num_steps, mode):
    kwargs = dict(LAMB_CASES[case], learning_rate=0.01, weight_decay=0.1, epsilon=epsilon, beta_2=0.99)
    values = initial_values(specs=SPECS)
    gradients = gradient_sequence(num_steps, specs=SPECS)
    ours = run_optimizer(lamb.LAMB(**kwargs), values, gradients, mode, SPECS)
    theirs = run_optax(jax_steps().optax_lamb(PATHS, **kwargs), values, gradients)
    assert_close(ours, theirs)


@pytest.mark.parametrize("mode", ["jit", "eager"])
@pytest.mark.parametrize("num_steps", [1, 3])
@pytest.mark.parametrize("epsilon", [1e-7, 1e-2])
def test_optax_adam_takes_keras_adam_steps(epsilon, num_steps, mode):
    values = initial_values(specs=SPECS)
    gradients = gradient_sequence(num_steps, specs=SPECS)
    keras_adam = keras.optimizers.Adam(0.01, beta_2=0.99, epsilon=epsilon)
    ours = run_optimizer(keras_adam, values, gradients, mode, SPECS)
    theirs = run_optax(jax_steps().optax_adam(0.01, beta_2=0.99, epsilon=epsilon), values, gradients)
    assert_close(ours, theirs)


def test_the_masks_follow_lamb_rules():
    decays, adapts = jax_steps().masks(PATHS, EXCLUDE, None, weight_decay=0.1)
    assert decays == adapts == [True, False, False]
    decays, adapts = jax_steps().masks(PATHS, EXCLUDE, ["kernel"], weight_decay=0.0)
    assert (decays, adapts) == ([False, False, False], [False, True, True])
