"""Masked-LM loss and accuracy curves of `lamb.run_pretraining` runs, as one PNG.

Reads the TensorBoard scalars that `lamb.run_pretraining` writes to
`<output_dir>/train`, plots `masked_lm_loss` and `masked_lm_accuracy` against
the step for each run, and prints each run's final values and the ratio of the
first two runs' final masked-LM accuracies.

    python benchmarks/bert_demo_curves.py --run=lamb=/tmp/demo/lamb \
        --run=adamw=/tmp/demo/adamw --output=docs/bert_demo_shakespeare.png
"""

import os

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_multi_string("run", None, "label=output_dir of a run (repeat for each run).")
flags.DEFINE_string("output", "docs/bert_demo_shakespeare.png", "The PNG to write.")
flags.DEFINE_string("title", "Tiny BERT on Shakespeare, CPU", "The figure's title.")

TAGS = ("masked_lm_loss", "masked_lm_accuracy")


def read_scalars(output_dir):
    """`{tag: [(step, value), ...]}` from a run's TensorBoard event files."""
    train_dir = os.path.join(output_dir, "train")
    if not tf.io.gfile.isdir(train_dir):
        raise FileNotFoundError(f"{train_dir}: no TensorBoard logs of lamb.run_pretraining.")
    values = {}
    for name in sorted(tf.io.gfile.listdir(train_dir)):
        for record in tf.data.TFRecordDataset(os.path.join(train_dir, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag in TAGS:
                    values.setdefault(value.tag, {})[event.step] = float(
                        tf.make_ndarray(value.tensor)
                    )
    return {tag: sorted(points.items()) for tag, points in values.items()}


def main(argv):
    del argv
    runs = {}
    for spec in FLAGS.run or []:
        label, sep, output_dir = spec.partition("=")
        if not sep:
            raise ValueError(f"--run={spec!r} must be label=output_dir.")
        runs[label] = read_scalars(output_dir)
    if not runs:
        raise ValueError("Give at least one --run=label=output_dir.")
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, tag in zip(axes, TAGS):
        for label, scalars in runs.items():
            steps, values = zip(*scalars[tag])
            ax.plot(steps, values, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(tag.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(FLAGS.title)
    figure.tight_layout()
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    figure.savefig(FLAGS.output, dpi=100)
    print(f"wrote {FLAGS.output}")
    final = {}
    for label, scalars in runs.items():
        final[label] = {tag: scalars[tag][-1] for tag in TAGS}
        step, loss = final[label]["masked_lm_loss"]
        _, accuracy = final[label]["masked_lm_accuracy"]
        print(f"{label:<8} step {step}: masked_lm_loss {loss:.4f}, masked_lm_accuracy {accuracy:.4f}")
    labels = list(runs)
    if len(labels) >= 2:
        a, b = (final[label]["masked_lm_accuracy"][1] for label in labels[:2])
        print(f"final masked_lm_accuracy {labels[0]}/{labels[1]}: {a / b:.3f}")


if __name__ == "__main__":
    app.run(main)
