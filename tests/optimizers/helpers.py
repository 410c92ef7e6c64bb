"""Variables, gradients and step runners shared by the optimizer tests."""

import re

import keras
import numpy as np
from keras import ops

# (path, shape, initial value kind). The last variable is all zeros and always
# gets a zero gradient: both norms of the trust ratio are zero there.
VARIABLE_SPECS = [
    ("encoder/dense/kernel", (6, 5), "normal"),
    ("encoder/dense/bias", (5,), "zeros"),
    ("encoder/layer_norm/gamma", (5,), "ones"),
    ("head/kernel", (5, 3), "normal"),
    ("encoder/wide/kernel", (12, 40), "normal"),
    ("frozen/kernel", (4,), "zeros"),
]
NUM_STEPS = 24


def initial_values(seed=0, specs=VARIABLE_SPECS):
    rng = np.random.default_rng(seed)
    values = []
    for _, shape, kind in specs:
        if kind == "normal":
            values.append(rng.normal(size=shape).astype("float32"))
        elif kind == "ones":
            values.append(np.ones(shape, "float32"))
        else:
            values.append(np.zeros(shape, "float32"))
    return values


def gradient_sequence(num_steps=NUM_STEPS, seed=1, specs=VARIABLE_SPECS):
    """Per step, one gradient per variable: `head/kernel` gets a zero gradient
    on even steps, `frozen/kernel` always."""
    rng = np.random.default_rng(seed)
    sequence = []
    for step in range(num_steps):
        grads = []
        for path, shape, _ in specs:
            grad = rng.normal(scale=0.1, size=shape).astype("float32")
            if path == "frozen/kernel" or (path == "head/kernel" and step % 2 == 0):
                grad = np.zeros(shape, "float32")
            grads.append(grad)
        sequence.append(grads)
    return sequence


def make_variables(values, specs=VARIABLE_SPECS):
    """Keras variables whose `path`s are those of `specs`."""
    variables = []
    for (path, _, _), value in zip(specs, values):
        *scopes, name = path.split("/")
        variables.append(_in_scopes(scopes, lambda: keras.Variable(value, name=name)))
    return variables


def _in_scopes(scopes, create):
    if not scopes:
        return create()
    with keras.name_scope(scopes[0]):
        return _in_scopes(scopes[1:], create)


def matches(patterns, path):
    return any(re.search(pattern, path) for pattern in patterns or ())


def run_optimizer(optimizer, values, gradients, mode, specs=VARIABLE_SPECS):
    """Applies `gradients` step by step to variables of `specs` (path, shape,
    initial value kind); `mode` is "eager" or "jit" (XLA)."""
    variables = make_variables(values, specs)
    optimizer.build(variables)
    if mode == "eager":
        for grads in gradients:
            optimizer.apply_gradients(zip([ops.convert_to_tensor(g) for g in grads], variables))
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(grads):
            optimizer.apply_gradients(zip(grads, variables))

        for grads in gradients:
            step([tf.constant(g) for g in grads])
    elif keras.backend.backend() == "jax":
        import jax

        step = jax.jit(optimizer.stateless_apply)
        optimizer_values = [v.value for v in optimizer.variables]
        model_values = [v.value for v in variables]
        for grads in gradients:
            model_values, optimizer_values = step(optimizer_values, grads, model_values)
        for variable, value in zip(variables, model_values):
            variable.assign(value)
        for variable, value in zip(optimizer.variables, optimizer_values):
            variable.assign(value)
    else:
        raise NotImplementedError(keras.backend.backend())
    return [ops.convert_to_numpy(v) for v in variables]
