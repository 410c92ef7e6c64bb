"""Skipping the steps whose gradients are not finite
(`skip_nonfinite_gradients`, like optax's `apply_if_finite`): a mixin of
`base.WeightDecayOptimizer` with the counters it keeps."""

import keras
from keras import ops

from lamb._checks import check_bool, check_int
from lamb.optimizers import xla_cpu
from lamb.optimizers.norms import scaled_global_norm


class SkipsNonfiniteSteps:
    """Skips every step whose gradient holds an inf or NaN, where
    `skip_nonfinite_gradients` (see `WeightDecayOptimizer` for the
    arguments). Where global-norm clipping will clip exactly the step's
    gradients, their global norm is computed once here and kept in
    `_step_global_norm` for the clipping."""

    def _init_skipping(self, skip_nonfinite_gradients, max_consecutive_skipped_steps):
        """Checks and keeps the constructor's two arguments."""
        self.skip_nonfinite_gradients = check_bool(
            "skip_nonfinite_gradients", skip_nonfinite_gradients
        )
        self.max_consecutive_skipped_steps = None
        if max_consecutive_skipped_steps is not None:
            if not self.skip_nonfinite_gradients:
                raise ValueError(
                    "`max_consecutive_skipped_steps` needs skip_nonfinite_gradients=True; "
                    f"received max_consecutive_skipped_steps={max_consecutive_skipped_steps!r}."
                )
            self.max_consecutive_skipped_steps = check_int(
                "max_consecutive_skipped_steps", max_consecutive_skipped_steps, low=0
            )
        self._skipped_steps = None
        self._consecutive_skipped_steps = None
        self._step_global_norm = None

    def _build_skip_counters(self):
        """The optimizer variables that count skipped steps (where used)."""
        if self.skip_nonfinite_gradients:
            self._skipped_steps = self.add_variable(
                shape=(), dtype="int64", initializer="zeros", name="skipped_steps"
            )
        if self.max_consecutive_skipped_steps is not None:
            self._consecutive_skipped_steps = self.add_variable(
                shape=(), dtype="int64", initializer="zeros", name="consecutive_skipped_steps"
            )

    @property
    def skipped_steps(self):
        """How many steps `skip_nonfinite_gradients` skipped (0 when off)."""
        if self._skipped_steps is None:
            return 0
        return int(ops.convert_to_numpy(self._skipped_steps))

    def _backend_apply_gradients(self, grads, trainable_variables):
        if not self.skip_nonfinite_gradients:
            return super()._backend_apply_gradients(grads, trainable_variables)
        try:
            if keras.backend.backend() == "tensorflow":
                return self._apply_if_finite_tensorflow(grads, trainable_variables)
            return self._apply_if_finite_by_selection(grads, trainable_variables)
        finally:
            self._step_global_norm = None

    def _step_gradients(self, grads, trainable_variables):
        """`grads`; under Keras's `gradient_accumulation_steps`, `grads` plus
        the step's accumulated sum (non-finite once any micro-batch was)."""
        if not self.gradient_accumulation_steps:
            return grads
        return [
            gradient + self._accumulated_gradients[self._get_variable_index(variable)].value
            for gradient, variable in zip(grads, trainable_variables)
        ]

    def _all_finite(self, grads, trainable_variables):
        """Whether the step's gradients (`_step_gradients`) are all finite.
        Where clipping will clip exactly these gradients (one replica, no
        Keras accumulation), from their global norm, kept for the clipping:
        one pass over them, not two."""
        if self.global_clipnorm and not self.gradient_accumulation_steps and xla_cpu.one_replica():
            self._step_global_norm = scaled_global_norm(grads)
            return ops.isfinite(self._step_global_norm[1])
        return all_finite(self._step_gradients(grads, trainable_variables))

    def _ends_step(self):
        """Whether this `apply` ends an optimizer step: always, except on the
        micro-batches Keras's `gradient_accumulation_steps` only accumulates."""
        if not self.gradient_accumulation_steps:
            return ops.convert_to_tensor(True)
        return ops.equal((self._iterations + 1) % self.gradient_accumulation_steps, 0)

    def _skip_step(self):
        self._skipped_steps.assign_add(1)
        # `apply` adds 1 back: the step's micro-batches are consumed and
        # `iterations` (optimizer steps) stays.
        self._iterations.assign_sub(self.gradient_accumulation_steps or 1)
        if self.gradient_accumulation_steps:
            self._backend_reset_gradient_accumulators()

    def _applies(self, finite):
        """Whether this `apply` runs as Keras runs it: on a micro-batch that
        only accumulates, always; on one that ends a step, where `finite`, or
        where the `max_consecutive_skipped_steps` limit is spent (an error
        under TensorFlow outside XLA). Counts the consecutive skipped steps."""
        ends_step = self._ends_step()
        nonfinite_step = ops.logical_and(ends_step, ops.logical_not(finite))
        if self.max_consecutive_skipped_steps is None:
            return ops.logical_not(nonfinite_step)
        counter = self._consecutive_skipped_steps
        given_up = ops.logical_and(
            nonfinite_step, counter >= self.max_consecutive_skipped_steps
        )
        counter.assign(
            ops.where(
                ends_step, (counter + 1) * ops.cast(nonfinite_step, counter.dtype), counter.value
            )
        )
        if keras.backend.backend() == "tensorflow" and not xla_cpu.compiling_with_xla():
            import tensorflow as tf

            tf.debugging.assert_equal(
                given_up, False,
                message="The gradients were not finite for more than "
                f"max_consecutive_skipped_steps={self.max_consecutive_skipped_steps} "
                "consecutive steps (skip_nonfinite_gradients): training stops. Lower "
                "the learning rate or check the data",
            )
        return ops.logical_or(ops.logical_not(nonfinite_step), given_up)

    def _apply_if_finite_tensorflow(self, grads, trainable_variables):
        """A `cond` around the step; in the cross-replica context, with every
        replica's verdict combined, where the strategy needs merge calls
        (a `cond` cannot hold one, and the step makes one)."""
        import tensorflow as tf

        apply = super()._backend_apply_gradients
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            ops.cond(
                self._applies(self._all_finite(grads, trainable_variables)),
                lambda: apply(grads, trainable_variables),
                self._skip_step,
            )
            return

        def in_cross_replica_context(strategy, nonfinite_replicas, grads, trainable_variables):
            # The same sum on every replica: take the first.
            nonfinite_replicas = strategy.experimental_local_results(nonfinite_replicas)[0]
            ops.cond(
                self._applies(nonfinite_replicas == 0),
                lambda: strategy.extended.call_for_each_replica(
                    apply, args=(grads, trainable_variables)
                ),
                self._skip_step,
            )

        replica_context = tf.distribute.get_replica_context()
        finite = all_finite(self._step_gradients(grads, trainable_variables))
        nonfinite_replicas = replica_context.all_reduce("SUM", 1 - ops.cast(finite, "int32"))
        replica_context.merge_call(
            in_cross_replica_context, args=(nonfinite_replicas, grads, trainable_variables)
        )

    def _apply_if_finite_by_selection(self, grads, trainable_variables):
        """The step, then every variable it changed set back where the step
        is skipped (JAX's stateless steps cannot assign inside a `cond`; XLA
        fuses the selection into the step). Keras's own step has already
        reset the accumulators of a step that ends."""
        applies = self._applies(self._all_finite(grads, trainable_variables))
        kept = [self._iterations, self._consecutive_skipped_steps]
        kept = {id(variable) for variable in kept + getattr(self, "_accumulated_gradients", [])}
        changed = list(trainable_variables) + [
            variable for variable in self.variables if id(variable) not in kept
        ]
        before = [ops.copy(variable.value) for variable in changed]
        super()._backend_apply_gradients(grads, trainable_variables)
        for variable, old in zip(changed, before):
            variable.assign(ops.where(applies, variable.value, old))
        skipped = 1 - ops.cast(applies, "int64")
        self._skipped_steps.assign_add(skipped)
        self._iterations.assign_sub(
            ops.cast(skipped, self._iterations.dtype) * (self.gradient_accumulation_steps or 1)
        )


def all_finite(tensors):
    """Whether every element of `tensors` (`None`s skipped) is finite."""
    return ops.all(
        ops.stack([ops.all(ops.isfinite(t)) for t in tensors if t is not None])
    )

