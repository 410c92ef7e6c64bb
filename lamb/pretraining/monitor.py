"""The training loop's callback: log lines, TensorBoard scalars, checkpoints."""

import math
import os
import time

from absl import logging
import keras
import tensorflow as tf

from lamb.pretraining import run_folder


METRICS_FILE = "metrics.json"
EXPLODING_LOSS_FACTOR = 10.0  # A loss this many times its lowest logged value has exploded.


class DivergenceGuard:
    """Decides, at each log, whether training has diverged: its loss NaN or
    infinite (where the optimizer cannot skip such steps), above
    `EXPLODING_LOSS_FACTOR` times its lowest logged value, or every step of
    the window skipped for a non-finite gradient, for `patience` steps in a
    row (0: never)."""

    def __init__(self, patience, can_skip):
        self.patience = patience
        self.can_skip = can_skip
        self.lowest_loss = math.inf
        self.last_finite = None  # (step, loss) of the last window with a finite loss.
        self.bad_since = None  # The step before the first window of the current bad run.

    def problem(self, loss, window_steps, skipped):
        """What is wrong with a window of steps (None if nothing)."""
        if window_steps and skipped >= window_steps:
            return "every step skipped for a non-finite gradient"
        if not math.isfinite(loss):
            return None if self.can_skip else "a NaN or infinite loss"
        if loss > EXPLODING_LOSS_FACTOR * self.lowest_loss:
            factor = EXPLODING_LOSS_FACTOR
            return f"a loss above {factor:g} times its lowest ({self.lowest_loss:.5g})"
        return None

    def update(self, step, loss, window_steps, skipped):
        """Takes the window that ends at `step`; returns why the run diverged, or None."""
        problem = self.problem(loss, window_steps, skipped)
        if problem is None:
            self.bad_since = None
            if math.isfinite(loss):
                self.lowest_loss = min(self.lowest_loss, loss)
                self.last_finite = (step, loss)
            return None
        if self.bad_since is None:
            self.bad_since = step - window_steps
        if not self.patience or step - self.bad_since < self.patience:
            return None
        last = ("last finite loss {1:.5g} at step {0}".format(*self.last_finite)
                if self.last_finite else "no finite loss logged")
        return (f"training diverged at step {step}: {problem} for {step - self.bad_since} "
                f"steps ({last})")


class TrainingMonitor(keras.callbacks.Callback):
    """Every `log_every` steps, at each evaluation and at the last step: a log
    line, TensorBoard scalars (the metrics averaged since the previous log)
    and the divergence guard's check; every `eval_every` steps and at the
    last, an evaluation (if `evaluator`), which stops training once the
    masked-LM accuracy reaches `target_mlm_accuracy`; every `save_every`
    steps before the last, a checkpoint, unless training is diverging. Steps
    are optimizer steps, each `fit_steps_per_step` `fit` steps (more than one
    where the optimizer accumulates micro-batches: Keras's
    `gradient_accumulation_steps`).
    """

    def __init__(self, checkpoints, initial_step, num_train_steps, log_every, save_every,
                 train_batch_size, log_trust_ratios, summary_dir, divergence_steps,
                 evaluator=None, eval_every=0, target_mlm_accuracy=None, fit_steps_per_step=1):
        super().__init__()
        self.checkpoints = checkpoints
        self.initial_step = initial_step
        self.num_train_steps = num_train_steps
        self.log_every = log_every
        self.save_every = save_every
        self.train_batch_size = train_batch_size
        self.log_trust_ratios = log_trust_ratios
        self.divergence_steps = divergence_steps
        self.evaluator = evaluator
        self.eval_every = eval_every
        self.target_mlm_accuracy = target_mlm_accuracy
        self.fit_steps_per_step = fit_steps_per_step
        self.step = initial_step
        self.writer = tf.summary.create_file_writer(summary_dir) if checkpoints.chief else None
        self.last_logs = {}
        self.last_eval = {}
        self.target_reached_at = None  # The step whose evaluation reached the target.
        self.diverged = None  # Why training diverged, once the guard says so.
        self.guard = None  # Set in on_train_begin, once the optimizer is known.
        self.skipped_steps = 0
        self.loop_start = (time.time(), initial_step)

    def _evaluates_at(self, step):
        if self.evaluator is None:
            return False
        return step == self.num_train_steps or bool(self.eval_every and step % self.eval_every == 0)

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.fit_steps_per_step:
            return  # A micro-batch inside an optimizer step.
        # Keras reports the last batch of a device loop as if the loop were
        # whole; the data (and so the run) ends at num_train_steps.
        self.step = min(
            self.initial_step + (batch + 1) // self.fit_steps_per_step, self.num_train_steps
        )
        last = self.step == self.num_train_steps
        if self.step % self.save_every == 0 and not last:
            self._save_unless_diverging()  # train() saves the last step, then metrics.json.
        if self.step % self.log_every and not last and not self._evaluates_at(self.step):
            return
        self._log()
        if self.diverged:
            self.model.stop_training = True
        elif self._evaluates_at(self.step):
            self._evaluate()

    def _window(self):
        """The training loss, the steps and the skipped steps since the previous log."""
        loss = float(keras.ops.convert_to_numpy(self.model.get_metrics_result()["loss"]))
        skipped = self._skipped_steps()
        return loss, self.step - self.loop_start[1], (skipped or 0) - self.skipped_steps

    def _save_unless_diverging(self):
        problem = self.guard.problem(*self._window())
        if problem:
            logging.warning("No checkpoint at step %d: %s since step %d.",
                            self.step, problem, self.loop_start[1])
            return
        self.checkpoints.save(self.step)

    def _evaluate(self):
        self.last_eval = self.evaluator(self.step)
        accuracy = self.last_eval["masked_lm_accuracy"]
        if self.target_mlm_accuracy is not None and accuracy >= self.target_mlm_accuracy:
            self.target_reached_at = self.step
            logging.info(
                "Masked-LM accuracy %.5g reached --target_mlm_accuracy=%g at step %d "
                "(%d examples): training stops.", accuracy, self.target_mlm_accuracy,
                self.step, self.step * self.train_batch_size,
            )
            self.model.stop_training = True

    def _log(self):
        start_time, start_step = self.loop_start
        # Read in the cross-replica context: the metrics of all replicas combined.
        logs = {
            name: float(keras.ops.convert_to_numpy(value))
            for name, value in self.model.get_metrics_result().items()
        }
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        skipped = self._skipped_steps()
        if skipped is not None:
            if skipped > self.skipped_steps:
                logging.warning(
                    "%d steps skipped since the previous log for an inf or NaN gradient "
                    "(weights and optimizer state unchanged); %d in this run's optimizer so far.",
                    skipped - self.skipped_steps, skipped,
                )
            logs["skipped_steps"] = skipped
        logs["examples_per_second"] = (
            (self.step - start_step) * self.train_batch_size / (time.time() - start_time)
        )
        self.diverged = self.guard.update(
            self.step, logs["loss"], self.step - start_step, (skipped or 0) - self.skipped_steps
        )
        self.skipped_steps = skipped or 0
        self.last_logs = logs
        logging.info(
            "step %d/%d: %s",
            self.step,
            self.num_train_steps,
            ", ".join(f"{name}={value:.5g}" for name, value in logs.items()),
        )
        if self.writer is not None:
            self._write_summaries(logs)
        self.model.reset_metrics()
        self.loop_start = (time.time(), self.step)

    def on_train_begin(self, logs=None):
        self.skipped_steps = self._skipped_steps() or 0  # as restored
        self.guard = DivergenceGuard(self.divergence_steps, self._skipped_steps() is not None)

    def _skipped_steps(self):
        """The optimizer's count of skipped steps, or None if it cannot skip."""
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        if not getattr(optimizer, "skip_nonfinite_gradients", False):
            return None
        return optimizer.skipped_steps

    def _write_summaries(self, logs):
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        with self.writer.as_default(step=self.step):
            for name, value in logs.items():
                tf.summary.scalar(name, value)
            if self.log_trust_ratios and hasattr(optimizer, "layer_statistics"):
                statistics = optimizer.layer_statistics()
                for index, name in enumerate(("weight_norm", "update_norm", "trust_ratio")):
                    values = [stats[index] for stats in statistics.values()]
                    tf.summary.histogram(f"{name}s", values)
                    for path, stats in statistics.items():
                        tf.summary.scalar(f"{name}/{path}", stats[index])
        self.writer.flush()


def write_metrics(output_dir, step, logs, last_eval=None, target_reached_at=None,
                  train_batch_size=None, diverged=None):
    """Writes `<output_dir>/metrics.json` atomically: the step, the training
    metrics of the last log, the last evaluation's (`eval_<name>`), if the
    target accuracy stopped training, its step and the examples seen, and if
    the divergence guard stopped it, `diverged_at_step` and `diverged` (why)."""
    metrics = {"global_step": step, **logs}
    metrics.update({f"eval_{name}": value for name, value in (last_eval or {}).items()})
    if target_reached_at is not None:
        metrics["target_mlm_accuracy_reached_at_step"] = target_reached_at
        metrics["target_mlm_accuracy_reached_at_examples"] = target_reached_at * train_batch_size
    if diverged is not None:
        metrics["diverged_at_step"] = step
        metrics["diverged"] = diverged
    path = os.path.join(output_dir, METRICS_FILE)
    run_folder.write_json(path, metrics)
    logging.info("Final metrics in %s: %s", path, metrics)
