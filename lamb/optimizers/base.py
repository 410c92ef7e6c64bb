"""What the optimizers share: exclusion lists, the trust ratio, layer statistics.

Weight decay here is part of each optimizer's update direction (BERT, LAMB and
LARS all define it that way), so the Keras base class's own decoupled decay
step is switched off; `Optimizer.exclude_from_weight_decay(...)` still works.
"""

import re

import keras
from keras import ops

from lamb._checks import check_bool, check_bounds, check_float, check_int, check_learning_rate
from lamb.optimizers import xla_cpu
from lamb.optimizers.norms import clip_by_global_norm, scaled_global_norm


@keras.saving.register_keras_serializable(package="lamb")
def fewer_than_2_dimensions(variable):
    """A ready exclusion rule: true for variables of fewer than 2 dimensions
    (biases, LayerNorm and BatchNorm scales and offsets), whatever their names."""
    return len(variable.shape) < 2


@keras.saving.register_keras_serializable(package="lamb")
def bert_layer_index(variable):
    """A ready `layer_index` rule for keras-hub's BERT (and this package's
    `lamb.models.bert`): 0 for the embeddings and their LayerNorm, i + 1 for
    `transformer_layer_i`, `None` (the top) for the pooler and the heads."""
    path = variable_path(variable)
    layer = re.search(r"transformer_layer_(\d+)/", path)
    if layer:
        return int(layer.group(1)) + 1
    return 0 if "embedding" in path else None


def variable_path(variable):
    """`variable.path`, or the name of a variable without one (a raw `tf.Variable`)."""
    return getattr(variable, "path", None) or variable.name


def check_keras_keywords(kwargs):
    """`kwargs` of `keras.optimizers.Optimizer` (which checks none of these)
    checked, for the package's optimizers and Keras's own alike: the clipping
    norms and loss scale > 0, `ema_momentum` in [0, 1],
    `gradient_accumulation_steps` an integer ≥ 2 (or None)."""
    for name in ("clipnorm", "global_clipnorm", "clipvalue", "loss_scale_factor"):
        if kwargs.get(name) is not None:
            kwargs[name] = check_float(name, kwargs[name], low=0.0, low_inclusive=False)
    if kwargs.get("ema_momentum") is not None:
        kwargs["ema_momentum"] = check_float(
            "ema_momentum", kwargs["ema_momentum"], 0.0, 1.0, high_inclusive=True
        )
    if kwargs.get("gradient_accumulation_steps") is not None:
        kwargs["gradient_accumulation_steps"] = check_int(
            "gradient_accumulation_steps", kwargs["gradient_accumulation_steps"], low=2
        )
    return kwargs


def compile_rules(name, rules):
    """Rules selecting variables: `None`, a callable `variable -> bool`, or a
    list of regular expressions (matched by `re.search` against
    `variable.path`) and callables; serialized callables (from a config)
    are deserialized. Raises `ValueError` naming `name` and the bad entry."""
    if rules is None:
        return None
    if callable(rules) or isinstance(rules, dict):
        rules = [rules]
    if isinstance(rules, str):
        raise ValueError(
            f"`{name}` must be a list of regular expressions, not a single "
            f"string; received {name}={rules!r}. Did you mean [{rules!r}]?"
        )
    try:
        rules = list(rules)
    except TypeError:
        raise ValueError(
            f"`{name}` must be None, a callable `variable -> bool` or a list of "
            f"regular expressions and callables; received {name}={rules!r}."
        ) from None
    return tuple(_compile_rule(name, rule) for rule in rules)


def _compile_rule(name, rule):
    if isinstance(rule, dict):
        rule = keras.saving.deserialize_keras_object(rule)
    if callable(rule):
        return rule
    try:
        return re.compile(rule)
    except (re.error, TypeError) as error:
        raise ValueError(
            f"`{name}` holds an invalid regular expression {rule!r}: {error}"
        ) from None


def matches_any(rules, variable):
    """Whether one of `rules` (`compile_rules`) selects `variable`."""
    return any(
        rule.search(variable_path(variable)) if isinstance(rule, re.Pattern) else rule(variable)
        for rule in rules or ()
    )


def rules_config(rules):
    """`rules` for `get_config`: patterns as strings, callables serialized."""
    if rules is None:
        return None
    return [
        rule.pattern if isinstance(rule, re.Pattern) else keras.saving.serialize_keras_object(rule)
        for rule in rules
    ]


def trust_ratio(weight_norm, update_norm, numerator=None, denominator=None, bounds=None):
    """`numerator / denominator` (defaults: `weight_norm / update_norm`),
    clipped to `bounds` (`(lower, upper)`) if given.

    Returns 1 where `weight_norm` or `update_norm` is zero, so that freshly
    zero-initialized variables (biases, LayerNorm betas) still move.
    """
    numerator = weight_norm if numerator is None else numerator
    denominator = update_norm if denominator is None else denominator
    both_positive = ops.minimum(weight_norm, update_norm) > 0.0
    safe_denominator = ops.where(both_positive, denominator, 1.0)
    ratio = numerator / safe_denominator
    if bounds is not None:
        ratio = ops.clip(ratio, bounds[0], bounds[1])
    return ops.where(both_positive, ratio, 1.0)


def dense_gradient(gradient, variable):
    """The gradient as a dense tensor of `variable`'s dtype.

    Adam-type and layer-wise optimizers update every row of a variable even
    when its gradient is sparse (moments decay, norms span the whole
    variable), so sparse gradients (`tf.IndexedSlices` from embeddings,
    `tf.SparseTensor`, JAX's `BCOO`) are summed into their dense equivalent.
    """
    if hasattr(gradient, "indices") and hasattr(gradient, "dense_shape"):
        gradient = ops.scatter(
            ops.expand_dims(gradient.indices, -1), gradient.values, variable.shape
        )
    else:  # JAX's `BCOO` and `tf.SparseTensor` densified, as Keras's own ops do
        gradient = ops.convert_to_tensor(gradient, sparse=False)
    return ops.cast(gradient, variable.dtype)


class WeightDecayOptimizer(keras.optimizers.Optimizer):
    """Base for optimizers whose update direction includes `weight_decay * w`.

    Args:
        learning_rate: A float, a `LearningRateSchedule`, or a callable.
        weight_decay: The decay rate λ added as `λ * w` to the update direction.
        exclude_from_weight_decay: Variables that get no weight decay: a list
            of regular expressions (a variable whose `variable.path` matches
            one, by `re.search`) and callables `variable -> bool` (such as
            `lamb.fewer_than_2_dimensions`), or one callable.
        include_in_weight_decay: Variables that get weight decay even where
            `exclude_from_weight_decay` selects them (HuggingFace's
            allow-list), in the same form.
        skip_nonfinite_gradients: Skip every step whose gradient holds an
            inf or NaN: weights, optimizer state and `iterations` stay as
            they were, and `skipped_steps` counts it (like optax's
            `apply_if_finite`). Under Keras's `gradient_accumulation_steps=K`
            a non-finite micro-batch skips its whole optimizer step, as
            `lamb.GradientAccumulation` does: its K micro-batches are
            consumed, the accumulators reset, `iterations` (optimizer
            steps) stays. Off by default: then, as with Keras's own
            optimizers, one non-finite gradient element makes its weight
            and moments NaN for good.
        layer_decay: Layer-wise learning-rate decay (ELECTRA, TF Model
            Garden, timm): each variable's rate is the learning rate times
            `layer_decay ** (top - layer_index(variable))`, with `top` the
            largest index of the variables; in (0, 1], or `None` (off).
        layer_index: With `layer_decay`, a callable `variable -> int ≥ 0 or
            None` (None: the top), e.g. `lamb.bert_layer_index`.
        max_consecutive_skipped_steps: With `skip_nonfinite_gradients`, how
            many consecutive steps may be skipped (optax's
            `max_consecutive_errors`); the next non-finite one stops training
            with an `InvalidArgumentError` naming this argument under
            TensorFlow outside XLA, and under XLA and JAX is applied as optax
            applies it (the weights become NaN, which a loss check stops).
            `None`: no limit.
        **kwargs: Keyword arguments of `keras.optimizers.Optimizer`.

    Global-norm clipping (`global_clipnorm`) computes the norm without
    overflow, so finite gradients of any size are clipped to finite ones.
    A learning rate below zero or NaN from a schedule or callable stops
    training with an `InvalidArgumentError` under TensorFlow outside XLA;
    under XLA and JAX it makes the weights NaN (never gradient ascent).
    """

    def __init__(
        self,
        learning_rate,
        weight_decay=0.0,
        exclude_from_weight_decay=None,
        include_in_weight_decay=None,
        skip_nonfinite_gradients=False,
        max_consecutive_skipped_steps=None,
        layer_decay=None,
        layer_index=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=check_learning_rate(learning_rate),
            weight_decay=check_float(
                "weight_decay", 0.0 if weight_decay is None else weight_decay, low=0.0
            ),
            **check_keras_keywords(kwargs),
        )
        self._weight_decay_exclusions = compile_rules(
            "exclude_from_weight_decay", exclude_from_weight_decay
        )
        self._weight_decay_inclusions = compile_rules(
            "include_in_weight_decay", include_in_weight_decay
        )
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
        self.layer_decay = None
        self.layer_index = None
        if layer_decay is not None or layer_index is not None:
            self.layer_decay = check_float(
                "layer_decay", 1.0 if layer_decay is None else layer_decay, 0.0, 1.0,
                low_inclusive=False, high_inclusive=True,
            )
            if isinstance(layer_index, dict):
                layer_index = keras.saving.deserialize_keras_object(layer_index)
            if not callable(layer_index):
                raise ValueError(
                    "`layer_index` must be a callable `variable -> int or None` (e.g. "
                    f"lamb.bert_layer_index) with layer_decay; received layer_index={layer_index!r}."
                )
            self.layer_index = layer_index
        self._skipped_steps = None
        self._consecutive_skipped_steps = None
        self._step_global_norm = None

    @property
    def skipped_steps(self):
        """How many steps `skip_nonfinite_gradients` skipped (0 when off)."""
        if self._skipped_steps is None:
            return 0
        return int(ops.convert_to_numpy(self._skipped_steps))

    def _clip_gradients(self, grads):
        if self.global_clipnorm:
            return clip_by_global_norm(grads, self.global_clipnorm, self._step_global_norm)
        return super()._clip_gradients(grads)

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

    def apply(self, grads, trainable_variables=None):
        """Keras's `apply`, refusing a gradient whose shape is not its
        variable's (which would broadcast into it)."""
        if trainable_variables is not None:
            trainable_variables = list(trainable_variables)
        variables = self._trainable_variables if trainable_variables is None else trainable_variables
        for gradient, variable in zip(grads, variables):
            shape = getattr(gradient, "shape", None)
            if shape is not None and not _same_shape(shape, variable.shape):
                raise ValueError(
                    f"The gradient of variable '{variable_path(variable)}' has shape "
                    f"{tuple(shape)}; it must have the variable's shape "
                    f"{tuple(variable.shape)}."
                )
        return super().apply(grads, trainable_variables)

    def _apply_weight_decay(self, variables):
        """Disabled: the decay is part of `update_step`, applied exactly once."""

    def _get_current_learning_rate(self):
        """A schedule's rate at the number of updates made so far, checked.

        Keras documents that schedules see updates, not micro-batches, under
        `gradient_accumulation_steps`, but passes the micro-batch count.
        """
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return _checked_rate(self._learning_rate(self.iterations))
        if callable(self._learning_rate):
            return _checked_rate(super()._get_current_learning_rate())
        return super()._get_current_learning_rate()

    def build(self, var_list):
        if self.built:
            return
        for variable in var_list:
            self._check_dtype(variable)
        super().build(var_list)
        self._decays_weight = [self._decays(variable) for variable in var_list]
        self._rate_multipliers = self._layer_rate_multipliers(var_list)
        if self.skip_nonfinite_gradients:
            self._skipped_steps = self.add_variable(
                shape=(), dtype="int64", initializer="zeros", name="skipped_steps"
            )
        if self.max_consecutive_skipped_steps is not None:
            self._consecutive_skipped_steps = self.add_variable(
                shape=(), dtype="int64", initializer="zeros", name="consecutive_skipped_steps"
            )

    def _layer_rate_multipliers(self, var_list):
        """Per variable, `layer_decay ** (top − layer index)`, or None (off)."""
        if self.layer_decay is None:
            return None
        indices = []
        for variable in var_list:
            index = self.layer_index(variable)
            if index is not None:
                try:
                    check_int("layer_index", index, low=0)
                except ValueError:
                    raise ValueError(
                        f"`layer_index` must give an integer >= 0 or None; it gave {index!r} "
                        f"for variable '{variable_path(variable)}'."
                    ) from None
            indices.append(index)
        top = max((index for index in indices if index is not None), default=0)
        return [
            self.layer_decay ** (top - (top if index is None else index)) for index in indices
        ]

    def _layer_learning_rate(self, learning_rate, index):
        """The learning rate of variable `index` (`layer_decay`)."""
        if self._rate_multipliers is None:
            return learning_rate
        return learning_rate * self._rate_multipliers[index]

    def _check_dtype(self, variable):
        """`ValueError` for a variable the optimizer cannot train."""
        if "float" not in str(variable.dtype):
            raise ValueError(
                f"{type(self).__name__} trains floating-point variables only; received "
                f"variable '{variable_path(variable)}' of dtype {variable.dtype}."
            )

    def _decays(self, variable):
        return self.weight_decay > 0.0 and (
            matches_any(self._weight_decay_inclusions, variable)
            or (
                self._use_weight_decay(variable)
                and not matches_any(self._weight_decay_exclusions, variable)
            )
        )

    def _add_weight_decay(self, update, variable, index):
        """`update + λ·w` for variables that take weight decay, else `update`."""
        if not self._decays_weight[index]:
            return update
        return update + ops.cast(self.weight_decay, variable.dtype) * variable

    def get_config(self):
        config = super().get_config()
        config["exclude_from_weight_decay"] = rules_config(self._weight_decay_exclusions)
        config["include_in_weight_decay"] = rules_config(self._weight_decay_inclusions)
        config["skip_nonfinite_gradients"] = self.skip_nonfinite_gradients
        config["max_consecutive_skipped_steps"] = self.max_consecutive_skipped_steps
        config["layer_decay"] = self.layer_decay
        config["layer_index"] = (
            None if self.layer_index is None else keras.saving.serialize_keras_object(self.layer_index)
        )
        return config


class LayerAdaptiveOptimizer(WeightDecayOptimizer):
    """Base for optimizers that rescale each variable's step by a trust ratio.

    Args:
        exclude_from_layer_adaptation: Variables that get trust ratio 1, in
            the form of `exclude_from_weight_decay`. `None` means the same
            rules as `exclude_from_weight_decay`.
        trust_ratio_bounds: `(lower, upper)`, `0 <= lower <= upper`,
            `upper > 0`: the trust ratio computed from the norms is clipped
            to it (DeepSpeed's `min_coeff`, `max_coeff`; `(0, 1)` is timm's
            `trust_clip`); the ratio 1 of a zero norm or an excluded
            variable stays 1. `None`: no clipping.
        (other arguments as in `WeightDecayOptimizer`)

    After each step, `layer_statistics()` reports per variable the weight
    norm, the update-direction norm and the trust ratio that step used.
    """

    def __init__(
        self,
        learning_rate,
        weight_decay=0.0,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
        trust_ratio_bounds=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            exclude_from_weight_decay=exclude_from_weight_decay,
            **kwargs,
        )
        self.trust_ratio_bounds = check_bounds("trust_ratio_bounds", trust_ratio_bounds)
        self._layer_adaptation_exclusions = compile_rules(
            "exclude_from_layer_adaptation", exclude_from_layer_adaptation
        )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        exclusions = self._layer_adaptation_exclusions
        if exclusions is None:
            exclusions = self._weight_decay_exclusions
        self._adapts_layer = [not matches_any(exclusions, variable) for variable in var_list]
        self._schedule = xla_cpu.StepSchedule(var_list)
        self._statistics_paths = [variable_path(variable) for variable in var_list]
        # One row per variable: a single variable is much cheaper to create
        # inside a traced function (and to read back) than one per variable.
        self._layer_statistics = self.add_variable(
            shape=(len(var_list), 3), dtype="float32", name="layer_statistics"
        )

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        """Runs each variable's step (`_variable_update_step`) under the
        schedule's per-step state, then writes their layer statistics in one
        assignment (one row update per variable makes XLA compile seconds
        longer)."""
        with self._schedule.step() as rows:
            if keras.backend.backend() == "tensorflow":  # tf.distribute: `_distributed_tf_update_step`
                super()._backend_update_step(grads, trainable_variables, learning_rate)
            else:
                for gradient, variable in zip(grads, trainable_variables):
                    self._variable_update_step(gradient, variable, learning_rate)
        if rows:
            indices = sorted(rows)
            self.assign(
                self._layer_statistics,
                ops.scatter_update(
                    self._layer_statistics,
                    [[index] for index in indices],
                    ops.stack([rows[index] for index in indices]),
                ),
            )

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        """Keras's TensorFlow loop over the variables, each variable's step
        from `_variable_update_step`."""

        def variable_update_step(variable, gradient, learning_rate):
            return self._variable_update_step(gradient, variable, learning_rate)

        for gradient, variable in grads_and_vars:
            distribution.extended.update(
                variable, variable_update_step, args=(gradient, learning_rate), group=False
            )

    def _variable_update_step(self, gradient, variable, learning_rate):
        """`update_step`, or where the schedule gives `variable` a scheduled
        step (large variables on CPUs and under XLA), its twin
        `_scheduled_update_step`: the same values, faster (`xla_cpu`)."""
        index = self._get_variable_index(variable)
        if not self._schedule.takes_scheduled_step(index):
            return self.update_step(gradient, variable, learning_rate)
        plan = self._schedule.plan(index, variable.dtype)
        return self._scheduled_update_step(gradient, variable, learning_rate, plan)

    def _scheduled_update_step(self, gradient, variable, learning_rate, plan):
        """`update_step` as `plan` schedules it; without a twin, as written."""
        return self.update_step(gradient, variable, learning_rate)

    def _trust_ratio(
        self, variable, index, update, norm, weight_norm_scale=None, denominator=None
    ):
        """`scale(‖w‖) / ‖u‖` for `variable`'s update direction `update`,
        with norms by `norm` (`scale` defaults to the identity;
        `denominator(‖w‖, ‖u‖)` replaces ‖u‖ if given; 1 for excluded
        variables), recorded for `layer_statistics()` as (‖w‖, ‖u‖, ratio)."""
        weight_norm, update_norm = norm(variable), norm(update)
        if self._adapts_layer[index]:
            numerator = None if weight_norm_scale is None else weight_norm_scale(weight_norm)
            divisor = None if denominator is None else denominator(weight_norm, update_norm)
            ratio = trust_ratio(
                weight_norm, update_norm, numerator, divisor, self.trust_ratio_bounds
            )
        else:
            ratio = ops.ones_like(weight_norm)
        row = ops.cast(ops.stack([weight_norm, update_norm, ratio]), "float32")
        if not self._schedule.collect_statistics(index, row):
            self.assign(
                self._layer_statistics,
                ops.slice_update(self._layer_statistics, (index, 0), row[None]),
            )
        return ratio

    def layer_statistics(self):
        """`{variable.path: (weight_norm, update_norm, trust_ratio)}` of the last step."""
        if not self.built:
            return {}
        rows = ops.convert_to_numpy(self._layer_statistics)
        return {
            path: tuple(float(x) for x in row)
            for path, row in zip(self._statistics_paths, rows)
        }

    def get_config(self):
        config = super().get_config()
        config["exclude_from_layer_adaptation"] = rules_config(
            self._layer_adaptation_exclusions
        )
        config["trust_ratio_bounds"] = (
            None if self.trust_ratio_bounds is None else list(self.trust_ratio_bounds)
        )
        return config


def all_finite(tensors):
    """Whether every element of `tensors` (`None`s skipped) is finite."""
    return ops.all(
        ops.stack([ops.all(ops.isfinite(t)) for t in tensors if t is not None])
    )


def _checked_rate(rate):
    """`rate`, or an error when it is negative or NaN (under TensorFlow,
    outside XLA); else NaN where it is negative (XLA drops TensorFlow's
    checks, and JAX has none): NaN weights, not silent gradient ascent."""
    rate = ops.convert_to_tensor(rate)
    rate = ops.where(rate >= 0, rate, float("nan"))
    if keras.backend.backend() != "tensorflow" or xla_cpu.compiling_with_xla():
        return rate
    import tensorflow as tf

    check = tf.debugging.assert_greater_equal(
        rate,
        tf.constant(0, rate.dtype),
        message="The learning rate (from the optimizer's schedule or callable) "
        "must be a number >= 0",
    )
    with tf.control_dependencies([check]):
        return tf.identity(rate)


def _same_shape(a, b):
    """Whether shapes `a` and `b` agree (an unknown dimension agrees with any)."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))
