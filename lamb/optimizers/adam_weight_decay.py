"""BERT's AdamWeightDecayOptimizer as a Keras 3 optimizer."""

import keras
from keras import ops

from lamb import _checks
from lamb.optimizers import base, moments


@keras.saving.register_keras_serializable(package="lamb")
class AdamWeightDecay(base.WeightDecayOptimizer):
    """Adam with weight decay exactly as in google-research/bert `optimization.py`.

    Per variable `w` with gradient `g`:

        m = β1·m + (1 − β1)·g            v = β2·v + (1 − β2)·g²
        u = m / (√v + ε) + λ·w           (no bias correction; λ where it applies)
        w ← w − η·u

    Args:
        learning_rate: A float, a `LearningRateSchedule`, or a callable.
        beta_1: Decay rate of the first moment, in [0, 1).
        beta_2: Decay rate of the second moment, in [0, 1).
        epsilon: Added to √v, > 0 (with 0, a variable whose gradient is all
            zero, such as an unused embedding row, would become NaN).
        weight_decay: λ, ≥ 0.
        exclude_from_weight_decay: Regular expressions matched (`re.search`)
            against `variable.path` and callables `variable -> bool` (e.g.
            `lamb.fewer_than_2_dimensions`); selected variables get no
            weight decay.
        **kwargs: `include_in_weight_decay`, `skip_nonfinite_gradients` (see
            `WeightDecayOptimizer`), and
            the keyword arguments of `keras.optimizers.Optimizer`.

    References:
        - [Devlin et al., 2018](https://arxiv.org/abs/1810.04805)
        - [Loshchilov and Hutter, 2019](https://arxiv.org/abs/1711.05101)
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        weight_decay=0.0,
        exclude_from_weight_decay=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            exclude_from_weight_decay=exclude_from_weight_decay,
            **kwargs,
        )
        self.beta_1 = _checks.check_float("beta_1", beta_1, 0.0, 1.0)
        self.beta_2 = _checks.check_float("beta_2", beta_2, 0.0, 1.0)
        self.epsilon = _checks.check_float("epsilon", epsilon, low=0.0, low_inclusive=False)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._moments = moments.FloatMoments(self, var_list, self.beta_1, self.beta_2)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = self._layer_learning_rate(learning_rate, index)
        gradient = base.dense_gradient(gradient, variable)
        m, v = self._moments.update(index, gradient)
        u = self._add_weight_decay(m / (ops.sqrt(v) + self.epsilon), variable, index)  # + λ·w
        self.assign_sub(variable, ops.cast(learning_rate, variable.dtype) * u)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
        )
        return config
