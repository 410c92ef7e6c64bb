"""The restructured XLA step for vectors and thin matrices too (flattened
parameters): what XLA writes to memory, as `test_xla_fusion.py` checks for
kernels, and the matrix view their norms take."""

import math
import re

import pytest

import lamb
from lamb.optimizers import xla_cpu
from tests.optimizers.test_xla_fusion import optimized_step


@pytest.mark.parametrize(
    "shape, columns",
    [((1000, 1000), 1000), ((1024, 4096), 2048), ((1_000_000,), 2000), ((4096, 8), 2048),
     ((2**20,), 2048), ((65537,), None), ((8, 8, 1021),  1021), ((15,), None)],
)
def test_matrix_view_of_the_norms(shape, columns):
    assert xla_cpu.matvec_columns(shape) == columns


@pytest.mark.xla_structure
@pytest.mark.parametrize("shape", [(2**17,), (8192, 8)], ids=["vector", "thin_matrix"])
@pytest.mark.parametrize(
    "make_optimizer, float_outputs",
    [(lambda: lamb.LAMB(1e-3, weight_decay=0.01), 3), (lambda: lamb.LARS(1.0, weight_decay=1e-4), 2)],
    ids=["lamb", "lars"],
)
def test_xla_writes_only_the_new_state_for_any_rank(make_optimizer, float_outputs, shape):
    """Neither u, its square nor w² is written: only the new state."""
    entry = optimized_step(make_optimizer(), [shape])
    # Every f32 tensor computed, by shape: any view of the variable's size counts.
    written = re.findall(r"^\s*%\S+ = f32\[([\d,]+)\]\S* (\w+)\(", entry, flags=re.MULTILINE)
    full_size = [op for dims, op in written
                 if math.prod(int(d) for d in dims.split(",")) == math.prod(shape)]
    assert full_size.count("fusion") == float_outputs, written


@pytest.mark.xla_structure
@pytest.mark.parametrize(
    "make_optimizer, float_outputs",
    [(lambda: lamb.LAMB(1e-3, weight_decay=0.01), 3), (lambda: lamb.LARS(1e-3, weight_decay=0.01), 2)],
    ids=["lamb", "lars"],
)
def test_the_users_call_takes_the_restructured_step(make_optimizer, float_outputs):
    """As a user's script calls it (`benchmarks/optimizer_step.py`): raw
    `tf.Variable` vectors, the optimizer built by the first call of
    `tf.function(lambda grads: optimizer.apply_gradients(...), jit_compile=True)`,
    which returns `iterations`: still only the new state is written."""
    import tensorflow as tf

    shape = (2**17,)
    variables = [tf.Variable(tf.random.normal(shape, seed=i)) for i in range(2)]
    gradients = [tf.random.normal(shape, seed=10 + i) for i in range(2)]
    optimizer = make_optimizer()
    step = tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)), jit_compile=True)
    step(gradients)
    hlo = step.experimental_get_compiler_ir(gradients)(stage="optimized_hlo")
    written = re.findall(r"^\s*%\S+ = f32\[131072\]\S* (\w+)\(", hlo[hlo.index("\nENTRY"):],
                         flags=re.MULTILINE)
    assert written.count("fusion") == 2 * float_outputs, written
