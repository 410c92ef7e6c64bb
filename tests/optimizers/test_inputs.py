"""What the optimizers take, as Keras's own optimizers take it (raw
`tf.Variable`s, sparse gradients), and what they refuse with one line
(a gradient of another shape, integer and bfloat16 variables)."""

import keras
import numpy as np
import pytest

import lamb

OPTIMIZERS = {
    "lamb": lambda: lamb.LAMB(0.01, weight_decay=0.01),
    "lamb16": lambda: lamb.LAMB16(0.01, weight_decay=0.01),
    "adam_weight_decay": lambda: lamb.AdamWeightDecay(0.01, weight_decay=0.01),
    "lars": lambda: lamb.LARS(0.5),  # weight decay 0
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("shape", [(4,), (1, 4), (3, 1)])
def test_a_gradient_that_would_broadcast_is_refused(name, shape):
    variable = keras.Variable(np.ones((3, 4), "float32"), name="kernel")
    with pytest.raises(ValueError, match=rf"gradient of variable '.*kernel' has shape \(.*\); it must have the variable's shape \(3, 4\)"):
        OPTIMIZERS[name]().apply_gradients([(np.ones(shape, "float32"), variable)])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_an_integer_variable_is_refused(name):
    variable = keras.Variable(np.ones((3, 4), "int32"), name="counts", trainable=True)
    with pytest.raises(ValueError, match=r"trains floating-point variables only; received variable '.*counts' of dtype int32"):
        OPTIMIZERS[name]().apply_gradients([(np.ones((3, 4), "int32"), variable)])


@pytest.mark.parametrize("name", ["lamb", "lamb16"])
def test_a_bfloat16_variable_is_refused_by_lamb(name):
    """β2 = 0.999 is 1.0 in bfloat16: the bias correction would be 0 and the
    variable would never move."""
    variable = keras.Variable(np.ones((3, 4)), dtype="bfloat16", name="kernel")
    with pytest.raises(ValueError, match=r"cannot train bfloat16 variable '.*kernel'.*float32"):
        OPTIMIZERS[name]().apply_gradients([(np.ones((3, 4), "float32"), variable)])


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_raw_tf_variable_trains_as_a_keras_variable(name):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    value = rng.normal(size=(2, 3)).astype("float32")
    gradient = rng.normal(size=(2, 3)).astype("float32")
    results = []
    for variable in (tf.Variable(value), keras.Variable(value)):
        OPTIMIZERS[name]().apply_gradients([(tf.constant(gradient), variable)])
        results.append(np.array(variable.numpy()))
    assert not np.array_equal(results[0], value)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's BCOO (run by tests/test_jax_backend.py)")
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_sparse_bcoo_gradients_give_the_dense_result(name):
    import jax.numpy as jnp
    from jax.experimental import sparse

    rng = np.random.default_rng(0)
    value = rng.normal(size=(6, 3)).astype("float32")
    dense = rng.normal(size=(6, 3)).astype("float32")
    dense[[1, 4]] = 0.0  # rows without a gradient, as in an embedding table
    results = []
    for gradient in (sparse.BCOO.fromdense(jnp.asarray(dense)), jnp.asarray(dense)):
        variable = keras.Variable(value)
        optimizer = OPTIMIZERS[name]()
        for _ in range(2):
            optimizer.apply_gradients([(gradient, variable)])
        results.append(np.array(variable.numpy()))
    assert not np.array_equal(results[0], value)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_nested_list_gradient_trains_as_an_array(name):
    """Keras's own optimizers take one (it has no `shape` to check)."""
    gradient = [[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]
    results = []
    for value in (gradient, np.array(gradient, "float32")):
        variable = keras.Variable(np.ones((2, 3), "float32"))
        OPTIMIZERS[name]().apply_gradients([(value, variable)])
        results.append(np.array(keras.ops.convert_to_numpy(variable)))
    np.testing.assert_array_equal(results[0], results[1])
