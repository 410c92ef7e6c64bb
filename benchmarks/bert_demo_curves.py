"""Masked-LM loss and accuracy curves of `lamb.run_pretraining` runs, as one PNG.

Reads the TensorBoard scalars that `lamb.run_pretraining` writes to
`<output_dir>/train`, plots `masked_lm_loss` and `masked_lm_accuracy` against
the step for each run (its own color, marker and line style; one legend; the
settings, given by --title, as the figure's title and the PNG's Title), and
prints each run's final values and the ratio of the first two runs' final
masked-LM accuracies.

    python benchmarks/bert_demo_curves.py --run=lamb=/tmp/demo/lamb \
        --run=adamw=/tmp/demo/adamw --output=docs/bert_demo_shakespeare.png \
        --title="Tiny BERT on Shakespeare, batch 256, 60 steps"

`read_scalars` and `plot_curves` are also used by `bert_large_batch.py`.
"""

import os

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
import tensorflow as tf  # noqa: E402

from lamb.mnist import reports  # noqa: E402  (the MNIST figures' style)

FLAGS = flags.FLAGS

TAGS = ("masked_lm_loss", "masked_lm_accuracy")
LABELS = {"masked_lm_loss": "masked-LM loss", "masked_lm_accuracy": "masked-LM accuracy"}


def define_flags():
    """The script's flags (not defined on import, for the scripts that reuse it)."""
    flags.DEFINE_multi_string("run", None, "label=output_dir of a run (repeat for each run).")
    flags.DEFINE_string("output", "docs/bert_demo_shakespeare.png", "The PNG to write.")
    flags.DEFINE_string(
        "title", "Tiny BERT on Shakespeare, CPU",
        "The figure's title: the runs' settings (model, data, batch, steps, learning rates).",
    )


def read_scalars(output_dir, tags=TAGS, folder="train"):
    """`{tag: [(step, value), ...]}` from a run's TensorBoard event files in
    `<output_dir>/<folder>` ("train", or "eval" for the held-out evaluations);
    a step logged again (by a resumed run) keeps its latest value."""
    path = os.path.join(output_dir, folder)
    if not tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"{path}: no TensorBoard logs of lamb.run_pretraining.")
    values = {}
    for name in sorted(tf.io.gfile.listdir(path)):
        for record in tf.data.TFRecordDataset(os.path.join(path, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag in tags:
                    values.setdefault(value.tag, {})[event.step] = float(
                        tf.make_ndarray(value.tensor)
                    )
    return {tag: sorted(points.items()) for tag, points in values.items()}


def plot_curves(runs, output, title, xlabel="step", ylabel_prefix=""):
    """Plots `runs` (`{label: {tag: [(x, value), ...]}}`), a panel per tag of
    `TAGS` (its axis label after `ylabel_prefix`), to the PNG `output` with `title`."""
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    axes_list = figure.subplots(1, len(TAGS))
    labels = list(runs)
    for axes, tag in zip(axes_list, TAGS):
        for label, scalars in runs.items():
            points = scalars[tag]
            style = reports.line_style(labels, label)
            style["markevery"] = max(1, len(points) // 12)
            axes.plot(*zip(*points), label=label, **style)
        axes.set(xlabel=xlabel, ylabel=ylabel_prefix + LABELS[tag])
        axes.grid(alpha=0.3)
    reports.finish_figure(figure, axes_list, title)
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    reports.save_figure(figure, output, title)


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
    plot_curves(runs, FLAGS.output, FLAGS.title)
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
    define_flags()
    app.run(main)
