"""Gradient accumulation inside the training step, with one cross-replica sum.

`GradientAccumulation` is a `keras.Model` mixin whose `train_step` makes one
optimizer step of each batch `fit` gives it: it splits the batch (each
replica's share of it) into `gradient_accumulation_steps` micro-batches,
runs them one after another in a loop inside the compiled step (one
micro-batch's activations alive at a time), sums their gradients locally,
sums those over the replicas once, and hands the sum to the optimizer, which
clips it (`global_clipnorm`: the norm of the global gradient, as BERT clips)
and applies it. Under loss scaling (`mixed_float16`) a non-finite value in
any micro-batch on any replica makes the reduced gradient non-finite, so the
whole step is skipped on every replica, weights and optimizer state unchanged.

Why not Keras's own `gradient_accumulation_steps`: it accumulates across
`fit` steps in the optimizer, so under `MirroredStrategy` and
`MultiWorkerMirroredStrategy` it fails (its `cond` around a `merge_call`,
keras-team/keras#20582); it sums over the replicas at every micro-batch, clips
each replica's share before that sum, and passes schedules the micro-batch
count. Here a `fit` step is an optimizer step, so schedules, callbacks,
`steps_per_epoch` and checkpoints all count optimizer steps.

TensorFlow backend only (`tf.distribute`); under other backends the mixin
runs the backend's own step when `gradient_accumulation_steps` is 1.
"""

import collections
import contextlib

import keras
from keras import ops

from lamb import _checks


class GradientAccumulation:
    """Mixin for `keras.Model`: each `fit` step is one optimizer step over
    `gradient_accumulation_steps` micro-batches of its batch.

    Put it before the model class: `class MyModel(GradientAccumulation,
    keras.Model)`; for a functional model use `AccumulatingModel(inputs,
    outputs, gradient_accumulation_steps=K)`. Give `fit` batches of the
    global batch size (examples per optimizer step); each replica's share
    must divide by `gradient_accumulation_steps`.

    The loss of each micro-batch is `compute_loss`'s; the step's gradient is
    the mean over the micro-batches of their gradients, so with Keras's
    per-example-mean losses it equals the gradient on the whole batch. A
    model whose loss is normalized over the whole step (as BERT's masked-LM
    loss is, by the number of predictions) can override `step_context` to
    compute that normalizer once per step (see `lamb.models.bert`).

    Args:
        gradient_accumulation_steps: Micro-batches per optimizer step (1: the
            whole batch at once).
    """

    def __init__(self, *args, gradient_accumulation_steps=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.gradient_accumulation_steps = _checks.check_int(
            "gradient_accumulation_steps", gradient_accumulation_steps, low=1
        )

    def step_context(self, x, y, sample_weight):
        """A context manager entered around each training step, given its
        whole batch (this replica's share); by default it does nothing."""
        del x, y, sample_weight
        return contextlib.nullcontext()

    def train_step(self, *args):
        if keras.backend.backend() != "tensorflow" and self.gradient_accumulation_steps == 1:
            return super().train_step(*args)  # The backend's own step.
        _check_optimizer(self.optimizer)
        import tensorflow as tf

        (data,) = args
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        steps = self.gradient_accumulation_steps
        variables = list(self.trainable_variables)
        with self.step_context(x, y, sample_weight):
            if steps == 1:
                gradients = self._micro_batch_gradients(x, y, sample_weight, variables, 1)
            else:
                gradients = self._accumulated_gradients(x, y, sample_weight, variables, steps)
        gradients = _sum_gradients_over_replicas(gradients)
        with _gradients_already_summed(self.optimizer):
            self.optimizer.apply(gradients, variables)
        results = self.get_metrics_result()
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 averages multi-worker logs along axis 0, which a scalar
            # lacks (tensorflow/tensorflow#72388).
            results = {name: ops.reshape(value, (1,)) for name, value in results.items()}
        return results

    def _micro_batch_gradients(self, x, y, sample_weight, variables, steps):
        """Dense gradients of one micro-batch's loss / `steps` (None where a
        variable gets none); updates the loss tracker and the metrics."""
        import tensorflow as tf

        from keras.src.losses import loss as loss_module

        with tf.GradientTape() as tape:
            y_pred = self(x, training=True) if self._call_has_training_arg else self(x)
            loss = self._compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            if self._loss_tracker is not None:
                self._loss_tracker.update_state(
                    loss_module.unscale_loss_for_distribution(loss),
                    sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
                )
            loss = self.optimizer.scale_loss(loss)
            if steps > 1:
                loss = loss / steps
        gradients = tape.gradient(loss, variables)
        self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        # Dense: the global norm of sparse (IndexedSlices) gradients in Keras
        # and TensorFlow counts the rows of a repeated index separately.
        return [None if gradient is None else tf.convert_to_tensor(gradient)
                for gradient in gradients]

    def _accumulated_gradients(self, x, y, sample_weight, variables, steps):
        """The sum over the micro-batches of `_micro_batch_gradients`, in a
        loop that runs one micro-batch at a time."""
        import tensorflow as tf

        micro_batches = tf.nest.map_structure(
            lambda tensor: None if tensor is None else _split(tensor, steps),
            (x, y, sample_weight),
        )
        without_gradient = set()

        def body(index, accumulated):
            micro_x, micro_y, micro_weight = tf.nest.map_structure(
                lambda tensor: None if tensor is None else tensor[index], micro_batches
            )
            gradients = self._micro_batch_gradients(
                micro_x, micro_y, micro_weight, variables, steps
            )
            summed = []
            for position, (total, gradient) in enumerate(zip(accumulated, gradients)):
                if gradient is None:
                    without_gradient.add(position)
                    summed.append(total)
                else:
                    summed.append(total + gradient)
            return index + 1, summed

        _, accumulated = tf.while_loop(
            lambda index, _: index < steps,
            body,
            (tf.constant(0), [tf.zeros_like(variable) for variable in variables]),
            parallel_iterations=1,
        )
        return [
            None if position in without_gradient else total
            for position, total in enumerate(accumulated)
        ]


def _split(tensor, steps):
    """`tensor` of batch `b` reshaped to `(steps, b / steps, ...)`."""
    import tensorflow as tf

    message = (
        f"gradient_accumulation_steps={steps} does not divide the batch of each replica "
        f"into equal micro-batches; make the global batch a multiple of {steps} x the "
        "number of replicas"
    )
    batch = tensor.shape[0]
    shape = tf.shape(tensor)
    split = tf.concat([[steps, shape[0] // steps], shape[1:]], 0)
    if batch is not None:
        if batch % steps:
            raise ValueError(f"{message} (a batch of {batch} examples per replica).")
        return tf.reshape(tensor, split)
    # A batch size known only at run time is checked then (not under XLA).
    with tf.control_dependencies([tf.debugging.assert_equal(shape[0] % steps, 0, message)]):
        return tf.reshape(tensor, split)


def sum_over_replicas(values):
    """`values` (a tensor or a list of tensors) summed over the replicas of a
    `tf.distribute` strategy in one all-reduce; unchanged with one replica or
    outside TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        return values
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or tf.distribute.get_strategy().num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def _sum_gradients_over_replicas(gradients):
    """`sum_over_replicas` of the gradients that are not None."""
    reduced = iter(sum_over_replicas([gradient for gradient in gradients if gradient is not None]))
    return [None if gradient is None else next(reduced) for gradient in gradients]


def _check_optimizer(optimizer):
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "lamb.training.GradientAccumulation with gradient_accumulation_steps > 1 needs "
            f"the TensorFlow backend; KERAS_BACKEND is {keras.backend.backend()!r}."
        )
    for each in _optimizer_chain(optimizer):
        if each.gradient_accumulation_steps:
            raise ValueError(
                f"The optimizer has gradient_accumulation_steps="
                f"{each.gradient_accumulation_steps}: with lamb.training.GradientAccumulation "
                "set gradient_accumulation_steps on the model instead, not on the optimizer."
            )
        if not hasattr(each, "_all_reduce_sum_gradients"):
            raise RuntimeError(
                f"{type(each).__name__} has no _all_reduce_sum_gradients: this Keras version "
                "sums gradients over replicas elsewhere; lamb.training needs updating."
            )


def _optimizer_chain(optimizer):
    """The optimizer and the optimizers it wraps (a LossScaleOptimizer's inner one)."""
    chain = [optimizer]
    while hasattr(chain[-1], "inner_optimizer"):
        chain.append(chain[-1].inner_optimizer)
    return chain


# Optimizers inside `_gradients_already_summed`, by id, with how many
# replicas are: MirroredStrategy runs each replica's step in its own thread,
# one at a time, switching between them at its merge calls.
_ALREADY_SUMMED = collections.Counter()


@contextlib.contextmanager
def _gradients_already_summed(optimizer):
    """Within: the optimizers do not sum the gradients over the replicas
    again (Keras's TensorFlow optimizer does so in `_backend_update_step`)."""
    chain = _optimizer_chain(optimizer)
    for each in chain:
        if not _ALREADY_SUMMED[id(each)]:
            object.__setattr__(each, "_all_reduce_sum_gradients", _unchanged)
        _ALREADY_SUMMED[id(each)] += 1
    try:
        yield
    finally:
        for each in chain:
            _ALREADY_SUMMED[id(each)] -= 1
            if not _ALREADY_SUMMED[id(each)]:
                del _ALREADY_SUMMED[id(each)]
                object.__delattr__(each, "_all_reduce_sum_gradients")


def _unchanged(grads_and_vars):
    return list(grads_and_vars)


class AccumulatingModel(GradientAccumulation, keras.Model):
    """A functional `keras.Model` with in-step gradient accumulation:
    `AccumulatingModel(inputs, outputs, gradient_accumulation_steps=8)`."""
