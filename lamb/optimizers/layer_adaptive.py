"""The layer-adaptive base (LAMB, LARS): the trust ratio with its zero-norm
guards, per-variable layer statistics, and the choice of each variable's
step: `update_step` as written, or its scheduled twin (`xla_cpu`)."""

import keras
from keras import ops

from lamb._checks import check_bounds
from lamb.optimizers import xla_cpu
from lamb.optimizers.base import WeightDecayOptimizer
from lamb.optimizers.rules import compile_rules, matches_any, rules_config, variable_path


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

