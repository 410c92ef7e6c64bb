"""Per-layer trust-ratio diagnostics: a Keras callback, its log file, a plot.

`TrustRatioLogger` records, every `every_steps` optimizer steps and for each
trainable variable:

- `weight_norm`: ‖w‖ before the step;
- `update_norm`: ‖u‖, the norm of the update direction the trust ratio
  divides by (only for optimizers with `layer_statistics()`: LAMB, LARS,
  LAMB16; empty otherwise);
- `step_norm`: ‖Δw‖, the norm of the change the step actually made;
- `trust_ratio`: the ratio the step applied (empty where undefined).

Records go to a CSV file (`read_trust_ratio_log`, `plot_trust_ratios`) and,
optionally, to TensorBoard: histograms over the layers and one scalar per
layer. Written for the TensorFlow backend (the JAX trainer syncs variables
only at epoch ends).
"""

import collections
import csv
import math
import os

import keras
import numpy as np

LOG_FIELDS = ("step", "variable", "weight_norm", "update_norm", "step_norm", "trust_ratio")
_STATISTICS = ("weight_norm", "update_norm", "step_norm", "trust_ratio")


class TrustRatioLogger(keras.callbacks.Callback):
    """Logs per-layer ‖w‖, ‖u‖, ‖Δw‖ and trust ratio every `every_steps` steps.

    Uses `optimizer.layer_statistics()` when the optimizer (or, under mixed
    precision, its `inner_optimizer`) has it; ‖Δw‖ comes from copies of the
    weights taken around each logged step, for every optimizer.

    Args:
        every_steps: Log the steps whose index (the optimizer's iteration
            count before the step) is a multiple of this, ≥ 1.
        csv_path: A CSV file with columns `LOG_FIELDS`, appended to (so a
            resumed run continues its log); `None` for none.
        tensorboard_dir: A directory for TensorBoard summaries; `None` for none.
    """

    def __init__(self, every_steps, csv_path=None, tensorboard_dir=None):
        super().__init__()
        if not isinstance(every_steps, int) or every_steps < 1:
            raise ValueError(
                f"`every_steps` must be an integer ≥ 1; received every_steps={every_steps!r}."
            )
        self.every_steps = every_steps
        self.csv_path = csv_path
        self.tensorboard_dir = tensorboard_dir
        self._step = 0
        self._weights_before = None
        self._csv_file = None
        self._csv_writer = None
        self._summary_writer = None

    def on_train_begin(self, logs=None):
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.csv_path:
            is_new = not os.path.exists(self.csv_path) or not os.path.getsize(self.csv_path)
            self._csv_file = open(self.csv_path, "a", newline="")
            self._csv_writer = csv.writer(self._csv_file)
            if is_new:
                self._csv_writer.writerow(LOG_FIELDS)
        if self.tensorboard_dir:
            import tensorflow as tf

            self._summary_writer = tf.summary.create_file_writer(self.tensorboard_dir)

    def on_train_batch_begin(self, batch, logs=None):
        if self._step % self.every_steps == 0:
            self._weights_before = [
                keras.ops.convert_to_numpy(variable) for variable in self.model.trainable_variables
            ]

    def on_train_batch_end(self, batch, logs=None):
        if self._weights_before is not None:
            self._log(self._step, self._records())
            self._weights_before = None
        self._step += 1

    def on_train_end(self, logs=None):
        if self._csv_file:
            self._csv_file.close()
            self._csv_file = self._csv_writer = None
        if self._summary_writer:
            self._summary_writer.close()
            self._summary_writer = None

    def _records(self):
        """`{variable.path: {statistic: value}}` for the step just made."""
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        layer_statistics = (
            optimizer.layer_statistics() if hasattr(optimizer, "layer_statistics") else {}
        )
        records = {}
        for variable, before in zip(self.model.trainable_variables, self._weights_before):
            after = keras.ops.convert_to_numpy(variable)
            weight_norm, update_norm, trust_ratio = layer_statistics.get(
                variable.path, (_norm(before), math.nan, math.nan)
            )
            records[variable.path] = {
                "weight_norm": weight_norm,
                "update_norm": update_norm,
                "step_norm": _norm(after - before),
                "trust_ratio": trust_ratio,
            }
        return records

    def _log(self, step, records):
        if self._csv_writer:
            for path, values in records.items():
                self._csv_writer.writerow(
                    [step, path] + [_format(values[name]) for name in _STATISTICS]
                )
            self._csv_file.flush()
        if self._summary_writer:
            import tensorflow as tf

            with self._summary_writer.as_default(step=step):
                for name in _STATISTICS:
                    values = [v[name] for v in records.values() if not math.isnan(v[name])]
                    if values:
                        tf.summary.histogram(f"layers/{name}", values)
                for path, values in records.items():
                    for name in _STATISTICS:
                        if not math.isnan(values[name]):
                            tf.summary.scalar(f"{name}/{path}", values[name])
            self._summary_writer.flush()


def read_trust_ratio_log(csv_path):
    """A `TrustRatioLogger` CSV as `{variable: {field: list}}`, fields `LOG_FIELDS[0, 2:]`.

    Missing values are NaN; a step logged twice (a resumed run) keeps its last record.
    """
    by_variable = collections.defaultdict(dict)
    with open(csv_path, newline="") as file:
        for row in csv.DictReader(file):
            by_variable[row["variable"]][int(row["step"])] = {
                name: float(row[name]) if row[name] else math.nan for name in _STATISTICS
            }
    return {
        variable: {
            "step": sorted(steps),
            **{name: [steps[s][name] for s in sorted(steps)] for name in _STATISTICS},
        }
        for variable, steps in by_variable.items()
    }


def plot_trust_ratios(csv_path, output_path, title=None):
    """Plots a `TrustRatioLogger` log to a PNG file; returns `output_path`.

    Left: the trust ratio per layer, where the optimizer defines one;
    variables whose ratio is 1 at every step (excluded from layer adaptation:
    biases, LayerNorm) are named in its title instead of drawn on one line.
    Right: the relative step ‖Δw‖/‖w‖ per layer, comparable across
    optimizers. One legend for both panels (a color per variable).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    log = read_trust_ratio_log(csv_path)
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    ratio_axes, step_axes = figure.subplots(1, 2)
    colors = _colors(len(log))
    ratio_one, adaptive = [], False
    for color, (variable, series) in zip(colors, log.items()):
        label = _short_path(variable)
        ratios = series["trust_ratio"]
        defined = not all(math.isnan(r) for r in ratios)
        adaptive = adaptive or defined
        if all(r == 1.0 for r in ratios):
            ratio_one.append(label)
        elif defined:
            ratio_axes.plot(series["step"], ratios, color=color, label=label)
        relative_step = [  # NaN where undefined or 0 (log scale), e.g. warmup's step 0.
            s / w if w > 0 and s > 0 else math.nan
            for s, w in zip(series["step_norm"], series["weight_norm"])
        ]
        step_axes.plot(series["step"], relative_step, color=color, label=label)
    ratio_title = "Trust ratio per layer"
    if adaptive and ratio_one:
        shown = ", ".join(ratio_one[:2])
        if len(ratio_one) > 2:
            shown += f" and {len(ratio_one) - 2} more"
        ratio_title += f"\n(1 at every step, not drawn: {shown})"
    ratio_axes.set(xlabel="step", ylabel="trust ratio", title=ratio_title)
    step_axes.set(xlabel="step", ylabel="‖Δw‖ / ‖w‖", title="Relative step per layer")
    for axes in (ratio_axes, step_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axes.lines:
            axes.set_yscale("log")
            axes.grid(True, which="both", alpha=0.3)
    if not adaptive:
        ratio_axes.text(
            0.5,
            0.5,
            "no trust ratio\n(not a layer-adaptive optimizer)",
            ha="center",
            va="center",
            transform=ratio_axes.transAxes,
        )
    figure.legend(*step_axes.get_legend_handles_labels(), fontsize="small", loc="outside right center")
    if title:
        figure.suptitle(title)
    figure.savefig(output_path, dpi=100, metadata={"Title": title} if title else None)
    return output_path


def _colors(count):
    """`count` distinguishable colors (tab10, then tab20's, then a colormap)."""
    import matplotlib

    if count <= 10:
        return list(matplotlib.colormaps["tab10"].colors)[:count]
    if count <= 20:
        return list(matplotlib.colormaps["tab20"].colors)[:count]
    colormap = matplotlib.colormaps["turbo"]
    return [colormap(i / max(count - 1, 1)) for i in range(count)]


def _norm(array):
    return float(np.sqrt(np.sum(np.square(array, dtype=np.float64))))


def _format(value):
    return "" if math.isnan(value) else repr(float(value))


def _short_path(path):
    """`mlp/dense_1/kernel` → `dense_1/kernel`."""
    return path.split("/", 1)[-1]
