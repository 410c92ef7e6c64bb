"""What XLA writes to memory in one optimizer step, and in which order (the
structure that makes LAMB, LARS and LAMB16 fast on CPU; see
`lamb.optimizers.xla_cpu`)."""

import re

import keras
import numpy as np
import pytest

import lamb

SHAPE = (512, 128)  # large enough for the restructured step (LARGE_VARIABLE_SIZE)
OTHER_SHAPE = (128, 512)  # a second variable, told apart by its shape


def optimized_step(optimizer, shapes):
    """The entry computation of the optimized HLO of one XLA-compiled step
    over variables of `shapes`."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    variables = [
        keras.Variable(rng.normal(size=shape).astype("float32"), name=f"kernel_{i}")
        for i, shape in enumerate(shapes)
    ]
    gradients = [tf.constant(rng.normal(size=shape).astype("float32")) for shape in shapes]
    optimizer.build(variables)

    @tf.function(jit_compile=True)
    def step(gradients):
        optimizer.apply_gradients(zip(gradients, variables))

    hlo = step.experimental_get_compiler_ir(gradients)(stage="optimized_hlo")
    return hlo[hlo.index("\nENTRY") :]


def computed(entry, dtype, shape):
    """The ops (`fusion`, `copy`, ...) of `entry` that compute `dtype[shape]` tensors."""
    shape = re.escape(f"{dtype}[{shape[0]},{shape[1]}]")
    return re.findall(rf"^\s*%\S+ = {shape}\S* (\w+)\(", entry, flags=re.MULTILINE)


@pytest.mark.xla_structure
@pytest.mark.parametrize(
    "make_optimizer, float_outputs, codes",
    [
        # m, v and w: the update direction u is never written to memory.
        (lambda: lamb.LAMB(1e-3, weight_decay=0.01), 3, 0),
        (lambda: lamb.LAMB(1e-3, weight_decay=0.0, bias_correction=False), 3, 0),
        # the momentum buffer and w: g + λ·w is never written to memory.
        (lambda: lamb.LARS(1.0, weight_decay=1e-4), 2, 0),
        # w and the two moments' codes, overwritten in place: neither the
        # float32 moments nor a copy of the old codes are written.
        (lambda: lamb.LAMB16(1e-3, weight_decay=0.01, row_scales=False), 1, 2),
        # With a scale per row, XLA on CPU writes m and v for their row
        # maxima (it fuses no producer into a row reduction); still no copy
        # of the old codes.
        (lambda: lamb.LAMB16(1e-3, weight_decay=0.01), 3, 2),
    ],
    ids=["lamb", "lamb_without_decay_or_bias_correction", "lars", "lamb16_per_tensor", "lamb16"],
)
def test_xla_writes_only_the_new_state(make_optimizer, float_outputs, codes):
    entry = optimized_step(make_optimizer(), [SHAPE])
    written = computed(entry, "f32", SHAPE)
    assert written.count("fusion") == float_outputs, written
    written_codes = [op for op in computed(entry, "u8", SHAPE) if op != "parameter"]
    assert written_codes == ["fusion"] * codes, written_codes


@pytest.mark.xla_structure
def test_xla_fuses_the_norms_of_rows_of_4096():
    """XLA fuses x² into a matrix-vector product only for vectors under
    16 KiB, so rows of 4,096 (BERT-Large's (1024, 4096) kernels) are split:
    neither w² nor u² is written, in either shape."""
    shape, split_shape = (64, 4096), (128, 2048)
    entry = optimized_step(lamb.LAMB(1e-3, weight_decay=0.01), [shape])
    written = computed(entry, "f32", shape) + computed(entry, "f32", split_shape)
    assert written.count("fusion") == 3, written


@pytest.mark.xla_structure
@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: lamb.LAMB(1e-3, weight_decay=0.01),
        lambda: lamb.LARS(1.0, weight_decay=1e-4),
        lambda: lamb.LAMB16(1e-3, weight_decay=0.01),
    ],
    ids=["lamb", "lars", "lamb16"],
)
def test_xla_updates_one_variable_after_the_other(make_optimizer):
    """The second variable's data is first read after the first variable's
    weights are updated (on CPU, its passes then find it in cache)."""
    entry = optimized_step(make_optimizer(), [SHAPE, OTHER_SHAPE])
    lines = entry.splitlines()
    other_parameters = re.findall(
        rf"%(\S+) = \w+\[{OTHER_SHAPE[0]},{OTHER_SHAPE[1]}\]\S* parameter\(", entry
    )
    first_read = min(
        i
        for i, line in enumerate(lines)
        if "parameter(" not in line
        and any(re.search(rf"%{re.escape(p)}[,)]", line) for p in other_parameters)
    )
    first_variable_writes = [
        i
        for i, line in enumerate(lines)
        if re.match(rf"\s*%\S+ = f32\[{SHAPE[0]},{SHAPE[1]}\]\S* fusion\(", line)
    ]
    # The last float32 tensor of the first variable's shape is its new weights.
    assert first_variable_writes[-1] < first_read, "\n".join(lines[: first_read + 1])
