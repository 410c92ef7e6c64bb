"""`lamb.training.GradientAccumulation`: K micro-batches per optimizer step,
one cross-replica sum, clipping of the global gradient, loss-scale skips."""

import keras
import numpy as np
import pytest

import lamb
from lamb.training import AccumulatingModel

pytestmark = pytest.mark.tensorflow_only

BATCH = 16
OPTIMIZERS = {
    "lamb": lambda: lamb.LAMB(0.02, weight_decay=0.01, global_clipnorm=0.05,
                              exclude_from_weight_decay=["bias"]),
    "lamb16": lambda: lamb.LAMB16(0.02, weight_decay=0.01, global_clipnorm=0.05,
                                  exclude_from_weight_decay=["bias"], min_8bit_size=64),
    "adam_weight_decay": lambda: lamb.AdamWeightDecay(0.003, weight_decay=0.01,
                                                      global_clipnorm=0.05),
    "lars": lambda: lamb.LARS(1.0, weight_decay=1e-4, global_clipnorm=0.05),
    "keras_adam": lambda: keras.optimizers.Adam(0.003, global_clipnorm=0.05),
}


def make_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32") + (x[:, 3] > 1).astype("int32")
    return x, y


def make_model(steps, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    hidden = keras.layers.Dense(16, activation="relu")(hidden)
    outputs = keras.layers.Dense(3, dtype="float32")(hidden)
    return AccumulatingModel(inputs, outputs, gradient_accumulation_steps=steps)


def train(make_optimizer, steps=1, strategy=None, data=None, epochs=2, **compile_kwargs):
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = make_model(steps)
        model.compile(
            optimizer=make_optimizer(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            **compile_kwargs,
        )
    x, y = data or make_data()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
    return model


def mirrored():
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest.py splits the CPU into two logical devices"
    # Not collective ops: their instance keys restart with each strategy and
    # clash with those of earlier tests' strategies in this process.
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def assert_same_weights(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_two_replicas_of_four_micro_batches_equal_one_device(name):
    """The paper's large batch on small hardware: 2 replicas x 4 micro-batches
    of 2 examples make the same steps as one device on the batch of 16, with
    the global gradient clipped (0.05 is well below its norm)."""
    one_device = train(OPTIMIZERS[name], jit_compile=True)
    accumulated = train(OPTIMIZERS[name], steps=4, strategy=mirrored())
    assert int(accumulated.optimizer.iterations.numpy()) == 8
    assert_same_weights(accumulated, one_device)

    def unclipped_optimizer():
        optimizer = OPTIMIZERS[name]()
        optimizer.global_clipnorm = None
        return optimizer

    unclipped = train(unclipped_optimizer, jit_compile=True)
    assert not all(np.allclose(a, b, rtol=1e-3) for a, b in
                   zip(unclipped.get_weights(), one_device.get_weights()))


def test_the_step_gradient_is_the_mean_over_micro_batches_and_replicas():
    """Plain SGD, unclipped: any error in the gradient's scale shows."""
    def sgd():
        return keras.optimizers.SGD(0.5, momentum=0.9)

    one_device = train(sgd, jit_compile=True)
    accumulated = train(sgd, steps=4, strategy=mirrored())
    assert_same_weights(accumulated, one_device)


def test_accumulation_under_xla_equals_the_whole_batch():
    whole = train(OPTIMIZERS["lamb"], jit_compile=True)
    accumulated = train(OPTIMIZERS["lamb"], steps=8, jit_compile=True)
    assert_same_weights(accumulated, whole)


def test_one_cross_replica_sum_per_step_whatever_the_micro_batches(monkeypatch):
    import tensorflow as tf

    calls = []
    original = tf.distribute.ReplicaContext.all_reduce

    def counting(self, reduce_op, value, options=None):
        calls.append(len(tf.nest.flatten(value)))
        return original(self, reduce_op, value, options)

    monkeypatch.setattr(tf.distribute.ReplicaContext, "all_reduce", counting)
    counts = {}
    for steps in (1, 4):
        calls.clear()
        model = train(OPTIMIZERS["lamb"], steps=steps, strategy=mirrored(), epochs=1)
        counts[steps] = list(calls)
    variables = len(model.trainable_variables)
    # Traced once: one sum of all the gradients on each of the 2 replicas.
    assert counts[1] == counts[4] == [variables, variables]


def test_fp16_non_finite_micro_batch_skips_exactly_that_step():
    """A NaN in one example of replica 1's second micro-batch: the step is
    skipped on both replicas (weights and optimizer state unchanged, loss
    scale halved); the next batch trains."""
    keras.config.set_dtype_policy("mixed_float16")
    x, y = make_data(n=48)
    x[BATCH + 12, 0] = np.nan  # Batch 1, replica 1 (examples 8-15), micro-batch 1 of 2.
    strategy = mirrored()
    with strategy.scope():
        model = make_model(2)
        model.compile(optimizer=OPTIMIZERS["lamb"](),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def state():
        optimizer = model.optimizer.inner_optimizer
        return [np.array(v) for v in model.get_weights() + list(optimizer.variables)]

    def fit(batch):
        part = slice(batch * BATCH, (batch + 1) * BATCH)
        model.fit(x[part], y[part], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)

    fit(0)
    before, scale = state(), float(model.optimizer.dynamic_scale.numpy())
    fit(1)
    for a, b in zip(state(), before):
        np.testing.assert_array_equal(a, b)
    assert float(model.optimizer.dynamic_scale.numpy()) == scale / 2
    fit(2)
    assert int(model.optimizer.iterations.numpy()) == 2
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert not np.array_equal(model.get_weights()[0], before[0])


@pytest.mark.parametrize("steps", [2, None], ids=["accumulating", "plain_keras_model"])
def test_skip_nonfinite_gradients_skips_the_step_on_every_replica(steps):
    """float32, two replicas: a NaN in one example of replica 1 (in its
    second micro-batch when accumulating) skips that step everywhere; the run
    equals one that never saw that batch."""
    x, y = make_data(n=48)
    x[BATCH + 12, 0] = np.nan

    def fit(x, y):
        strategy = mirrored()
        with strategy.scope():
            model = make_model(steps or 1)
            if steps is None:
                model = keras.Model(model.inputs, model.outputs)
            model.compile(
                optimizer=lamb.LAMB(0.02, weight_decay=0.01, global_clipnorm=0.05,
                                    skip_nonfinite_gradients=True),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        return model

    skipping = fit(x, y)
    clean = fit(np.concatenate([x[:BATCH], x[2 * BATCH:]]),
                np.concatenate([y[:BATCH], y[2 * BATCH:]]))
    assert skipping.optimizer.skipped_steps == 1
    assert int(skipping.optimizer.iterations.numpy()) == 2
    assert_same_weights(skipping, clean, rtol=0, atol=0)


def test_a_batch_the_micro_batches_cannot_share_is_a_clear_error():
    import tensorflow as tf

    with pytest.raises((ValueError, tf.errors.InvalidArgumentError),
                       match=r"gradient_accumulation_steps=3 does not divide the batch"):
        train(OPTIMIZERS["lamb"], steps=3, jit_compile=False)


def test_accumulation_on_the_optimizer_too_is_a_clear_error():
    with pytest.raises(ValueError, match="set gradient_accumulation_steps on the model"):
        train(lambda: lamb.LAMB(0.01, gradient_accumulation_steps=2), steps=2)


@pytest.mark.parametrize("value", [0, 2.5, True])
def test_bad_gradient_accumulation_steps(value):
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        make_model(value)


def test_clipping_sees_the_norm_of_sparse_gradients_with_repeated_rows():
    """SGD on an embedding whose rows repeat in the batch, global norm clipped
    to 1e-3: the step moves the weights by exactly 1e-3 (the norm of the
    dense gradient, not of its repeated sparse rows)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), dtype="int32")
    hidden = keras.layers.Flatten()(keras.layers.Embedding(10, 3)(inputs))
    model = AccumulatingModel(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer=keras.optimizers.SGD(1.0, global_clipnorm=1e-3), loss="mse")
    before = [np.array(w) for w in model.get_weights()]
    tokens = np.array([[1, 1, 2, 1], [2, 2, 1, 3]], dtype="int32")
    model.fit(tokens, np.full((2, 1), 10.0, "float32"), batch_size=2, verbose=0)
    moved = np.sqrt(sum(((w - b) ** 2).sum() for w, b in zip(model.get_weights(), before)))
    np.testing.assert_allclose(moved, 1e-3, rtol=1e-5)
