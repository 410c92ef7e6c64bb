"""The scheduled twins of LAMB's and LARS's `update_step` (`xla_cpu`) give
the plain step's values: each case runs on large variables (the twin's) as
it ships, then with the twin switched off (`takes_scheduled_step` false:
every variable takes `update_step`), and the two results are compared. So
deleting a twin would change speed only.

Under TensorFlow, "eager" runs the twin on CPUs with `PlainPlan` (norms by
matrix-vector products) and "jit" (`jit_compile=True`) with `FusedPlan`;
under JAX, where every step is compiled, both run `JaxCpuPlan` or
`FusedPlan`.
"""

import keras
import numpy as np
import pytest
from keras import ops

import lamb
from lamb.optimizers import xla_cpu
from tests.optimizers.helpers import gradient_sequence, initial_values, run_optimizer
from tests.optimizers.test_fast_path_values import FAST_PATH_SPECS, LARGE, LARS_CASES

NUM_STEPS = 12
MODES = ["eager", "jit"]
PATHS = [path for path, _, _ in FAST_PATH_SPECS]

# The two steps round differently (bias correction as two factors, norms
# summed in another order): measured at most 1.7e-7 of each variable's
# largest |w| after 12 steps. The twin's copy of u for its norm with ε left
# unscaled (ε beside 2·m and 4·v) moves the LAMB cases' weights by 4e-6.
TOLERANCE = 5e-7

CASES = {
    "lamb_decay_exclusions_bounds": lambda: lamb.LAMB(
        learning_rate=0.01,
        epsilon=1e-4,  # large enough for an error in the twin's ε to show
        weight_decay=0.01,
        exclude_from_weight_decay=["bias", "layer_norm", "wide"],
        include_in_weight_decay=["wide"],
        exclude_from_layer_adaptation=["bias", "layer_norm", "head"],
        weight_norm_bounds=(1.0, 300.0),
        trust_ratio_bounds=(0.0, 0.9),
    ),
    "lamb_no_bias_correction_layer_decay": lambda: lamb.LAMB(
        learning_rate=0.02,
        beta_1=0.8,
        beta_2=0.99,
        weight_decay=0.1,
        bias_correction=False,
        layer_decay=0.5,
        layer_index=lambda variable: 0 if "encoder" in variable.path else None,
    ),
    "lamb16": lambda: lamb.LAMB16(
        learning_rate=0.01, weight_decay=0.01, exclude_from_weight_decay=["bias", "layer_norm"]
    ),
    **{
        f"lars_{name}": lambda kwargs=kwargs: lamb.LARS(**kwargs)
        for name, kwargs in LARS_CASES.items()
    },
    "lars_trust_ratio_bounds": lambda: lamb.LARS(
        learning_rate=1.0, weight_decay=1e-3, eeta=0.01, trust_ratio_bounds=(0.001, 0.004)
    ),
}


def twin_and_plain(make_optimizer, run, monkeypatch):
    """`run(optimizer)` with the twins as shipped, then with them off; and
    the paths of the variables each run gave to the twin."""
    results, twin_paths = [], []
    for twin in (True, False):
        with monkeypatch.context() as patch:
            if not twin:
                patch.setattr(xla_cpu.StepSchedule, "takes_scheduled_step", _never)
            paths = set()
            results.append(run(_recording_twin_calls(make_optimizer(), paths)))
            twin_paths.append(paths)
    return results, twin_paths


def _never(schedule, index):
    return False


def _recording_twin_calls(optimizer, paths):
    """`optimizer`, adding to `paths` the path of each variable its
    `_scheduled_update_step` is given."""
    scheduled_update_step = optimizer._scheduled_update_step

    def recorded(gradient, variable, learning_rate, plan):
        paths.add(optimizer._trainable_variables[optimizer._get_variable_index(variable)].path)
        return scheduled_update_step(gradient, variable, learning_rate, plan)

    optimizer._scheduled_update_step = recorded
    return optimizer


def takes_twin(mode):
    """Whether large variables take the twin in `mode` (on accelerators,
    eager TensorFlow steps take `update_step`)."""
    return mode == "jit" or keras.backend.backend() == "jax" or xla_cpu.all_devices_are_cpus()


def assert_equal_values(twin, plain, paths):
    for path, a, b in zip(paths, twin, plain):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE * np.abs(b).max(), err_msg=path)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_twin_gives_the_plain_steps_values(case, mode, monkeypatch):
    values = initial_values(specs=FAST_PATH_SPECS)
    gradients = gradient_sequence(NUM_STEPS, specs=FAST_PATH_SPECS)

    def run(optimizer):
        return run_optimizer(optimizer, values, gradients, mode, FAST_PATH_SPECS)

    (twin, plain), (twin_paths, plain_paths) = twin_and_plain(CASES[case], run, monkeypatch)
    assert (sorted(twin_paths), plain_paths) == (sorted(LARGE) if takes_twin(mode) else [], set())
    assert_equal_values(twin, plain, PATHS)


# ----------------------------------------------------------------------------
# Sparse gradients: rows of an embedding table (repeated rows summed), as
# `tf.IndexedSlices` under TensorFlow and as JAX's `BCOO` under JAX.

TABLE_SHAPE = (4096, 16)  # LARGE_VARIABLE_SIZE elements
ROWS_PER_STEP = 64


def _sparse_rows(num_steps=6):
    rng = np.random.default_rng(2)
    return [
        (
            rng.integers(0, 512, size=ROWS_PER_STEP).astype("int32"),  # with repeats
            rng.normal(scale=0.1, size=(ROWS_PER_STEP, TABLE_SHAPE[1])).astype("float32"),
        )
        for _ in range(num_steps)
    ]


def _run_sparse(optimizer, mode):
    table = keras.Variable(
        np.random.default_rng(0).normal(size=TABLE_SHAPE).astype("float32"), name="table"
    )
    optimizer.build([table])
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        def step(indices, rows):
            gradient = tf.IndexedSlices(rows, indices, tf.constant(TABLE_SHAPE))
            optimizer.apply_gradients([(gradient, table)])

        if mode == "jit":
            step = tf.function(step, jit_compile=True)
        for indices, rows in _sparse_rows():
            step(tf.constant(indices), tf.constant(rows))
    else:
        import jax
        from jax.experimental import sparse

        def step(optimizer_values, indices, rows, table_value):
            gradient = sparse.BCOO((rows, indices[:, None]), shape=TABLE_SHAPE)
            return optimizer.stateless_apply(optimizer_values, [gradient], [table_value])

        if mode == "jit":
            step = jax.jit(step)
        optimizer_values = [v.value for v in optimizer.variables]
        table_value = table.value
        for indices, rows in _sparse_rows():
            (table_value,), optimizer_values = step(optimizer_values, indices, rows, table_value)
        table.assign(table_value)
    return [ops.convert_to_numpy(table)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "case", ["lamb_decay_exclusions_bounds", "lamb16", "lars_nesterov", "lars_separate_trust_ratio"]
)
def test_the_twin_gives_the_plain_steps_values_for_sparse_gradients(case, mode, monkeypatch):
    if keras.backend.backend() == "jax" and mode == "eager":
        pytest.skip("under JAX every step is compiled: the jit case")
    (twin, plain), (twin_paths, plain_paths) = twin_and_plain(
        CASES[case], lambda optimizer: _run_sparse(optimizer, mode), monkeypatch
    )
    assert (twin_paths, plain_paths) == ({"table"} if takes_twin(mode) else set(), set())
    assert_equal_values(twin, plain, ["table"])
