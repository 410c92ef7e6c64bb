"""Non-finite and huge gradients: `skip_nonfinite_gradients`, clipping
without overflow, second moments that stay finite, checked schedule rates."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import lamb
from lamb.optimizers import norms

pytestmark = pytest.mark.tensorflow_only

# Large enough for the restructured XLA steps (LARGE_VARIABLE_SIZE) and for
# LAMB16's 8-bit moments; the bias keeps float moments and the plain step.
KERNEL_SHAPE = (256, 300)
OPTIMIZERS = {
    "lamb": lambda **kw: lamb.LAMB(1e-2, weight_decay=0.01, **kw),
    "lamb16": lambda **kw: lamb.LAMB16(1e-2, weight_decay=0.01, **kw),
    "adam_weight_decay": lambda **kw: lamb.AdamWeightDecay(1e-2, weight_decay=0.01, **kw),
    "lars": lambda **kw: lamb.LARS(0.5, weight_decay=1e-4, **kw),
}
MODES = ["eager", "function", "xla"]


class Problem:
    """A kernel and a bias with their optimizer and a step in `mode`."""

    def __init__(self, make_optimizer, mode, **optimizer_kwargs):
        import tensorflow as tf

        rng = np.random.default_rng(0)
        self.kernel = keras.Variable(rng.normal(size=KERNEL_SHAPE).astype("float32"), name="kernel")
        self.bias = keras.Variable(np.zeros(3, "float32"), name="bias")
        self.optimizer = make_optimizer(**optimizer_kwargs)
        self.optimizer.build([self.kernel, self.bias])

        def step(kernel_gradient, bias_gradient):
            self.optimizer.apply([kernel_gradient, bias_gradient], [self.kernel, self.bias])

        if mode != "eager":
            step = tf.function(step, jit_compile=mode == "xla")
        self._step = step

    def step(self, scale=1.0, seed=1, poison=None):
        rng = np.random.default_rng(seed)
        kernel_gradient = (rng.normal(size=KERNEL_SHAPE) * scale).astype("float32")
        if poison is not None:
            kernel_gradient[3, 4] = poison
        self._step(kernel_gradient, (np.array([0.1, -0.2, 0.3]) * scale).astype("float32"))

    def state(self):
        """Weights and optimizer state, without the skip counter."""
        variables = [self.kernel, self.bias] + [
            v for v in self.optimizer.variables if "skipped_steps" not in v.path
        ]
        return [np.array(v.numpy()) for v in variables]


def assert_equal_states(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def run_under_jax(script):
    """Runs `script` in a fresh process under `KERAS_BACKEND=jax` (the backend is
    chosen once per process); it must print "ok"."""
    pytest.importorskip("jax")
    environment = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        timeout=300,
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_a_non_finite_gradient_is_skipped_without_a_trace(name, mode, poison):
    """Weights, moments, statistics and `iterations` stay as they were; the
    run then goes on exactly as one that never saw the bad step."""
    skipping = Problem(OPTIMIZERS[name], mode, skip_nonfinite_gradients=True, global_clipnorm=1.0)
    clean = Problem(OPTIMIZERS[name], mode, skip_nonfinite_gradients=True, global_clipnorm=1.0)
    skipping.step(seed=1)
    before = skipping.state()
    skipping.step(seed=2, poison=poison)
    assert_equal_states(skipping.state(), before)
    assert skipping.optimizer.skipped_steps == 1
    assert int(skipping.optimizer.iterations.numpy()) == 1
    skipping.step(seed=3)
    clean.step(seed=1)
    clean.step(seed=3)
    assert_equal_states(skipping.state(), clean.state())
    assert clean.optimizer.skipped_steps == 0


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_by_default_a_nan_gradient_element_poisons_its_weight(name):
    """The documented default (as in Keras's own optimizers)."""
    problem = Problem(OPTIMIZERS[name], "function")
    problem.step(poison=np.nan)
    assert np.isnan(problem.kernel.numpy()).any()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_huge_finite_gradients_are_clipped_to_the_same_step(name, mode):
    """Clipped to global norm 1, gradients x·1e20 (whose squares overflow)
    and x·5e37 (near float32's largest value, so that 1 / norm is subnormal)
    give the step of x (whose norm is above 1 as well): the same to float32
    rounding, which can move a float8 moment to the neighbouring code."""
    steps = {}
    for scale in (1.0, 1e20, 5e37):
        problem = Problem(OPTIMIZERS[name], mode, global_clipnorm=1.0)
        for seed in (1, 2):
            problem.step(scale=scale, seed=seed)
        steps[scale] = problem.state()
    for x, y in zip(steps[1e20] + steps[5e37], steps[1.0] * 2):
        assert np.isfinite(x).all()
        if x.dtype == np.uint8:  # codes: at most one in 1,000 one code apart
            code_steps = np.abs(x.astype(np.int32) - y.astype(np.int32))
            assert code_steps.max() <= 1 and (code_steps > 0).mean() < 1e-3
        else:
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["lamb", "lamb16", "adam_weight_decay"])
def test_the_second_moment_stays_finite_for_huge_unclipped_gradients(name, mode):
    problem = Problem(OPTIMIZERS[name], mode)
    for seed, scale in enumerate((1e20, 1e25, 1e30, 1.0)):
        problem.step(scale=scale, seed=seed)
    state = problem.state()
    assert all(np.isfinite(x).all() for x in state if x.dtype != np.uint8)
    if name == "lamb16":  # the 8-bit moments' scales
        scales = [v.numpy() for v in problem.optimizer.variables if "moment_scales" in v.path]
        assert scales and all(np.isfinite(s).all() and (s > 0).all() for s in scales)


def test_the_global_norm_does_not_overflow():
    big = np.full((1000,), 1e20, "float32")
    np.testing.assert_allclose(
        float(norms.global_norm([big, np.float32([3e20, 4e20])])),
        np.sqrt(1000 * 1e40 + 25e40),
        rtol=1e-6,
    )
    np.testing.assert_allclose(float(norms.global_norm([np.float32([3.0, 4.0])])), 5.0)
    assert float(norms.global_norm([np.zeros(4, "float32")])) == 0.0
    for bad in (np.inf, np.nan):
        assert not np.isfinite(float(norms.global_norm([big, np.float32([1.0, bad])])))
        clipped = norms.clip_by_global_norm([big, np.float32([1.0, bad])], 1.0)
        assert np.isnan(keras.ops.convert_to_numpy(clipped[0])).all()


def test_clipping_gradients_near_the_float32_maximum():
    """1e38 per element: a global norm beyond float32's range, and a factor
    1 / norm that would be subnormal; the clipped gradients are exact."""
    huge = [np.full((100,), 1e38, "float32"), np.float32([-1e38, 0.0, 3e30])]
    clipped = [keras.ops.convert_to_numpy(t) for t in norms.clip_by_global_norm(huge, 2.0)]
    expected_element = 2.0 / np.sqrt(101.0)
    np.testing.assert_allclose(clipped[0], np.full((100,), expected_element), rtol=1e-6)
    np.testing.assert_allclose(clipped[1], [-expected_element, 0.0, 3e-8 * expected_element],
                               rtol=1e-6)


class NegativeAfter(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule gone wrong: 0.01, then `value` from step 2."""

    def __init__(self, value):
        self.value = value

    def __call__(self, step):
        return keras.ops.where(step >= 2, self.value, 0.01)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value", [-0.01, np.nan])
def test_a_schedule_giving_a_negative_or_nan_rate_stops_training(mode, value):
    import tensorflow as tf

    problem = Problem(lambda **kw: lamb.LAMB(NegativeAfter(value), **kw), mode)
    problem.step()
    problem.step()
    if mode == "xla":  # XLA drops TensorFlow's checks: NaN, not gradient ascent.
        problem.step()
        assert np.isnan(problem.kernel.numpy()).all()
        return
    with pytest.raises(tf.errors.InvalidArgumentError, match="learning rate"):
        problem.step()


def test_skipping_under_the_jax_backend():
    """JAX's stateless steps: `fit` skips the batch whose loss is NaN."""
    script = textwrap.dedent(
        """
        import keras, numpy as np, lamb
        rng = np.random.default_rng(0)
        x = rng.normal(size=(48, 8)).astype("float32")
        y = rng.normal(size=(48, 1)).astype("float32")
        x[20, 0] = np.nan  # in the second of three batches

        def fit(x, y):
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(300),
                                      keras.layers.Dense(1)])
            model.compile(lamb.LAMB(1e-2, weight_decay=0.01, global_clipnorm=1.0,
                                    skip_nonfinite_gradients=True), "mse")
            model.fit(x, y, batch_size=16, shuffle=False, verbose=0)
            return model

        skipping, clean = fit(x, y), fit(np.concatenate([x[:16], x[32:]]),
                                         np.concatenate([y[:16], y[32:]]))
        assert skipping.optimizer.skipped_steps == 1, skipping.optimizer.skipped_steps
        assert int(skipping.optimizer.iterations) == 2
        for a, b in zip(skipping.get_weights(), clean.get_weights()):
            np.testing.assert_array_equal(a, b)
        print("ok")
        """
    )
    run_under_jax(script)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["lamb", "lars"])
def test_skipping_gives_up_after_max_consecutive_skipped_steps(name, mode):
    """optax's `apply_if_finite(max_consecutive_errors=2)`: two consecutive
    bad steps are skipped (a good step in between restarts the count); the
    third stops training (TensorFlow outside XLA) or is applied (XLA)."""
    import tensorflow as tf

    problem = Problem(OPTIMIZERS[name], mode, skip_nonfinite_gradients=True,
                      max_consecutive_skipped_steps=2)
    problem.step(seed=1)
    for seed in (2, 3):
        problem.step(seed=seed, poison=np.nan)
    problem.step(seed=4)
    for seed in (5, 6):
        problem.step(seed=seed, poison=np.inf)
    assert problem.optimizer.skipped_steps == 4
    assert np.isfinite(problem.kernel.numpy()).all()
    if mode == "xla":
        problem.step(seed=7, poison=np.nan)
        assert np.isnan(problem.kernel.numpy()).any()
        return
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"not finite for more than max_consecutive_skipped_steps=2 consecutive steps"):
        problem.step(seed=7, poison=np.nan)


def test_max_consecutive_skipped_steps_needs_skipping_and_round_trips():
    with pytest.raises(ValueError, match=r"`max_consecutive_skipped_steps` needs skip_nonfinite_gradients=True"):
        lamb.LAMB(max_consecutive_skipped_steps=3)
    with pytest.raises(ValueError, match=r"`max_consecutive_skipped_steps` must be an integer"):
        lamb.LARS(skip_nonfinite_gradients=True, max_consecutive_skipped_steps=2.5)
    optimizer = lamb.AdamWeightDecay(skip_nonfinite_gradients=True, max_consecutive_skipped_steps=3)
    restored = lamb.AdamWeightDecay.from_config(optimizer.get_config())
    assert restored.max_consecutive_skipped_steps == 3


def test_giving_up_under_the_jax_backend():
    """Two consecutive NaN batches skipped, the third applied (NaN weights)."""
    script = textwrap.dedent(
        """
        import keras, numpy as np, lamb
        rng = np.random.default_rng(0)
        x = rng.normal(size=(80, 8)).astype("float32")
        y = rng.normal(size=(80, 1)).astype("float32")
        x[[16, 32], 0] = np.nan  # batches 2 and 3 of 5

        def fit(x, limit):
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(1)])
            model.compile(lamb.LAMB(1e-2, skip_nonfinite_gradients=True,
                                    max_consecutive_skipped_steps=limit), "mse")
            model.fit(x, y, batch_size=16, shuffle=False, verbose=0)
            return model

        skipping = fit(x, 2)
        assert skipping.optimizer.skipped_steps == 2, skipping.optimizer.skipped_steps
        assert all(np.isfinite(w).all() for w in skipping.get_weights())
        x[48, 0] = np.nan  # three consecutive bad batches
        assert any(np.isnan(w).any() for w in fit(x, 2).get_weights())
        print("ok")
        """
    )
    run_under_jax(script)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_keras_accumulation_skips_the_whole_step_of_a_non_finite_micro_batch(name, mode):
    """`gradient_accumulation_steps=4`, micro-batch 2 of 8 NaN: its whole
    step is skipped, as `lamb.GradientAccumulation` skips it (its micro-batches
    consumed, `iterations` unchanged); the run equals one given micro-batches
    5 to 8 only, moments and accumulators included."""
    options = dict(skip_nonfinite_gradients=True, global_clipnorm=1.0,
                   gradient_accumulation_steps=4)
    skipping = Problem(OPTIMIZERS[name], mode, **options)
    clean = Problem(OPTIMIZERS[name], mode, **options)
    initial = skipping.state()
    iterations = []
    for seed in range(1, 9):
        skipping.step(seed=seed, poison=np.nan if seed == 2 else None)
        iterations.append(int(skipping.optimizer.iterations.numpy()))
        if seed == 4:
            assert_equal_states(skipping.state(), initial)
            assert skipping.optimizer.skipped_steps == 1
    for seed in range(5, 9):
        clean.step(seed=seed)
    assert iterations == [0, 0, 0, 0, 0, 0, 0, 1]
    assert skipping.optimizer.skipped_steps == 1
    assert_equal_states(skipping.state(), clean.state())
    assert not np.array_equal(clean.kernel.numpy(), initial[0])


def test_keras_accumulation_skips_the_whole_step_under_the_jax_backend():
    """`gradient_accumulation_steps=4` under JAX, micro-batch 2 of 8 NaN: the
    run equals one given micro-batches 5 to 8 only (weights and optimizer
    state), `iterations` reads 0 until micro-batch 8 ends a step."""
    script = textwrap.dedent(
        """
        import keras, numpy as np, lamb
        rng = np.random.default_rng(0)
        x = rng.normal(size=(128, 8)).astype("float32")
        y = rng.normal(size=(128, 1)).astype("float32")
        x[20, 0] = np.nan  # in micro-batch 2 of 8

        def train(x, y):
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(300),
                                      keras.layers.Dense(1)])
            model.compile(lamb.LAMB(1e-2, weight_decay=0.01, global_clipnorm=1.0,
                                    skip_nonfinite_gradients=True,
                                    max_consecutive_skipped_steps=1,
                                    gradient_accumulation_steps=4), "mse")
            iterations = []
            for start in range(0, len(x), 16):
                model.train_on_batch(x[start:start + 16], y[start:start + 16])
                iterations.append(int(model.optimizer.iterations))
            return model, iterations

        (skipping, iterations), (clean, _) = train(x, y), train(x[64:], y[64:])
        assert iterations == [0, 0, 0, 0, 0, 0, 0, 1], iterations
        assert skipping.optimizer.skipped_steps == 1, skipping.optimizer.skipped_steps
        state = lambda model: model.get_weights() + [
            np.asarray(v) for v in model.optimizer.variables if "skipped_steps" not in v.path]
        for a, b in zip(state(skipping), state(clean), strict=True):
            np.testing.assert_array_equal(a, b)
        print("ok")
        """
    )
    run_under_jax(script)


@pytest.mark.parametrize("mode", MODES)
def test_max_consecutive_skipped_steps_counts_accumulated_steps(mode):
    """Under `gradient_accumulation_steps=2` the limit counts optimizer steps:
    two NaN micro-batches of one step are one skip, a good step restarts the
    count, and the second consecutive bad step stops training (TensorFlow
    outside XLA) or is applied (XLA)."""
    import tensorflow as tf

    problem = Problem(OPTIMIZERS["lamb"], mode, skip_nonfinite_gradients=True,
                      max_consecutive_skipped_steps=1, gradient_accumulation_steps=2)
    for seed, poison in [(1, np.nan), (2, np.inf), (3, None), (4, None), (5, np.nan), (6, None)]:
        problem.step(seed=seed, poison=poison)
    assert problem.optimizer.skipped_steps == 2
    assert int(problem.optimizer.iterations.numpy()) == 1
    assert np.isfinite(problem.kernel.numpy()).all()
    problem.step(seed=7)
    if mode == "xla":
        problem.step(seed=8, poison=np.nan)
        assert np.isnan(problem.kernel.numpy()).any()
        return
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"not finite for more than max_consecutive_skipped_steps=1"):
        problem.step(seed=8, poison=np.nan)
