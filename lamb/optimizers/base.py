"""The base of the package's optimizers: checked arguments, λ·w with its
exclusion lists, layer-wise learning-rate decay, dense gradients.

Weight decay here is part of each optimizer's update direction (BERT, LAMB and
LARS all define it that way), so the Keras base class's own decoupled decay
step is switched off; `Optimizer.exclude_from_weight_decay(...)` still works.
"""

import keras
from keras import ops

from lamb._checks import check_float, check_int, check_learning_rate
from lamb.optimizers import xla_cpu
from lamb.optimizers.nonfinite import SkipsNonfiniteSteps
from lamb.optimizers.norms import clip_by_global_norm
from lamb.optimizers.rules import compile_rules, matches_any, rules_config, variable_path


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


class WeightDecayOptimizer(SkipsNonfiniteSteps, keras.optimizers.Optimizer):
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
        self._init_skipping(skip_nonfinite_gradients, max_consecutive_skipped_steps)
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


    def _clip_gradients(self, grads):
        if self.global_clipnorm:
            return clip_by_global_norm(grads, self.global_clipnorm, self._step_global_norm)
        return super()._clip_gradients(grads)

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
        self._build_skip_counters()

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
