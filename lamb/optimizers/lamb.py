"""LAMB: layer-wise adaptive moments for large-batch training."""

import keras
from keras import ops

from lamb import _checks
from lamb.optimizers import base, moments
from lamb.optimizers.layer_adaptive import LayerAdaptiveOptimizer
from lamb.optimizers.norms import l2_norm
from lamb.optimizers.rules import variable_path


@keras.saving.register_keras_serializable(package="lamb")
class LAMB(LayerAdaptiveOptimizer):
    """LAMB, Algorithm 2 of You et al. (arXiv:1904.00962 v3 and later).

    Per variable `w` with gradient `g` at step `t`:

        m = β1·m + (1 − β1)·g            v = β2·v + (1 − β2)·g²
        m̂ = m / (1 − β1^t)               v̂ = v / (1 − β2^t)   (if bias_correction)
        u = m̂ / (√v̂ + ε) + λ·w           (λ only where weight decay applies)
        w ← w − η · φ(‖w‖)/‖u‖ · u       (ratio 1 if a norm is 0 or excluded)

    Unlike `keras.optimizers.Lamb`, the weight decay is inside the trust
    ratio (as in the paper), and variables can be excluded from weight decay
    and from layer adaptation by regular expressions on `variable.path`.

    Args:
        learning_rate: A float, a `LearningRateSchedule`, or a callable.
        beta_1: Decay rate of the first moment, in [0, 1).
        beta_2: Decay rate of the second moment, in [0, 1).
        epsilon: Added to √v̂, > 0 (with 0, a variable whose gradient is
            all zero, such as an unused embedding row, would become NaN).
        weight_decay: λ, ≥ 0.
        exclude_from_weight_decay: Regular expressions matched (`re.search`)
            against `variable.path` and callables `variable -> bool` (e.g.
            `lamb.fewer_than_2_dimensions`); selected variables get no
            weight decay.
        exclude_from_layer_adaptation: The same kind of rules; selected
            variables get trust ratio 1. `None` means the weight-decay rules.
        bias_correction: Whether to divide the moments by `1 − β^t`.
        weight_norm_bounds: `(lower, upper)` to clip ‖w‖ to (the paper's φ),
            `0 <= lower <= upper`, `upper > 0`, or `None` for φ = identity.
        **kwargs: `trust_ratio_bounds`, `(lower, upper)` to clip the trust
            ratio to (DeepSpeed's `min_coeff`, `max_coeff`; `(0, 1)` is
            timm's `trust_clip`; see `LayerAdaptiveOptimizer`),
            `include_in_weight_decay`, `skip_nonfinite_gradients` (see
            `WeightDecayOptimizer`), and
            the keyword arguments of `keras.optimizers.Optimizer`
            (`clipnorm`, `global_clipnorm`, `gradient_accumulation_steps`,
            `use_ema`, `loss_scale_factor`, `name`, ...).

    References:
        - [You et al., 2019](https://arxiv.org/abs/1904.00962)
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        weight_decay=0.0,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
        bias_correction=True,
        weight_norm_bounds=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            exclude_from_weight_decay=exclude_from_weight_decay,
            exclude_from_layer_adaptation=exclude_from_layer_adaptation,
            **kwargs,
        )
        self.beta_1 = _checks.check_float("beta_1", beta_1, 0.0, 1.0)
        self.beta_2 = _checks.check_float("beta_2", beta_2, 0.0, 1.0)
        self.epsilon = _checks.check_float("epsilon", epsilon, low=0.0, low_inclusive=False)
        self.bias_correction = _checks.check_bool("bias_correction", bias_correction)
        self.weight_norm_bounds = _checks.check_bounds("weight_norm_bounds", weight_norm_bounds)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._moments = self._build_moments(var_list)

    def _check_dtype(self, variable):
        super()._check_dtype(variable)
        if variable.dtype == "bfloat16":
            raise ValueError(
                f"{type(self).__name__} cannot train bfloat16 variable "
                f"'{variable_path(variable)}': its moments and bias correction "
                "would be bfloat16, where beta_2 = 0.999 rounds to 1.0 and the step "
                "to 0. Keep the variable in float32 (the 'mixed_bfloat16' policy "
                "computes in bfloat16 with float32 variables)."
            )

    def _build_moments(self, var_list):
        """Where m and v are kept (LAMB16 keeps them in 8 bits)."""
        return moments.FloatMoments(self, var_list, self.beta_1, self.beta_2)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(self._layer_learning_rate(learning_rate, index), variable.dtype)
        gradient = base.dense_gradient(gradient, variable)
        m, v = self._moments.update(index, gradient)
        if self.bias_correction:
            m_correction, v_correction = self._bias_corrections(variable.dtype)
            m, v = m / m_correction, v / v_correction  # m̂, v̂
        r = m / (ops.sqrt(v) + self.epsilon)
        u = self._add_weight_decay(r, variable, index)  # r + λ·w
        ratio = self._ratio(variable, index, u, l2_norm, learning_rate)  # φ(‖w‖) / ‖u‖
        self.assign_sub(variable, learning_rate * ratio * u)

    def _scheduled_update_step(self, gradient, variable, learning_rate, plan):
        """`update_step` scheduled by `plan` (`xla_cpu`): u is computed from
        k·m and k²·v (any power of two k: the same value), so that a fused
        plan writes a second copy of u for its norm."""
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(self._layer_learning_rate(learning_rate, index), variable.dtype)
        gradient = base.dense_gradient(gradient, variable)
        new_moments = self._moments.scheduled_update(index, gradient, plan)

        def direction(k):
            """u = m̂ / (√v̂ + ε) + λ·w from k·m and k²·v."""
            m, v = new_moments.times(k)
            u = self._adam_direction(m, v, variable.dtype, multiple=k)
            return self._add_weight_decay(u, variable, index)

        u, u_for_norm = plan.for_two_consumers(direction(1.0), lambda: direction(2.0))
        ratio = self._ratio(variable, index, u_for_norm, plan.norm, learning_rate)
        self.assign_sub(variable, learning_rate * ratio * u)
        plan.done(variable, new_moments.finish(variable))

    def _ratio(self, variable, index, update, norm, learning_rate):
        """The trust ratio φ(‖w‖) / ‖u‖, norms by `norm` (LAMB16 may temper it)."""
        return self._trust_ratio(variable, index, update, norm, self._clip_weight_norm)

    def _bias_corrections(self, dtype):
        """(1 − β1^t, 1 − β2^t) for this step."""
        return self._schedule.per_step(
            ("bias_corrections", dtype), lambda: self._compute_bias_corrections(dtype)
        )

    def _compute_bias_corrections(self, dtype):
        step = ops.cast(self.iterations + 1, dtype)
        return (
            1.0 - ops.power(ops.cast(self.beta_1, dtype), step),
            1.0 - ops.power(ops.cast(self.beta_2, dtype), step),
        )

    def _adam_direction(self, m, v, dtype, multiple=1.0):
        """m̂ / (√v̂ + ε) for `m`, `v` that are `multiple` and `multiple`² times
        the moments (`multiple` a power of two: the same value exactly,
        barring float32 overflow and subnormals).

        With `bias_correction`, computed as m·(√c2 / c1) / (√v + ε·√c2) with
        c = 1 − β^t (the same value up to float rounding): two factors per
        step instead of two more divisions per element.
        """
        if not self.bias_correction:
            return m / (ops.sqrt(v) + self.epsilon * multiple)
        m_factor, epsilon = self._schedule.per_step(
            ("adam_factors", dtype), lambda: self._adam_factors(dtype)
        )
        if multiple != 1.0:
            epsilon = epsilon * multiple
        return m * m_factor / (ops.sqrt(v) + epsilon)

    def _adam_factors(self, dtype):
        """(√c2 / c1, ε·√c2) for this step, with c = 1 − β^t."""
        m_correction, v_correction = self._bias_corrections(dtype)
        v_correction_sqrt = ops.sqrt(v_correction)
        return v_correction_sqrt / m_correction, self.epsilon * v_correction_sqrt

    def _clip_weight_norm(self, weight_norm):
        if self.weight_norm_bounds is None:
            return weight_norm
        lower, upper = self.weight_norm_bounds
        return ops.clip(weight_norm, lower, upper)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "bias_correction": self.bias_correction,
                "weight_norm_bounds": (
                    None
                    if self.weight_norm_bounds is None
                    else list(self.weight_norm_bounds)
                ),
            }
        )
        return config

