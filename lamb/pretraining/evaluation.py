"""Held-out evaluation (BERT's `--do_eval`): masked-LM and next-sentence loss
and accuracy on `--eval_input_file`, to the log, TensorBoard and JSON."""

from absl import logging
import tensorflow as tf

from lamb.data import pretraining as data

METRICS = ("masked_lm_loss", "masked_lm_accuracy", "next_sentence_loss", "next_sentence_accuracy")


def count_batches(dataset):
    return int(dataset.reduce(0, lambda count, _: count + 1))


def evaluate(model, dataset, steps):
    """`{metric: value}` of `model` on the `steps` batches of `dataset` (the
    means over its masked-LM predictions and its examples); resets the
    model's metrics after."""
    results = model.evaluate(dataset, steps=steps, verbose=0, return_dict=True)
    model.reset_metrics()
    return {name: float(results[name]) for name in METRICS}


class Evaluator:
    """Evaluates a model on the held-out records and reports each result:
    a log line and TensorBoard scalars under `summary_dir` (if given).
    Raises ValueError if `dataset` holds no batch."""

    def __init__(self, model, dataset, summary_dir=None):
        self.model = model
        self.dataset = dataset
        self.steps = count_batches(dataset)
        if not self.steps:
            raise ValueError(
                "--eval_input_file holds fewer records than one batch of --eval_batch_size."
            )
        self.writer = tf.summary.create_file_writer(summary_dir) if summary_dir else None

    def __call__(self, step):
        results = evaluate(self.model, self.dataset, self.steps)
        logging.info("eval at step %d: %s", step,
                     ", ".join(f"{name}={value:.5g}" for name, value in results.items()))
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for name, value in results.items():
                    tf.summary.scalar(name, value)
            self.writer.flush()
        return results
