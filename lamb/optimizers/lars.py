"""LARS with classic momentum: SimCLR's trust ratio, or TF-contrib's."""

import keras
from keras import ops

from lamb import _checks
from lamb.optimizers import base
from lamb.optimizers.layer_adaptive import LayerAdaptiveOptimizer
from lamb.optimizers.norms import l2_norm


@keras.saving.register_keras_serializable(package="lamb")
class LARS(LayerAdaptiveOptimizer):
    """Layer-wise Adaptive Rate Scaling (You et al., 2017), classic momentum.

    Per variable `w` with gradient `g` (λ only where weight decay applies):

        d = g + λ·w
        r = η_LARS · ‖w‖ / ‖d‖                  trust_ratio_formula="decayed"
        r = η_LARS · ‖w‖ / (‖g‖ + λ·‖w‖ + ε)    trust_ratio_formula="separate"
                                          (r = 1 if ‖w‖ or the norm of g or d
                                           is 0, or the variable is excluded)
        v ← μ·v + η·r·d
        w ← w − v                         (Nesterov: w ← w − (μ·v + η·r·d))

    "decayed" (the default) is the trust ratio of google-research/simclr's
    `LARSOptimizer` (and TF Model Garden's); "separate", on the raw
    gradient, that of `tf.contrib.opt.LARSOptimizer` (which tensorflow/tpu's
    ResNet trains with) and of tensorflow/tpu's `lars_optimizer.py`. Both
    step along d, as SimCLR and TF-contrib do (tensorflow/tpu's own file
    leaves λ·w out of its step).

    Args:
        learning_rate: A float, a `LearningRateSchedule`, or a callable.
        momentum: μ, in [0, 1).
        weight_decay: λ, ≥ 0.
        eeta: The LARS coefficient η_LARS, > 0.
        nesterov: Whether to use Nesterov momentum.
        trust_ratio_formula: `"decayed"` or `"separate"` (above).
        epsilon: ε of the "separate" formula, ≥ 0 (TF-contrib's default 0).
        exclude_from_weight_decay: Regular expressions matched (`re.search`)
            against `variable.path` and callables `variable -> bool` (e.g.
            `lamb.fewer_than_2_dimensions`); selected variables get no
            weight decay.
        exclude_from_layer_adaptation: The same kind of rules; selected
            variables get trust ratio 1. `None` means the weight-decay rules.
        **kwargs: `include_in_weight_decay`, `skip_nonfinite_gradients` (see
            `WeightDecayOptimizer`), `trust_ratio_bounds` (see
            `LayerAdaptiveOptimizer`) and
            the keyword arguments of `keras.optimizers.Optimizer`.

    References:
        - [You et al., 2017](https://arxiv.org/abs/1708.03888)
    """

    def __init__(
        self,
        learning_rate=0.001,
        momentum=0.9,
        weight_decay=0.0,
        eeta=0.001,
        nesterov=False,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
        trust_ratio_formula="decayed",
        epsilon=0.0,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            exclude_from_weight_decay=exclude_from_weight_decay,
            exclude_from_layer_adaptation=exclude_from_layer_adaptation,
            **kwargs,
        )
        self.momentum = _checks.check_float("momentum", momentum, 0.0, 1.0)
        self.eeta = _checks.check_float("eeta", eeta, low=0.0, low_inclusive=False)
        self.nesterov = _checks.check_bool("nesterov", nesterov)
        self.trust_ratio_formula = _checks.check_choice(
            "trust_ratio_formula", trust_ratio_formula, TRUST_RATIO_FORMULAS
        )
        self.epsilon = _checks.check_float("epsilon", epsilon, low=0.0)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = self.add_optimizer_variables(var_list, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(self._layer_learning_rate(learning_rate, index), variable.dtype)
        gradient = base.dense_gradient(gradient, variable)
        decayed_gradient = self._add_weight_decay(gradient, variable, index)  # d = g + λ·w
        ratio = self._lars_ratio(variable, index, gradient, decayed_gradient, l2_norm)  # r
        scaled_gradient = learning_rate * ratio * decayed_gradient  # η·r·d
        v = self._momentums[index]
        self.assign(v, self.momentum * v + scaled_gradient)
        if self.nesterov:
            self.assign_sub(variable, self.momentum * v + scaled_gradient)
        else:
            self.assign_sub(variable, v)

    def _scheduled_update_step(self, gradient, variable, learning_rate, plan):
        """`update_step` scheduled by `plan` (`xla_cpu`): η·r·d written as
        η·r·g + (η·r·λ)·w too, so that a fused plan reads g and w for the
        update instead of d written to memory."""
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(self._layer_learning_rate(learning_rate, index), variable.dtype)
        gradient = base.dense_gradient(gradient, variable)
        decayed_gradient = self._add_weight_decay(gradient, variable, index)
        ratio = self._lars_ratio(variable, index, gradient, decayed_gradient, plan.norm)
        step_size = learning_rate * ratio
        scaled_gradient = step_size * decayed_gradient
        if self._decays_weight[index]:
            weight_decay = ops.cast(self.weight_decay, variable.dtype)
            scaled_gradient = plan.separate(
                scaled_gradient, lambda: step_size * gradient + (step_size * weight_decay) * variable
            )
        v = self._momentums[index]
        self.assign(v, self.momentum * v + scaled_gradient)
        if self.nesterov:
            self.assign_sub(variable, self.momentum * v + scaled_gradient)
        else:
            self.assign_sub(variable, v)
        plan.done(variable)

    def _lars_ratio(self, variable, index, gradient, decayed_gradient, norm):
        """r of `trust_ratio_formula`, norms by `norm`."""
        if self.trust_ratio_formula == "decayed":  # η_LARS·‖w‖ / ‖d‖
            return self._trust_ratio(
                variable, index, decayed_gradient, norm, self._scale_weight_norm
            )
        decay = self.weight_decay if self._decays_weight[index] else 0.0

        def separate(weight_norm, gradient_norm):  # η_LARS·‖w‖ / (‖g‖ + λ·‖w‖ + ε)
            return gradient_norm + decay * weight_norm + self.epsilon

        return self._trust_ratio(
            variable, index, gradient, norm, self._scale_weight_norm, separate
        )

    def _scale_weight_norm(self, weight_norm):
        return self.eeta * weight_norm

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "eeta": self.eeta,
                "nesterov": self.nesterov,
                "trust_ratio_formula": self.trust_ratio_formula,
                "epsilon": self.epsilon,
            }
        )
        return config


TRUST_RATIO_FORMULAS = ("decayed", "separate")
