"""Test accuracy per epoch of chosen `lamb.mnist_compare` runs, in one figure.

For ablations: each `--run` is a run folder (`<output_dir>/runs/<run name>`)
with a label; the runs may have different lengths. A label `PANEL | LINE`
puts the run in panel PANEL (one per model, say), with LINE styled alike in
every panel. Prints each run's last epoch and test accuracy.

    python benchmarks/mnist_run_curves.py --run="2019 LAMB=results/a/runs/bigru-lamb-b16384-3f670aea7017" \\
        --run="bias correction=results/b/runs/..." --title="Bi-GRU, batch 16384" --output=curves.png
    python benchmarks/mnist_run_curves.py --run="Bi-GRU | 2019 LAMB=..." --run="Bi-LSTM | 2019 LAMB=..." ...
"""

import os

os.environ.setdefault("LAMB_QUIET_START", "1")  # Without TensorFlow's start-up messages.

from absl import app, flags  # noqa: E402

from lamb.mnist import reports  # noqa: E402
from lamb.mnist.results import EPOCH_LOG, read_epoch_log  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_multi_string(
    "run", None, "label=run folder, or PANEL | label=run folder (repeat for each run).",
    required=True)
flags.DEFINE_string("output", "run_curves.png", "The PNG to write.")
flags.DEFINE_string("title", None, "The figure's title: the settings the runs share.")


def main(argv):
    del argv
    panels = {}
    for spec in FLAGS.run:
        label, sep, run_dir = spec.partition("=")
        if not sep:
            raise app.UsageError(f"--run={spec!r} must be label=run folder.")
        panel, sep, line = label.rpartition(" | ")
        panels.setdefault(panel.strip() if sep else None, {})[line.strip()] = run_dir
    if None in panels and len(panels) > 1:
        raise app.UsageError("Give every --run a panel (PANEL | label=...) or none.")
    reports.plot_runs_per_epoch(panels, FLAGS.output, FLAGS.title)
    print(f"wrote {FLAGS.output}")
    for panel, runs in panels.items():
        for label, run_dir in runs.items():
            history = read_epoch_log(os.path.join(run_dir, EPOCH_LOG))
            name = f"{panel} | {label}" if panel else label
            print(f"{name}: epoch {history['epoch'][-1]}, test accuracy "
                  f"{100 * history['test_accuracy'][-1]:.2f} %")


if __name__ == "__main__":
    app.run(main)
