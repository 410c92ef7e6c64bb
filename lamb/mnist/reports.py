"""The sweep's reports: `results.md` (a table per batch size) and the plots."""

import os

from lamb.mnist.protocols import display
from lamb.mnist.results import (
    ACCURACY_PER_EPOCH_PNG,
    ACCURACY_VS_BATCH_SIZE_PNG,
    EPOCH_LOG,
    RESULTS_MD,
    TRUST_RATIO_PNG,
    atomic_path,
    read_epoch_log,
)


def write_reports(config, rows):
    """Writes `results.md` and the two accuracy plots for `rows`."""
    if not rows:
        return
    write_markdown(rows, os.path.join(config.output_dir, RESULTS_MD), describe_settings(config))
    plot_accuracy_vs_batch_size(rows, os.path.join(config.output_dir, ACCURACY_VS_BATCH_SIZE_PNG))
    plot_accuracy_per_epoch(
        rows, config.output_dir, os.path.join(config.output_dir, ACCURACY_PER_EPOCH_PNG)
    )


def trust_ratio_plots(config, rows):
    """The trust-ratio plots of those `rows` whose runs logged trust ratios."""
    paths = (os.path.join(config.output_dir, row["run_dir"], TRUST_RATIO_PNG) for row in rows)
    return [path for path in paths if os.path.exists(path)]


def describe_settings(config):
    """One Markdown paragraph stating the sweep's settings."""
    rates = ", ".join(f"{display(n)} {config.learning_rates[n]:g}" for n in config.optimizers)
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
    return (
        f"Protocol `{config.protocol}`: test accuracy (%) on {config.test_examples:,} MNIST "
        f"test images after {config.epochs} epochs of {config.train_examples:,} training "
        f"images ({config.model_variant} initialization), seed {config.seed}. Learning "
        f"rates {rates} ({rate_rule}; {schedule}). Weight decay {decays}{exclusions}."
    )


def write_markdown(rows, path, description=""):
    """One table per batch size (rows: optimizers, columns: models), best in bold."""
    optimizers = _unique(row["optimizer"] for row in rows)
    models = _unique(row["model"] for row in rows)
    accuracy = {(r["batch_size"], r["model"], r["optimizer"]): r["test_accuracy"] for r in rows}
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
                if value is None:
                    cells.append("–")
                else:
                    text = f"{100 * value:.2f}"
                    cells.append(f"**{text}**" if value == best[model] else text)
            lines.append(f"| {display(optimizer)} | " + " | ".join(cells) + " |")
        lines.append("")
    with atomic_path(path) as temporary, open(temporary, "w") as file:
        file.write("\n".join(lines))
    return path


def plot_accuracy_vs_batch_size(rows, path):
    """Test accuracy against batch size, one panel per model, one line per optimizer."""
    from matplotlib.figure import Figure

    models = _unique(row["model"] for row in rows)
    optimizers = _unique(row["optimizer"] for row in rows)
    figure = Figure(figsize=(4.2 * len(models), 3.6), layout="constrained")
    axes_list = figure.subplots(1, len(models), squeeze=False)[0]
    for axes, model in zip(axes_list, models):
        for optimizer in optimizers:
            points = sorted(
                (r["batch_size"], 100 * r["test_accuracy"])
                for r in rows
                if r["model"] == model and r["optimizer"] == optimizer
            )
            if points:
                axes.plot(*zip(*points), marker="o", label=display(optimizer))
        axes.set_xscale("log", base=2)
        axes.set(title=display(model), xlabel="batch size", ylabel="test accuracy (%)")
        axes.grid(True, alpha=0.3)
        axes.legend()
    _save_figure(figure, path)
    return path


def plot_accuracy_per_epoch(rows, output_dir, path):
    """Test accuracy per epoch: a panel per (model, batch size), a line per optimizer."""
    from matplotlib.figure import Figure

    models = _unique(row["model"] for row in rows)
    batch_sizes = sorted({row["batch_size"] for row in rows})
    figure = Figure(figsize=(3.4 * len(batch_sizes), 2.9 * len(models)), layout="constrained")
    grid = figure.subplots(len(models), len(batch_sizes), squeeze=False)
    for row in rows:
        axes = grid[models.index(row["model"])][batch_sizes.index(row["batch_size"])]
        history = read_epoch_log(os.path.join(output_dir, row["run_dir"], EPOCH_LOG))
        axes.plot(
            history["epoch"],
            [100 * a for a in history["test_accuracy"]],
            marker="." if len(history["epoch"]) < 30 else None,
            label=display(row["optimizer"]),
        )
    for i, model in enumerate(models):
        for j, batch_size in enumerate(batch_sizes):
            axes = grid[i][j]
            axes.set(
                title=f"{display(model)}, batch {batch_size}",
                xlabel="epoch",
                ylabel="test accuracy (%)",
            )
            axes.grid(True, alpha=0.3)
            if axes.lines:
                axes.legend(fontsize="small")
    _save_figure(figure, path)
    return path


def _save_figure(figure, path):
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format=os.path.splitext(path)[1][1:] or "png")


def _unique(items):
    return list(dict.fromkeys(items))
