"""What JAX's XLA writes to memory in one optimizer step on CPU, with the
plan the schedule picks there (`xla_cpu.JaxCpuPlan` where XLA does not fuse
x² into matrix-vector products, as in jaxlib 0.10). The values of the step
are checked against the NumPy references by `test_fast_path_values.py`,
which runs under JAX too (`tests/test_jax_backend.py`)."""

import re

import keras
import numpy as np
import pytest

import lamb
from lamb.optimizers import xla_cpu

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax" or not xla_cpu.all_devices_are_cpus(),
    reason="JAX on CPU",
)

SHAPE = (512, 128)  # large enough for the restructured step (LARGE_VARIABLE_SIZE)


def optimized_step(optimizer, shapes):
    """The entry computation of the optimized HLO of one jit-compiled step
    (weights and state donated, as Keras's JAX trainer does)."""
    import jax

    rng = np.random.default_rng(0)
    variables = [
        keras.Variable(rng.normal(size=shape).astype("float32"), name=f"kernel_{i}")
        for i, shape in enumerate(shapes)
    ]
    gradients = [jax.numpy.asarray(rng.normal(size=shape).astype("float32")) for shape in shapes]
    optimizer.build(variables)

    def step(trainable, state, gradients):
        return optimizer.stateless_apply(state, gradients, trainable)

    hlo = (
        jax.jit(step, donate_argnums=(0, 1))
        .lower([v.value for v in variables], [v.value for v in optimizer.variables], gradients)
        .compile()
        .as_text()
    )
    return hlo[hlo.index("\nENTRY") :]


def written(entry, dtype, shape):
    """The ops of `entry` other than parameters that compute `dtype[shape]` tensors."""
    shape = re.escape(f"{dtype}[{shape[0]},{shape[1]}]")
    ops = re.findall(rf"^\s*%\S+ = {shape}\S* (\w+)\(", entry, flags=re.MULTILINE)
    return [op for op in ops if op != "parameter"]


def test_the_schedule_picks_the_jax_cpu_plan_exactly_where_xla_writes_squares():
    schedule = xla_cpu.StepSchedule([keras.Variable(np.zeros(SHAPE, "float32"))])
    expected = xla_cpu.FusedPlan if xla_cpu.xla_fuses_square_into_matvec() else xla_cpu.JaxCpuPlan
    assert type(schedule.plan(0, "float32")) is expected


def test_the_probe_agrees_with_what_the_fused_plan_writes(monkeypatch):
    """`FusedPlan`'s LAMB step writes only m, v and w where XLA fuses x² into
    the norms' products (the probe's answer), more (w², u²) where not."""
    fuses = xla_cpu.xla_fuses_square_into_matvec()
    monkeypatch.setattr(xla_cpu, "xla_fuses_square_into_matvec", lambda: True)
    outputs = written(optimized_step(lamb.LAMB(1e-3, weight_decay=0.01), [SHAPE]), "f32", SHAPE)
    assert (len(outputs) == 3) == fuses, outputs


@pytest.mark.parametrize(
    "make_optimizer, float_outputs, codes",
    [
        # m, v, u (once, for its norm and the update) and w: neither w², u²
        # nor a full-size broadcast of a scalar is written.
        (lambda: lamb.LAMB(1e-3, weight_decay=0.01), 4, 0),
        (lambda: lamb.LAMB(1e-3, weight_decay=0.0, bias_correction=False), 4, 0),
        # the momentum buffer and w.
        (lambda: lamb.LARS(1.0, weight_decay=1e-4), 2, 0),
        # m and v (once, in float32, for every consumer), u and w, and the
        # two moments' codes.
        (lambda: lamb.LAMB16(1e-3, weight_decay=0.01), 4, 2),
    ],
    ids=["lamb", "lamb_without_decay_or_bias_correction", "lars", "lamb16"],
)
@pytest.mark.parametrize("num_variables", [1, 2])
def test_jax_writes_each_tensor_once(make_optimizer, float_outputs, codes, num_variables):
    if xla_cpu.xla_fuses_square_into_matvec():
        pytest.skip("this XLA fuses x² into matrix-vector products: FusedPlan, as under TensorFlow")
    shapes = [SHAPE, (SHAPE[1], SHAPE[0])][:num_variables]
    entry = optimized_step(make_optimizer(), shapes)
    for shape in shapes:
        assert written(entry, "f32", shape) == ["fusion"] * float_outputs, (shape, entry)
        assert written(entry, "u8", shape) == ["fusion"] * codes, (shape, entry)
