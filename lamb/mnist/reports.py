"""The sweep's reports: `results.md` (a table per batch size) and the plots."""

import os
import textwrap

from lamb._files import atomic_path
from lamb.mnist.protocols import display
from lamb.mnist.results import (
    ACCURACY_PER_EPOCH_PNG,
    ACCURACY_VS_BATCH_SIZE_PNG,
    EPOCH_LOG,
    RESULTS_MD,
    TRUST_RATIO_PNG,
    read_epoch_log,
)


def write_reports(config, rows):
    """Writes `results.md` and the two accuracy plots for `rows`."""
    if not rows:
        return
    write_markdown(rows, os.path.join(config.output_dir, RESULTS_MD), describe_settings(config))
    title = figure_title(config)
    plot_accuracy_vs_batch_size(
        rows, os.path.join(config.output_dir, ACCURACY_VS_BATCH_SIZE_PNG), title
    )
    plot_accuracy_per_epoch(
        rows, config.output_dir, os.path.join(config.output_dir, ACCURACY_PER_EPOCH_PNG), title
    )


def trust_ratio_plots(config, rows):
    """The trust-ratio plots of those `rows` whose runs logged trust ratios."""
    paths = (os.path.join(config.output_dir, row["run_dir"], TRUST_RATIO_PNG) for row in rows)
    return [path for path in paths if os.path.exists(path)]


def describe_settings(config):
    """One Markdown paragraph stating the sweep's settings."""
    rates = _rates(config)
    decays = ", ".join(f"{display(n)} {config.weight_decays[n]:g}" for n in config.optimizers)
    if config.lr_scaling == "none":
        rate_rule = "not scaled with the batch size"
    else:
        rate_rule = (
            f"at batch size {config.base_batch_size}, {config.lr_scaling}-scaled to each batch size"
        )
    if config.warmup_epochs == 0 and config.lr_decay_power == 0:
        schedule = "constant"
    else:
        schedule = (
            f"{config.warmup_epochs:g} epoch(s) of linear warmup, then polynomial decay "
            f"(power {config.lr_decay_power:g}) to 0"
        )
    exclusions = (
        f", except on variables matching {list(config.exclude_from_weight_decay)}"
        if config.exclude_from_weight_decay
        else ""
    )
    options = "; ".join(
        f"{display(n)} " + ", ".join(f"{k}={v!r}" for k, v in config.optimizer_options[n].items())
        for n in config.optimizers
        if config.optimizer_options[n]
    )
    return (
        f"Protocol `{config.protocol}`: test accuracy (%) on {config.test_examples:,} MNIST "
        f"test images after {epochs_text(config)} of {config.train_examples:,} training "
        f"images ({config.model_variant} initialization), seed {config.seed}. Learning "
        f"rates {rates} ({rate_rule}; {schedule}). Weight decay {decays}{exclusions}."
        + (f" Options: {options}." if options else "")
    )


def figure_title(config):
    """The settings a figure needs to be read on its own, in two lines."""
    rates = _rates(config)
    if config.lr_scaling == "none":
        rule = "not scaled"
    else:
        rule = f"at batch {config.base_batch_size}, {config.lr_scaling}-scaled"
    if config.warmup_epochs == 0 and config.lr_decay_power == 0:
        schedule = "constant"
    else:
        schedule = f"{config.warmup_epochs:g} warmup epoch(s), decay power {config.lr_decay_power:g}"
    return (
        f"MNIST, protocol {config.protocol}: {epochs_text(config)} of "
        f"{config.train_examples:,} images, seed {config.seed}\n"
        f"learning rates {rates} ({rule}; {schedule})"
    )


def epochs_text(config):
    """`10 epochs`, or per model where they differ: `10 epochs (MLP), 4 (CNN, Bi-GRU)`."""
    by_epochs = {}
    for model in config.models:
        by_epochs.setdefault(config.epochs[model], []).append(display(model))
    if len(by_epochs) == 1:
        return f"{next(iter(by_epochs))} epochs"
    return ", ".join(
        f"{n}{' epochs' if i == 0 else ''} ({', '.join(models)})"
        for i, (n, models) in enumerate(by_epochs.items())
    )


def _rates(config):
    """`Adam 0.001, LAMB 0.005`: each optimizer's learning rate at the base batch."""
    return ", ".join(f"{display(n)} {config.learning_rates[n]:g}" for n in config.optimizers)


def describe_findings(config, rows):
    """What `rows` show and do not, as Markdown bullets computed from them:
    per batch size, each model's best optimizer and its margin, runs near
    chance (below 20 %) and diverged runs; then the run's limits."""
    models = _unique(row["model"] for row in rows)
    lines = []
    for batch_size in sorted({row["batch_size"] for row in rows}):
        at_batch = [row for row in rows if row["batch_size"] == batch_size]
        steps = {row["model"]: row["epochs"] * row["steps_per_epoch"] for row in at_batch}
        wins, best_lines = {}, []
        for model in models:
            ranked = sorted(
                (
                    (row["test_accuracy"], display(row["optimizer"]))
                    for row in at_batch
                    if row["model"] == model and row["diverged_at_step"] is None
                ),
                reverse=True,
            )
            if not ranked:
                continue
            (accuracy, best), *others = ranked
            wins[best] = wins.get(best, 0) + 1
            margin = (
                f", {100 * (accuracy - others[0][0]):.2f} points over {others[0][1]}"
                if others
                else ""
            )
            best_lines.append(f"{display(model)}: {best} {100 * accuracy:.2f} %{margin}")
        near_chance = [
            f"{display(r['optimizer'])} on {display(r['model'])} ({100 * r['test_accuracy']:.2f} %)"
            for r in at_batch
            if r["diverged_at_step"] is None and r["test_accuracy"] < 0.2
        ]
        diverged = [
            f"{display(r['optimizer'])} on {display(r['model'])} (step {r['diverged_at_step']})"
            for r in at_batch
            if r["diverged_at_step"] is not None
        ]
        text = (
            f"- **Batch {batch_size}** (a run: {_steps_text(steps)}): best per model: "
            + "; ".join(best_lines)
            + ". Most accurate: "
            + ", ".join(f"{o} on {n} of {len(best_lines)}" for o, n in wins.items())
            + " models."
        )
        if near_chance:
            text += " Near chance (10 %): " + ", ".join(near_chance) + "."
        if diverged:
            text += " Diverged: " + ", ".join(diverged) + "."
        lines.append(text)
    largest = max(row["batch_size"] for row in rows)
    largest_steps = {
        row["model"]: row["epochs"] * row["steps_per_epoch"]
        for row in rows
        if row["batch_size"] == largest
    }
    if config.lr_scaling == "none":
        rule = "the same at every batch size"
    else:
        rule = f"{config.lr_scaling}-scaled from there"
    lines.append(
        f"- **What it does not show:** one run per cell (seed {config.seed}), so differences of "
        f"a few tenths of a point are not established; learning rates set once at batch "
        f"{config.base_batch_size} and {rule}, not tuned per model or batch size; the runs at "
        f"batch {largest} ({_steps_text(largest_steps)}) show the optimizers on that budget, "
        "not where they would converge."
    )
    return "\n".join(lines)


def _steps_text(steps):
    """`70 steps` or, where models differ, `MLP 70 steps, CNN 28`."""
    if len(set(steps.values())) == 1:
        return f"{next(iter(steps.values()))} steps"
    return ", ".join(
        f"{display(model)} {n}{' steps' if i == 0 else ''}"
        for i, (model, n) in enumerate(steps.items())
    )


def write_markdown(rows, path, description=""):
    """One table per batch size (rows: optimizers, columns: models), best in
    bold, a diverged run as `diverged (step N)`."""
    optimizers = _unique(row["optimizer"] for row in rows)
    models = _unique(row["model"] for row in rows)
    accuracy = {
        (r["batch_size"], r["model"], r["optimizer"]): r["test_accuracy"]
        for r in rows
        if r["diverged_at_step"] is None
    }
    diverged = {
        (r["batch_size"], r["model"], r["optimizer"]): r["diverged_at_step"]
        for r in rows
        if r["diverged_at_step"] is not None
    }
    lines = ["# MNIST: test accuracy by optimizer, model and batch size", ""]
    if description:
        lines += [description, ""]
    for batch_size in sorted({row["batch_size"] for row in rows}):
        lines += [
            f"### Batch size {batch_size}",
            "",
            "| Optimizer | " + " | ".join(display(m) for m in models) + " |",
            "| :-- |" + " --: |" * len(models),
        ]
        best = {
            m: max((accuracy.get((batch_size, m, o), -1.0) for o in optimizers)) for m in models
        }
        for optimizer in optimizers:
            cells = []
            for model in models:
                value = accuracy.get((batch_size, model, optimizer))
                step = diverged.get((batch_size, model, optimizer))
                if step is not None:
                    cells.append(f"diverged (step {step})")
                elif value is None:
                    cells.append("–")
                else:
                    text = f"{100 * value:.2f}"
                    cells.append(f"**{text}**" if value == best[model] else text)
            lines.append(f"| {display(optimizer)} | " + " | ".join(cells) + " |")
        lines.append("")
    with atomic_path(path) as temporary, open(temporary, "w") as file:
        file.write("\n".join(lines))
    return path


def plot_accuracy_vs_batch_size(rows, path, title=None):
    """Test accuracy against batch size, one panel per model, one line per
    optimizer (its own marker and line style, so equal lines stay visible);
    a diverged run is an × in its optimizer's color at the bottom of the panel."""
    from matplotlib.figure import Figure

    models = _unique(row["model"] for row in rows)
    optimizers = _unique(row["optimizer"] for row in rows)
    figure = Figure(figsize=(max(3.6 * len(models) + 1.6, 6.0), 4.2), layout="constrained")
    axes_list = figure.subplots(1, len(models), squeeze=False)[0]
    for axes, model in zip(axes_list, models):
        for optimizer in optimizers:
            runs = [r for r in rows if r["model"] == model and r["optimizer"] == optimizer]
            points = sorted(
                (r["batch_size"], 100 * r["test_accuracy"])
                for r in runs
                if r["diverged_at_step"] is None
            )
            style = line_style(optimizers, optimizer)
            if points:
                axes.plot(*zip(*points), label=display(optimizer), **style)
            diverged = [r["batch_size"] for r in runs if r["diverged_at_step"] is not None]
            if diverged:
                axes.plot(
                    diverged,
                    [0.03] * len(diverged),
                    transform=axes.get_xaxis_transform(),  # y: a fraction of the panel's height
                    linestyle="none",
                    marker="x",
                    markersize=9,
                    color=style["color"],
                    label=f"{display(optimizer)} diverged",
                )
        batch_sizes = sorted({r["batch_size"] for r in rows if r["model"] == model})
        axes.set_xscale("log", base=2)
        axes.set_xticks(batch_sizes, [str(b) for b in batch_sizes], rotation=45)
        axes.set(title=display(model), xlabel="batch size", ylabel="test accuracy (%)")
        axes.grid(True, alpha=0.3)
    finish_figure(figure, axes_list, title)
    save_figure(figure, path, title)
    return path


def plot_accuracy_per_epoch(rows, output_dir, path, title=None):
    """Test accuracy per epoch: a panel per (model, batch size), a line per
    optimizer, labelled as diverged (up to the epoch it stopped in) where it did."""
    from matplotlib.figure import Figure

    models = _unique(row["model"] for row in rows)
    optimizers = _unique(row["optimizer"] for row in rows)
    batch_sizes = sorted({row["batch_size"] for row in rows})
    figure = Figure(
        figsize=(3.4 * len(batch_sizes) + 1.6, 2.9 * len(models) + 0.8), layout="constrained"
    )
    grid = figure.subplots(len(models), len(batch_sizes), squeeze=False)
    for row in rows:
        axes = grid[models.index(row["model"])][batch_sizes.index(row["batch_size"])]
        history = read_epoch_log(os.path.join(output_dir, row["run_dir"], EPOCH_LOG))
        style = line_style(optimizers, row["optimizer"])
        if len(history["epoch"]) > 30:
            style["markevery"] = max(1, len(history["epoch"]) // 15)
        label = display(row["optimizer"])
        if row["diverged_at_step"] is not None:
            label += " diverged"
            style["marker"] = "x"
        _plot_test_accuracy(axes, history, label, style)
    for i, model in enumerate(models):
        for j, batch_size in enumerate(batch_sizes):
            _label_epoch_axes(grid[i][j], title=f"{display(model)}, batch {batch_size}")
    finish_figure(figure, grid.flat, title)
    save_figure(figure, path, title)
    return path


def plot_runs_per_epoch(panels, path, title=None):
    """Test accuracy per epoch of chosen runs, a line per run, in one or more panels.

    `panels` maps a panel's title (None for a single untitled panel) to a
    dict from a line's label to a run folder (one with an `epochs.csv`): for
    ablations, where the runs of one optimizer differ in one setting each, or
    for the same settings on several models, a panel each. A label has the
    same style in every panel, and the figure one legend.
    """
    from matplotlib.figure import Figure

    labels = _unique(label for runs in panels.values() for label in runs)
    figure = Figure(figsize=(4.0 * len(panels) + 5.0, 4.6), layout="constrained")
    axes_list = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for axes, (panel, runs) in zip(axes_list, panels.items()):
        for label, run_dir in runs.items():
            history = read_epoch_log(os.path.join(run_dir, EPOCH_LOG))
            style = line_style(labels, label)
            style["markevery"] = max(1, len(history["epoch"]) // 15)
            _plot_test_accuracy(axes, history, label, style)
        _label_epoch_axes(axes, panel)
    finish_figure(figure, list(axes_list), title)
    save_figure(figure, path, title)
    return path


def _plot_test_accuracy(axes, history, label, style):
    """A run's test accuracy (%) per epoch, from its `read_epoch_log` history."""
    accuracy = [100 * a for a in history["test_accuracy"]]
    axes.plot(history["epoch"], accuracy, label=label, **style)


def _label_epoch_axes(axes, title=None):
    """Labels, integer epoch ticks and a grid for a panel of accuracy per epoch."""
    from matplotlib.ticker import MaxNLocator

    axes.set(xlabel="epoch", ylabel="test accuracy (%)")
    if title:
        axes.set_title(title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, alpha=0.3)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_LINE_STYLES = ("-", "--", "-.", ":")


def line_style(names, name):
    """The same color, marker and line style for an optimizer (or run) in every panel."""
    i = names.index(name)
    return {
        "color": f"C{i % 10}",
        "marker": _MARKERS[i % len(_MARKERS)],
        "linestyle": _LINE_STYLES[i % len(_LINE_STYLES)],
        "markersize": 5,
        "markerfacecolor": "none",
    }


def finish_figure(figure, axes_list, title):
    """One legend for the figure (the optimizers), and the settings as title."""
    labels = {}
    for axes in axes_list:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            labels.setdefault(label, handle)
    if labels:
        figure.legend(labels.values(), labels.keys(), loc="outside right center")
    if title:
        # About 8.5 pixels a character at 100 dpi: wrapped to the figure's width.
        width = int(figure.get_figwidth() * 100 / 8.5)
        lines = (textwrap.fill(line, width) for line in title.splitlines())
        figure.suptitle("\n".join(lines), fontsize="medium")


def save_figure(figure, path, title=None):
    """Saves `figure`, with `title` also in the PNG's Title text field."""
    metadata = {"Title": title} if title else None
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png", metadata=metadata)


def _unique(items):
    return list(dict.fromkeys(items))
