"""What XLA writes to memory in one optimizer step (the structure that makes
LAMB and LARS fast on CPU; see `LayerAdaptiveOptimizer._scaled_step`)."""

import re

import keras
import numpy as np
import pytest

import lamb

SHAPE = (256, 128)


def full_size_buffers(optimizer):
    """The full-size float32 tensors the compiled step of one variable computes."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    variable = keras.Variable(rng.normal(size=SHAPE).astype("float32"), name="kernel")
    gradient = tf.constant(rng.normal(size=SHAPE).astype("float32"))
    optimizer.build([variable])

    @tf.function(jit_compile=True)
    def step(gradient):
        optimizer.apply_gradients([(gradient, variable)])

    hlo = step.experimental_get_compiler_ir(gradient)(stage="optimized_hlo")
    entry = hlo[hlo.index("\nENTRY") :]
    shape = re.escape(f"f32[{SHAPE[0]},{SHAPE[1]}]")
    return re.findall(rf"^\s*%\S+ = {shape}\S* (\w+)\(", entry, flags=re.MULTILINE)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize(
    "make_optimizer, outputs",
    [
        # m, v and w: the update direction u is never written to memory.
        (lambda: lamb.LAMB(1e-3, weight_decay=0.01), 3),
        (lambda: lamb.LAMB(1e-3, weight_decay=0.0, bias_correction=False), 3),
        # the momentum buffer and w: g + λ·w is never written to memory.
        (lambda: lamb.LARS(1.0, weight_decay=1e-4), 2),
    ],
    ids=["lamb", "lamb_without_decay_or_bias_correction", "lars"],
)
def test_xla_writes_only_the_new_state(make_optimizer, outputs):
    written = full_size_buffers(make_optimizer())
    assert written.count("fusion") == outputs, written
