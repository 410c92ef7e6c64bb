"""The training loop's callback: log lines, TensorBoard scalars, checkpoints."""

import os
import time

from absl import logging
import keras
import tensorflow as tf

from lamb.pretraining import run_folder

class TrainingMonitor(keras.callbacks.Callback):
    """Every `log_every` steps and at the last: a log line, TensorBoard
    scalars (the metrics averaged since the previous log); every `save_every`
    steps before the last, a checkpoint. Each `fit` step is one optimizer step.
    """

    def __init__(self, checkpoints, initial_step, num_train_steps, log_every, save_every,
                 train_batch_size, log_trust_ratios, summary_dir):
        super().__init__()
        self.checkpoints = checkpoints
        self.initial_step = initial_step
        self.num_train_steps = num_train_steps
        self.log_every = log_every
        self.save_every = save_every
        self.train_batch_size = train_batch_size
        self.log_trust_ratios = log_trust_ratios
        self.step = initial_step
        self.writer = tf.summary.create_file_writer(summary_dir) if checkpoints.chief else None
        self.last_logs = {}
        self.skipped_steps = 0
        self.loop_start = (time.time(), initial_step)

    def on_train_batch_end(self, batch, logs=None):
        # Keras reports the last batch of a device loop as if the loop were
        # whole; the data (and so the run) ends at num_train_steps.
        self.step = min(self.initial_step + batch + 1, self.num_train_steps)
        if self.step % self.save_every == 0 and self.step < self.num_train_steps:
            self.checkpoints.save(self.step)  # main() saves the last step after metrics.json.
        if self.step % self.log_every and self.step < self.num_train_steps:
            return
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
            self.skipped_steps = skipped
            logs["skipped_steps"] = skipped
        logs["examples_per_second"] = (
            (self.step - start_step) * self.train_batch_size / (time.time() - start_time)
        )
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


def write_metrics(output_dir, step, logs):
    """Writes `<output_dir>/metrics.json` atomically."""
    metrics = {"global_step": step, **logs}
    path = os.path.join(output_dir, "metrics.json")
    run_folder.write_json(path, metrics)
    logging.info("Final metrics in %s: %s", path, metrics)

