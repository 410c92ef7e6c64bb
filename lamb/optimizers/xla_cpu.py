"""How the layer-adaptive steps are scheduled for speed, apart from their math.

Each optimizer's `update_step` is its algorithm as written. LAMB and LARS
also have a twin, `_scheduled_update_step(gradient, variable,
learning_rate, plan)`: the same values up to float rounding, computed in
the order and form that a plan asks for. `StepSchedule.plan` says which variables take the
twin (large ones on CPUs, and under XLA: `takes_scheduled_step`); its
plans answer the five things that scheduling changes:

- `plan.norm(x)`: ‖x‖;
- `plan.ordered(x)`: `x`, made to wait for the previous variable's update;
- `plan.separate(value, rewrite)`: `value`, or `rewrite()`, the same value
  written as its own expression;
- `plan.for_two_consumers(value, rewrite)`: `value` for two consumers, as
  a pair: the same tensor twice, or `value` and `rewrite()`;
- `plan.done(variable)`: the end of `variable`'s step.

Small variables, and large ones on accelerators outside XLA, take
`update_step`. Large variables (at least `LARGE_VARIABLE_SIZE` elements)
take the twin: on CPUs outside XLA with `PlainPlan` (only the norms change,
to `l2_norm_by_matvec`), under XLA with `FusedPlan`, where a step makes
several passes over a large variable's data and each costs a trip to main
memory:

- XLA fuses an expression into one consumer; a value with two consumers
  (LAMB's u: its norm and the update) is written to memory and read back
  twice, which on CPU costs as much as the rest of the step. `separate`
  gives each consumer its own copy.
- XLA schedules the passes of independent variables breadth-first (every
  variable's first pass, then every second pass, ...), so each pass reads
  its data back from main memory. On CPUs `ordered` and `done` chain one
  variable after another, so that later passes find the data in cache:
  `done` leaves `zero_after(variable)`, and `ordered` adds it to scalars
  the next large variable's first passes read.
- XLA on CPU runs full reductions several times below memory speed: norms
  are matrix-vector products there (`l2_norm_by_matvec`).

`JaxCpuPlan` takes `FusedPlan`'s place under JAX on CPUs when JAX's XLA
does not fuse x² into a matrix-vector product (`xla_fuses_square_into_matvec`;
jaxlib 0.10 does not). That XLA runs reductions at memory speed instead, as
YNNPACK fusions, but writes into such a fusion every full-size broadcast of
a runtime scalar it would absorb (the bias corrections, the ordering zero):
`FusedPlan`'s step there writes w², u² and such broadcasts to memory and
reads them back. `JaxCpuPlan` takes the norms as plain reductions of values
without runtime scalars (w itself; u as written to memory) and has LAMB's
u written once, read by its norm and by the update
(`for_two_consumers`, an optimization barrier that keeps XLA from pulling
u's expression into the reduction). The chain stays, on scalars.

The schedule also computes per-step scalars once for all variables
(`per_step`) and writes each step's layer statistics in one assignment
(`collect_statistics`).
"""

import contextlib
import functools
import math
import re

import keras
from keras import ops

from lamb.optimizers.norms import l2_norm

# Under XLA, variables with at least this many elements get `FusedPlan`;
# smaller ones, whose data stays in a core's cache between passes, keep the
# plain step, which is shorter to trace and compile.
LARGE_VARIABLE_SIZE = 2**16

# XLA on CPU fuses x² into the matrix-vector product only when the vector
# is under 16 KiB (kFusionThresholdBytes): else x² is written to memory.
MAX_FUSED_VECTOR_LENGTH = 4096


def l2_norm_by_matvec(x):
    """‖x‖ as the sum of a matrix-vector product of x² with ones.

    The same value as `l2_norm` up to float32 summation order. XLA on CPU
    runs full reductions several times slower than memory speed, while it
    fuses x² into a matrix-vector product that runs at memory speed. Only
    for CPUs: accelerators may run float32 products at reduced precision
    (TF32, bfloat16 passes).
    """
    columns = matvec_columns(x.shape)
    if columns is None:
        return l2_norm(x)
    rows = ops.reshape(ops.square(x), (-1, columns))
    return ops.sqrt(ops.sum(ops.matmul(rows, ops.ones((columns, 1), x.dtype))))


def matvec_columns(shape):
    """The row length of `l2_norm_by_matvec`'s matrix view of a tensor of
    `shape`, or None (then a plain reduction): the last dimension if at
    least 16, else (vectors, thin matrices) the largest divisor of the size
    in [16, 2048]. Longer rows are split in halves: a (1024, 4096) kernel as
    (2048, 2048)."""
    if len(shape) >= 2 and shape[-1] >= 16:
        columns = shape[-1]
    else:
        size = math.prod(shape)
        columns = next((c for c in range(2048, 15, -1) if size % c == 0), None)
        if columns is None:
            return None
    while columns >= MAX_FUSED_VECTOR_LENGTH and columns % 2 == 0:
        columns //= 2
    return columns


def all_devices_are_cpus():
    return all(
        device.lower().startswith("cpu") for device in keras.distribution.list_devices()
    )


def compiling_with_xla():
    """Whether the ops being built now will be compiled by XLA.

    True under JAX, and under TensorFlow inside `jit_compile=True` functions.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend != "tensorflow":
        return False
    import tensorflow as tf

    try:  # TensorFlow's own test for this; not a public API.
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def one_replica():
    """False inside a TensorFlow distribution strategy with several replicas."""
    if keras.backend.backend() != "tensorflow":
        return True
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync == 1


def zero_after(variable):
    """0.0 (float32) computed from `variable`'s value: a scalar that depends
    on the last update of `variable` without changing what it is added to
    (a form XLA does not simplify away, and 0 even for NaN weights)."""
    zero_or_nan = ops.minimum(ops.abs(ops.reshape(variable, (-1,))[0]), 0.0)
    return ops.cast(ops.where(zero_or_nan == 0.0, zero_or_nan, 0.0), "float32")


class PlainPlan:
    """The step in its written order, with `l2_norm_by_matvec` norms: large
    variables on CPUs outside XLA."""

    # Whether 8-bit moments are recomputed from their codes in each consumer
    # (`moments.Float8Moments`) rather than written once in float32.
    recomputes_moments = False

    def norm(self, x):
        return l2_norm_by_matvec(x)

    def ordered(self, x):
        return x

    def separate(self, value, rewrite):
        return value

    def for_two_consumers(self, value, rewrite):
        return value, value

    def done(self, variable, zero=None):
        """Nothing to do (`zero`: see `FusedPlan.done`)."""


class FusedPlan:
    """The step of a large variable under XLA (see the module docstring)."""

    recomputes_moments = True

    def __init__(self, schedule, dtype):
        self._schedule = schedule
        self._dtype = dtype
        self._norm = l2_norm_by_matvec if schedule.on_cpus else l2_norm

    def norm(self, x):
        return self._norm(self.ordered(x))

    def ordered(self, x):
        """`x` plus the zero the previous large variable's `done` left."""
        zero = self._schedule.previous_step
        return x if zero is None else x + ops.cast(zero, self._dtype)

    def separate(self, value, rewrite):
        """`rewrite()`: the same value as `value`, written so differently
        that XLA's common-subexpression elimination keeps the two apart."""
        return rewrite()

    def for_two_consumers(self, value, rewrite):
        """`value` and `rewrite()`: each consumer fuses its own copy."""
        return value, self.separate(value, rewrite)

    def done(self, variable, zero=None):
        """Chains the next large variable's step after `variable`'s update,
        on CPUs with one replica (`zero`: `zero_after(variable)` if built)."""
        if self._schedule.on_cpus and one_replica():
            self._schedule.previous_step = zero_after(variable) if zero is None else zero


class JaxCpuPlan(FusedPlan):
    """The step of a large variable under JAX on CPUs whose XLA reduces at
    memory speed but does not fuse x² into matrix-vector products (see the
    module docstring). LAMB16's moments are written once in float32: there
    each recomputing consumer cost more than the write (LAMB16's step 3.6x
    LAMB's, 1.5x written once, 10 x (1024, 1000))."""

    recomputes_moments = False

    def norm(self, x):
        """‖x‖ as a plain reduction of `x`, not made to wait for the previous
        variable (the ordering zero's broadcast would be written to memory):
        XLA reads `x` once."""
        return l2_norm(x)

    def for_two_consumers(self, value, rewrite):
        """`value` written to memory once, for both consumers."""
        import jax

        written = jax.lax.optimization_barrier(value)
        return written, written


@functools.cache
def xla_fuses_square_into_matvec():
    """Whether JAX's XLA computes x² inside the matrix-vector product of
    `l2_norm_by_matvec` (as TensorFlow's does) instead of writing x² to
    memory first: `FusedPlan`'s premise on CPUs. Looked up once per process
    in the optimized HLO of a small product."""
    import jax
    import jax.numpy as jnp

    def norm_squared(x):
        return jnp.matmul(jnp.square(x), jnp.ones((256, 1), x.dtype))

    hlo = jax.jit(norm_squared).lower(jax.ShapeDtypeStruct((256, 256), jnp.float32)).compile().as_text()
    entry = hlo[hlo.index("\nENTRY"):]
    # x² on its own: a multiply, or a fusion, with a (256, 256) result.
    return not re.search(r"= f32\[256,256\]\S* (fusion|multiply)\(", entry)


class StepSchedule:
    """The plans of one optimizer's variables, and its per-step state."""

    def __init__(self, var_list):
        self.on_cpus = all_devices_are_cpus()
        self._large = [math.prod(variable.shape) >= LARGE_VARIABLE_SIZE for variable in var_list]
        self.previous_step = None
        self._scalars = None
        self._statistics = None

    def takes_scheduled_step(self, index):
        """Whether variable `index` takes its optimizer's scheduled twin of
        `update_step` in the step being built (see the module docstring)."""
        return self._large[index] and (self.on_cpus or compiling_with_xla())

    def plan(self, index, dtype):
        """The plan of variable `index` (of `dtype`) for the scheduled step
        being built (where `takes_scheduled_step`)."""
        if compiling_with_xla():
            if self.on_cpus and keras.backend.backend() == "jax" and not xla_fuses_square_into_matvec():
                return JaxCpuPlan(self, dtype)
            return FusedPlan(self, dtype)
        return PlainPlan()

    @contextlib.contextmanager
    def step(self):
        """Fresh per-step state while one step is built. Yields a dict that
        `collect_statistics` fills, or None with several replicas (then each
        variable's step writes its own row)."""
        self.previous_step, self._scalars = None, {}
        self._statistics = {} if one_replica() else None
        try:
            yield self._statistics
        finally:
            self.previous_step, self._scalars, self._statistics = None, None, None

    def per_step(self, key, compute):
        """`compute()`, computed once per step for all variables (with one
        replica; else once per variable): shorter graphs, faster tracing."""
        if self._scalars is None or not one_replica():
            return compute()
        if key not in self._scalars:
            self._scalars[key] = compute()
        return self._scalars[key]

    def collect_statistics(self, index, row):
        """Keeps variable `index`'s statistics row for one assignment at the
        end of the step; False where the caller must write it itself."""
        if self._statistics is None:
            return False
        self._statistics[index] = row
        return True
