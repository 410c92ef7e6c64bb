"""The optimizers in real training: compile/fit, XLA, saving, resuming,
distribution, accumulation, clipping, EMA and mixed precision."""

import keras
import numpy as np
import pytest

import lamb
from lamb import schedules

OPTIMIZERS = {
    "lamb": lambda **kw: lamb.LAMB(
        learning_rate=kw.pop("learning_rate", 0.01), weight_decay=0.01,
        exclude_from_weight_decay=["bias", "layer_norm"], **kw),
    "adam_weight_decay": lambda **kw: lamb.AdamWeightDecay(
        learning_rate=kw.pop("learning_rate", 0.003), weight_decay=0.01,
        exclude_from_weight_decay=["bias", "layer_norm"], **kw),
    "lars": lambda **kw: lamb.LARS(
        learning_rate=kw.pop("learning_rate", 1.0), weight_decay=1e-4,
        exclude_from_weight_decay=["bias", "layer_norm"], **kw),
}
BATCH_SIZE = 16


def make_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32") + (x[:, 3] > 1).astype("int32")
    return x, y


def make_model(seed=0, width=16):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.LayerNormalization(name="layer_norm"),
        keras.layers.Dense(3),
        keras.layers.Activation("softmax", dtype="float32"),
    ])


def train(optimizer, epochs=2, model=None, batch_size=BATCH_SIZE, **compile_kwargs):
    model = model or make_model()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", **compile_kwargs)
    x, y = make_data()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model


def weights(model):
    return [np.asarray(w) for w in model.get_weights()]


def assert_weights_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(weights(a), weights(b)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def assert_layer_statistics_close(a, b):
    """The (‖w‖, ‖u‖, trust ratio) rows of the two models' last steps, for
    optimizers that record them (variable paths may differ between models)."""
    if not hasattr(a.optimizer, "layer_statistics"):
        return
    rows_a = list(a.optimizer.layer_statistics().values())
    rows_b = list(b.optimizer.layer_statistics().values())
    assert len(rows_a) == len(rows_b) == len(a.trainable_variables)
    assert all(row[0] > 0 for row in rows_a)  # recorded: every weight norm is set
    np.testing.assert_allclose(rows_a, rows_b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_jit_compiled_fit_equals_eager_fit(name):
    compiled = train(OPTIMIZERS[name](), jit_compile=True)
    eager = train(OPTIMIZERS[name](), run_eagerly=True)
    assert_weights_close(compiled, eager)
    assert not np.allclose(weights(compiled)[0], weights(make_model())[0])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_save_load_and_continue_equals_uninterrupted(name, tmp_path):
    uninterrupted = train(OPTIMIZERS[name](), epochs=4, jit_compile=True)
    first_half = train(OPTIMIZERS[name](), epochs=2, jit_compile=True)
    path = tmp_path / "model.keras"
    first_half.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.optimizer) is type(uninterrupted.optimizer)
    x, y = make_data()
    restored.fit(x, y, batch_size=BATCH_SIZE, epochs=2, shuffle=False, verbose=0)
    assert_weights_close(restored, uninterrupted, rtol=1e-6, atol=1e-7)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_tf_train_checkpoint_restores_the_optimizer_state(name, tmp_path):
    import tensorflow as tf

    uninterrupted = train(OPTIMIZERS[name](), epochs=4)
    first_half = train(OPTIMIZERS[name](), epochs=2)
    prefix = tf.train.Checkpoint(model=first_half, optimizer=first_half.optimizer).save(str(tmp_path / "ckpt"))

    model = make_model(seed=1)
    optimizer = OPTIMIZERS[name]()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    optimizer.build(model.trainable_variables)
    tf.train.Checkpoint(model=model, optimizer=optimizer).restore(prefix).assert_consumed()
    assert int(optimizer.iterations) == int(first_half.optimizer.iterations)
    x, y = make_data()
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=2, shuffle=False, verbose=0)
    assert_weights_close(model, uninterrupted, rtol=1e-6, atol=1e-7)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_mirrored_strategy_matches_one_device(name):
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest.py splits the CPU into two logical devices"
    single = train(OPTIMIZERS[name](), jit_compile=True)
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        model = make_model()
        optimizer = OPTIMIZERS[name]()
        # Whole-step XLA under MirroredStrategy fails on logical CPU devices
        # for every Keras optimizer (TensorFlow's "variable on a different
        # device" XLA limitation), so the replicas run as TF graphs here.
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=False)
    x, y = make_data()
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=2, shuffle=False, verbose=0)
    assert_weights_close(model, single, rtol=1e-5, atol=1e-6)
    assert_layer_statistics_close(model, single)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_gradient_accumulation_equals_the_larger_batch(name):
    """Two micro-batches of 8 accumulate to one step on the batch of 16,
    with the schedule and bias correction counting updates."""
    schedule = schedules.WarmupPolynomialDecay(
        {"lamb": 0.02, "adam_weight_decay": 0.01, "lars": 2.0}[name], decay_steps=10, warmup_steps=3)
    large_batch = train(OPTIMIZERS[name](learning_rate=schedule), jit_compile=True)
    accumulated = train(
        OPTIMIZERS[name](learning_rate=schedule, gradient_accumulation_steps=2),
        batch_size=BATCH_SIZE // 2, jit_compile=True)
    assert int(accumulated.optimizer.iterations) == int(large_batch.optimizer.iterations)
    assert_weights_close(accumulated, large_batch, rtol=1e-5, atol=1e-6)
    assert_layer_statistics_close(accumulated, large_batch)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_global_clipnorm_bounds_the_gradient(name):
    """With a tiny global clip norm, LAMB/LARS (scale-invariant per layer) and
    AdamWeightDecay still train; LARS and Adam-type steps differ from unclipped."""
    clipped = train(OPTIMIZERS[name](global_clipnorm=1e-3), epochs=1, jit_compile=True)
    unclipped = train(OPTIMIZERS[name](), epochs=1, jit_compile=True)
    assert all(np.isfinite(w).all() for w in weights(clipped))
    assert any(not np.allclose(a, b) for a, b in zip(weights(clipped), weights(unclipped)))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_ema_averages_the_weights_and_fit_ends_on_the_average(name):
    model = make_model()
    optimizer = OPTIMIZERS[name](use_ema=True, ema_momentum=0.9)
    variables = model.trainable_variables
    optimizer.build(variables)
    rng = np.random.default_rng(0)
    expected = None
    for _ in range(4):
        grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
        raw = [np.asarray(v) for v in variables]
        expected = raw if expected is None else [0.9 * e + 0.1 * r for e, r in zip(expected, raw)]
    for average, e in zip(optimizer._model_variables_moving_average, expected):
        np.testing.assert_allclose(np.asarray(average), e, rtol=1e-5, atol=1e-6)

    fitted = train(OPTIMIZERS[name](use_ema=True, ema_momentum=0.9), epochs=2, jit_compile=True)
    for average, final in zip(fitted.optimizer._model_variables_moving_average, fitted.trainable_variables):
        np.testing.assert_array_equal(np.asarray(average), np.asarray(final))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_mixed_precision_trains(name, policy):
    keras.config.set_dtype_policy(policy)
    model = make_model()
    assert model.layers[0].compute_dtype != "float32"
    before = weights(model)
    train(OPTIMIZERS[name](), epochs=2, model=model, jit_compile=True)
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    after = weights(model)
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in after)
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def apply_statefully(optimizer, grads, variables):
    """`apply_gradients`; on JAX (whose loss-scale branch must be traced
    statelessly, as `fit` does) through `stateless_apply`."""
    if keras.backend.backend() != "jax":
        optimizer.apply_gradients(zip(grads, variables))
        return
    new_values, new_state = optimizer.stateless_apply(
        [v.value for v in optimizer.variables], grads, [v.value for v in variables])
    for variable, value in zip(variables, new_values):
        variable.assign(value)
    for variable, value in zip(optimizer.variables, new_state):
        variable.assign(value)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_non_finite_gradient_under_loss_scaling_skips_the_step(name):
    model = make_model()
    optimizer = keras.optimizers.LossScaleOptimizer(OPTIMIZERS[name]())
    variables = model.trainable_variables
    optimizer.build(variables)
    finite = [keras.ops.ones(v.shape) for v in variables]
    apply_statefully(optimizer, finite, variables)
    inner = optimizer.inner_optimizer
    state = [np.asarray(v) for v in inner.variables]
    model_state = weights(model)
    scale = float(np.asarray(optimizer.dynamic_scale))

    poisoned = [keras.ops.ones(v.shape) for v in variables]
    poisoned[0] = keras.ops.full(variables[0].shape, np.inf)
    apply_statefully(optimizer, poisoned, variables)

    for before, after in zip(state, [np.asarray(v) for v in inner.variables]):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(model_state, weights(model)):
        np.testing.assert_array_equal(before, after)
    assert float(np.asarray(optimizer.dynamic_scale)) == scale / 2
