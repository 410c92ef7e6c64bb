"""The MNIST optimizer comparison as library functions (used by the
`lamb.mnist_compare` app and `notebooks/mnist_tensorflow.ipynb`).

See `lamb.mnist_compare` for the protocols and outputs.
"""

import contextlib
import csv
import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import time
import warnings

import keras

import lamb
from lamb import _files, diagnostics
from lamb.optimizers import registry
from lamb.optimizers.registry import OPTIMIZERS, WITHOUT_WEIGHT_DECAY
from lamb._checks import check_choice, check_float, check_int, check_learning_rate
from lamb.data import mnist as mnist_data
from lamb.models import mnist as mnist_models

PROTOCOLS = ("modern", "reference2019")
LR_SCALING_RULES = ("none", "sqrt", "linear")
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
ACCURACY_VS_BATCH_SIZE_PNG = "accuracy_vs_batch_size.png"
ACCURACY_PER_EPOCH_PNG = "accuracy_per_epoch.png"
EPOCH_LOG = "epochs.csv"
TRUST_RATIO_LOG = "trust_ratios.csv"
TRUST_RATIO_PNG = "trust_ratios.png"
RESULT_FIELDS = (
    "optimizer",
    "model",
    "batch_size",
    "epochs",
    "learning_rate",
    "test_accuracy",
    "test_loss",
    "train_seconds",
    "examples_per_second",
    "protocol",
    "weight_decay",
    "warmup_steps",
    "steps_per_epoch",
    "train_examples",
    "test_examples",
    "seed",
    "run_id",
    "run_dir",
)
EPOCH_FIELDS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "train_seconds",
)
DISPLAY_NAMES = {
    "adam": "Adam",
    "adamw": "AdamW",
    "lamb": "LAMB",
    "lars": "LARS",
    "lamb16": "LAMB16",
    "keras_adamw": "Keras AdamW",
    "keras_lamb": "Keras Lamb",
    "mlp": "MLP",
    "cnn": "CNN",
    "birnn": "Bi-RNN",
    "bigru": "Bi-GRU",
    "bilstm": "Bi-LSTM",
}

# Rates at batch size 64, from a small search on the MLP (3 epochs, 1e-3 to 2e-2
# for LAMB, 0.3e-3 to 3e-3 for Adam, 1 to 4 for LARS).
_MODERN_LEARNING_RATES = {
    "adam": 1e-3,
    "adamw": 1e-3,
    "keras_adamw": 1e-3,
    "lamb": 5e-3,
    "lamb16": 5e-3,
    "keras_lamb": 5e-3,
    "lars": 1.0,
}
PROTOCOL_DEFAULTS = {
    "modern": {
        "epochs": 10,
        "learning_rates": _MODERN_LEARNING_RATES,
        "weight_decays": {
            name: 0.0 if name in WITHOUT_WEIGHT_DECAY else 0.01 for name in OPTIMIZERS
        },
        "lr_scaling": "sqrt",
        "base_batch_size": 64,
        "warmup_epochs": 1.0,
        "lr_decay_power": 1.0,
        "exclude_from_weight_decay": ("bias",),
        "optimizer_options": {},
        "model_variant": "modern",
        "train_examples": 60_000,
        "test_examples": 10_000,
        "seed": 12345,
    },
    "reference2019": {
        "epochs": 100,
        "learning_rates": {name: 1e-3 for name in OPTIMIZERS},
        "weight_decays": {
            name: 0.0 if name in ("adam", "adamw", "keras_adamw") else 0.01 for name in OPTIMIZERS
        },
        "lr_scaling": "none",
        "base_batch_size": 64,
        "warmup_epochs": 0.0,
        "lr_decay_power": 0.0,
        "exclude_from_weight_decay": None,
        "optimizer_options": {
            "adam": {"epsilon": 1e-8},
            "lamb": {"bias_correction": False},
            "lamb16": {"bias_correction": False},
        },
        "model_variant": "reference2019",
        "train_examples": 55_000,
        "test_examples": 10_000,
        "seed": 12345,
    },
}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A fully resolved sweep; build it with `make_config`."""

    protocol: str
    optimizers: tuple
    models: tuple
    batch_sizes: tuple
    epochs: int
    learning_rates: dict
    weight_decays: dict
    lr_scaling: str
    base_batch_size: int
    warmup_epochs: float
    lr_decay_power: float
    exclude_from_weight_decay: tuple
    optimizer_options: dict
    model_variant: str
    train_examples: int
    test_examples: int
    seed: int
    output_dir: str
    data_dir: str = None
    mnist_manual_dir: str = None
    trust_ratio_every: int = 0
    tensorboard_dir: str = None


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's result; its hash is the run id."""

    protocol: str
    optimizer: str
    model: str
    batch_size: int
    epochs: int
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    steps_per_epoch: int
    lr_decay_power: float
    exclude_from_weight_decay: tuple
    optimizer_options: dict
    model_variant: str
    train_examples: int
    test_examples: int
    seed: int

    @property
    def run_id(self):
        canonical = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def run_name(self):
        return f"{self.model}-{self.optimizer}-b{self.batch_size}-{self.run_id}"


def make_config(
    protocol="modern",
    *,
    optimizers=("adam", "adamw", "lamb"),
    models=mnist_models.MODELS,
    batch_sizes=(64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
    output_dir="results/mnist",
    epochs=None,
    learning_rate=None,
    weight_decay=None,
    lr_scaling=None,
    base_batch_size=None,
    warmup_epochs=None,
    lr_decay_power=None,
    train_examples=None,
    test_examples=None,
    seed=None,
    data_dir=None,
    mnist_manual_dir=None,
    trust_ratio_every=0,
    tensorboard_dir=None,
    argument_prefix="",
):
    """A checked `SweepConfig`: the protocol's settings, overridden where not `None`.

    List arguments take sequences or comma-separated strings; `learning_rate`
    and `weight_decay` take a number, a dict, or a string like
    `"0.001,lamb=0.01"` (see the flags). Numbers must be finite and in range
    (NaN and infinity are refused). Raises `ValueError` naming the argument
    (= the flag: `argument_prefix="--"` writes it as one) and what is allowed.
    """

    def name(argument):
        return argument_prefix + argument

    protocol = check_choice(name("protocol"), protocol, PROTOCOLS)
    defaults = PROTOCOL_DEFAULTS[protocol]
    optimizers = _choices(name("optimizers"), optimizers, tuple(OPTIMIZERS))
    models = _choices(name("models"), models, mnist_models.MODELS)
    batch_sizes = tuple(
        dict.fromkeys(
            check_int(name("batch_sizes"), _from_text(b, int), low=1)
            for b in _split(name("batch_sizes"), batch_sizes)
        )
    )
    train_examples, test_examples = (
        check_int(
            name(f"{split}_examples"),
            _override(defaults, f"{split}_examples", value),
            low=1,
            high=mnist_data.SPLIT_SIZES[split],
        )
        for split, value in (("train", train_examples), ("test", test_examples))
    )
    too_large = [b for b in batch_sizes if b > train_examples]
    if too_large:
        raise ValueError(
            f"`{name('batch_sizes')}` must not exceed {name('train_examples')}={train_examples}; "
            f"received {too_large}."
        )
    learning_rates = _per_optimizer(
        name("learning_rate"),
        learning_rate,
        defaults["learning_rates"],
        optimizers,
        check=lambda label, value: check_learning_rate(value, label),
    )
    weight_decays = _per_optimizer(
        name("weight_decay"),
        weight_decay,
        defaults["weight_decays"],
        optimizers,
        check=lambda label, value: check_float(label, value, low=0.0),
        single_value_skips=WITHOUT_WEIGHT_DECAY,
    )
    for optimizer in WITHOUT_WEIGHT_DECAY:
        if optimizer in optimizers and weight_decays[optimizer]:
            raise ValueError(
                f"`{name('weight_decay')}` for {optimizer} must be 0 ({optimizer} has no weight "
                f"decay); received {optimizer}={weight_decays[optimizer]}."
            )
    return SweepConfig(
        protocol=protocol,
        optimizers=optimizers,
        models=models,
        batch_sizes=batch_sizes,
        epochs=check_int(name("epochs"), _override(defaults, "epochs", epochs), low=1),
        learning_rates=learning_rates,
        weight_decays=weight_decays,
        lr_scaling=check_choice(
            name("lr_scaling"), _override(defaults, "lr_scaling", lr_scaling), LR_SCALING_RULES
        ),
        base_batch_size=check_int(
            name("base_batch_size"), _override(defaults, "base_batch_size", base_batch_size), low=1
        ),
        warmup_epochs=check_float(
            name("warmup_epochs"), _override(defaults, "warmup_epochs", warmup_epochs), low=0.0
        ),
        lr_decay_power=check_float(
            name("lr_decay_power"), _override(defaults, "lr_decay_power", lr_decay_power), low=0.0
        ),
        exclude_from_weight_decay=defaults["exclude_from_weight_decay"],
        optimizer_options={n: defaults["optimizer_options"].get(n, {}) for n in optimizers},
        model_variant=defaults["model_variant"],
        train_examples=train_examples,
        test_examples=test_examples,
        # The seed reaches NumPy's global generator, which takes [0, 2**32 - 1].
        seed=check_int(name("seed"), _override(defaults, "seed", seed), low=0, high=2**32 - 1),
        output_dir=_check_output_dir(name("output_dir"), output_dir),
        data_dir=data_dir,
        mnist_manual_dir=mnist_manual_dir,
        trust_ratio_every=check_int(name("trust_ratio_every"), trust_ratio_every, low=0),
        tensorboard_dir=tensorboard_dir,
    )


def plan_runs(config):
    """The sweep's `RunSpec`s: for each model, each batch size, each optimizer."""
    runs = []
    for model in config.models:
        for batch_size in config.batch_sizes:
            steps_per_epoch = config.train_examples // batch_size
            for optimizer in config.optimizers:
                base_rate = config.learning_rates[optimizer]
                runs.append(
                    RunSpec(
                        protocol=config.protocol,
                        optimizer=optimizer,
                        model=model,
                        batch_size=batch_size,
                        epochs=config.epochs,
                        learning_rate=(
                            base_rate
                            if config.lr_scaling == "none"
                            else lamb.schedules.scale_learning_rate(
                                base_rate, batch_size, config.base_batch_size, config.lr_scaling
                            )
                        ),
                        weight_decay=config.weight_decays[optimizer],
                        warmup_steps=math.ceil(config.warmup_epochs * steps_per_epoch),
                        steps_per_epoch=steps_per_epoch,
                        lr_decay_power=config.lr_decay_power,
                        exclude_from_weight_decay=config.exclude_from_weight_decay,
                        optimizer_options=config.optimizer_options[optimizer],
                        model_variant=config.model_variant,
                        train_examples=config.train_examples,
                        test_examples=config.test_examples,
                        seed=config.seed,
                    )
                )
    return runs


def build_optimizer(spec):
    """The run's optimizer, with BERT's warmup + polynomial decay unless constant."""
    total_steps = spec.epochs * spec.steps_per_epoch
    if spec.warmup_steps == 0 and spec.lr_decay_power == 0:
        learning_rate = spec.learning_rate
    else:
        learning_rate = lamb.schedules.WarmupPolynomialDecay(
            spec.learning_rate,
            decay_steps=total_steps,
            warmup_steps=min(spec.warmup_steps, total_steps),
            power=spec.lr_decay_power,
        )
    exclude = (
        None if spec.exclude_from_weight_decay is None else list(spec.exclude_from_weight_decay)
    )
    return registry.create(
        spec.optimizer, learning_rate, spec.weight_decay, exclude, **spec.optimizer_options
    )


def run_sweep(config, verbose=0, log=functools.partial(print, flush=True)):
    """Runs every planned run not yet in `results.csv`; writes tables and plots.

    A sweep may be killed at any moment and repeated: a run counts as done
    once its row is in `results.csv`, which is rewritten whole to a
    temporary file and renamed over the old one after the run's folder is
    complete (the reports and plots are renamed into place too). The folder
    of a run killed before that is deleted and the run trained again from
    scratch, not resumed: Keras' weight backups leave out the dropout
    layers' random state and the position in the shuffled data stream, so
    a resumed run would end with other numbers than an uninterrupted one.
    A repeated sweep thus ends with the results of an uninterrupted one.
    One sweep at a time per `output_dir` (`run.lock`): a second one stops at
    once, naming the first.

    Args:
        config: A `SweepConfig`.
        verbose: `Model.fit` verbosity (0 silent, 2 one line per epoch).
        log: Where progress lines go.

    Returns:
        The sweep's result rows (dicts with `RESULT_FIELDS`), in plan order.
    """
    os.makedirs(config.output_dir, exist_ok=True)
    with _files.folder_lock(config.output_dir, "output_dir"):
        return _run_sweep(config, verbose, log)


def _run_sweep(config, verbose, log):
    results_path = os.path.join(config.output_dir, RESULTS_CSV)
    runs = plan_runs(config)
    recorded = read_results(results_path)  # This sweep's rows and any other's.
    done = {row["run_id"]: row for row in recorded}
    progress = _Progress(runs, done, log)
    data = None
    rows = []
    for index, spec in enumerate(runs):
        if spec.run_id in done:
            progress.skipped(index, spec)
            rows.append(done[spec.run_id])
            continue
        if data is None:
            data = _load_data(config)
        progress.starting(index, spec)
        if os.path.exists(run_folder(config, spec)):
            log(
                f"  {run_folder(config, spec)} is left from an interrupted run (it has no row "
                f"in {RESULTS_CSV}): deleted, the run starts again from scratch"
            )
        started = time.monotonic()
        row = train_and_evaluate(spec, data, config, verbose=verbose)
        progress.finished(spec, time.monotonic() - started)
        recorded.append(row)
        write_results(results_path, recorded)
        rows.append(row)
        write_reports(config, rows)
    write_reports(config, rows)
    progress.summary()
    return rows


def run_folder(config, spec):
    """The folder of a run's logs: `<output_dir>/runs/<run name>`."""
    return os.path.join(config.output_dir, "runs", spec.run_name)


def train_and_evaluate(spec, data, config, verbose=0):
    """Trains one run from scratch in a fresh run folder and returns its result row.

    Whatever an earlier, interrupted attempt left in the folder (and in its
    TensorBoard folder) is deleted first.
    """
    run_dir = run_folder(config, spec)
    tensorboard_dir = (
        os.path.join(config.tensorboard_dir, spec.run_name) if config.tensorboard_dir else None
    )
    for folder in (run_dir, tensorboard_dir):
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "spec.json"), "w") as file:
        json.dump(dataclasses.asdict(spec), file, indent=1, sort_keys=True)

    keras.backend.clear_session()  # Fresh layer names (dense, dense_1, ...) per run.
    keras.utils.set_random_seed(spec.seed)
    model = mnist_models.build_model(spec.model, spec.model_variant)
    model.compile(
        optimizer=build_optimizer(spec),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    (train_images, train_labels), (test_images, test_labels) = data
    callbacks = [EpochLog(os.path.join(run_dir, EPOCH_LOG))]
    if config.trust_ratio_every:
        callbacks.append(
            diagnostics.TrustRatioLogger(
                config.trust_ratio_every,
                csv_path=os.path.join(run_dir, TRUST_RATIO_LOG),
                tensorboard_dir=tensorboard_dir,
            )
        )
    model.fit(
        mnist_data.train_dataset(
            train_images[: spec.train_examples],
            train_labels[: spec.train_examples],
            spec.batch_size,
            spec.seed,
        ),
        epochs=spec.epochs,
        steps_per_epoch=spec.steps_per_epoch,
        validation_data=mnist_data.eval_dataset(
            test_images[: spec.test_examples], test_labels[: spec.test_examples], 1000
        ),
        callbacks=callbacks,
        shuffle=False,  # The dataset reshuffles itself.
        verbose=verbose,
    )
    if config.trust_ratio_every:
        diagnostics.plot_trust_ratios(
            os.path.join(run_dir, TRUST_RATIO_LOG),
            os.path.join(run_dir, TRUST_RATIO_PNG),
            title=f"{_display(spec.optimizer)}, {_display(spec.model)}, batch {spec.batch_size}",
        )
    epochs = read_epoch_log(os.path.join(run_dir, EPOCH_LOG))
    train_seconds = sum(epochs["train_seconds"])
    return {
        "optimizer": spec.optimizer,
        "model": spec.model,
        "batch_size": spec.batch_size,
        "epochs": spec.epochs,
        "learning_rate": spec.learning_rate,
        "test_accuracy": epochs["test_accuracy"][-1],
        "test_loss": epochs["test_loss"][-1],
        "train_seconds": round(train_seconds, 3),
        "examples_per_second": round(
            spec.epochs * spec.steps_per_epoch * spec.batch_size / train_seconds, 1
        ),
        "protocol": spec.protocol,
        "weight_decay": spec.weight_decay,
        "warmup_steps": spec.warmup_steps,
        "steps_per_epoch": spec.steps_per_epoch,
        "train_examples": spec.train_examples,
        "test_examples": spec.test_examples,
        "seed": spec.seed,
        "run_id": spec.run_id,
        "run_dir": os.path.relpath(run_dir, config.output_dir),
    }


class EpochLog(keras.callbacks.Callback):
    """Appends one `EPOCH_FIELDS` row per epoch to a CSV file.

    `train_seconds` is the epoch's training time, without its evaluation.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._epoch_start = None
        self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        if self._epoch_start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._epoch_start

    def on_epoch_end(self, epoch, logs=None):
        if self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._epoch_start
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "train_loss": logs.get("loss"),
            "train_accuracy": logs.get("accuracy"),
            "test_loss": logs.get("val_loss"),
            "test_accuracy": logs.get("val_accuracy"),
            "train_seconds": round(self._train_seconds, 4),
        }
        is_new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as file:
            writer = csv.DictWriter(file, EPOCH_FIELDS)
            if is_new:
                writer.writeheader()
            writer.writerow({k: _plain(v) for k, v in row.items()})


def read_epoch_log(path):
    """An `EpochLog` file as `{field: list}` by epoch (a repeated epoch keeps its last row)."""
    by_epoch = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            by_epoch[int(row["epoch"])] = {k: float(v) for k, v in row.items() if k != "epoch"}
    epochs = sorted(by_epoch)
    fields = {"epoch": epochs}
    fields.update({k: [by_epoch[e][k] for e in epochs] for k in EPOCH_FIELDS[1:]})
    return fields


def read_results(path):
    """The rows of a `results.csv` (numbers converted); `[]` if it does not exist.

    A damaged line (such as one cut short when an earlier version was killed
    while appending it) is skipped with a warning naming the file and line:
    its run counts as not done, and the next `write_results` leaves it out.
    Lines repeating the header are skipped too.
    """
    if not os.path.exists(path):
        return []
    with open(path, newline="", errors="replace") as file:
        lines = file.read().splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        values = next(csv.reader([line]), [])
        if values == list(RESULT_FIELDS):  # The header (or a repeated one).
            continue
        try:
            rows.append(_result_row(values))
        except ValueError as error:
            warnings.warn(
                f"{path}, line {number}: damaged results row ({error}); skipped (its run "
                "counts as not done) and left out when the file is next written.",
                stacklevel=2,
            )
    return rows


def write_results(path, rows):
    """Writes `rows` as a `results.csv` atomically: a kill leaves the old file or the new one."""
    with _atomic_path(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.DictWriter(file, RESULT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


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
    rates = ", ".join(f"{_display(n)} {config.learning_rates[n]:g}" for n in config.optimizers)
    decays = ", ".join(f"{_display(n)} {config.weight_decays[n]:g}" for n in config.optimizers)
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
            "| Optimizer | " + " | ".join(_display(m) for m in models) + " |",
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
            lines.append(f"| {_display(optimizer)} | " + " | ".join(cells) + " |")
        lines.append("")
    with _atomic_path(path) as temporary, open(temporary, "w") as file:
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
                axes.plot(*zip(*points), marker="o", label=_display(optimizer))
        axes.set_xscale("log", base=2)
        axes.set(title=_display(model), xlabel="batch size", ylabel="test accuracy (%)")
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
            label=_display(row["optimizer"]),
        )
    for i, model in enumerate(models):
        for j, batch_size in enumerate(batch_sizes):
            axes = grid[i][j]
            axes.set(
                title=f"{_display(model)}, batch {batch_size}",
                xlabel="epoch",
                ylabel="test accuracy (%)",
            )
            axes.grid(True, alpha=0.3)
            if axes.lines:
                axes.legend(fontsize="small")
    _save_figure(figure, path)
    return path


class _Progress:
    """Prints which run of how many is going, and an estimate of the time left.

    A run is estimated at the seconds per example of the finished runs (this
    sweep's and those of `results.csv`) most like it: same model, batch size
    and optimizer, else same model and batch size, same model and optimizer,
    same model, else any.
    """

    def __init__(self, runs, done, log):
        self.runs = runs
        self.log = log
        self.started = time.monotonic()
        self.remaining = [spec for spec in runs if spec.run_id not in done]
        self.finished_runs = [  # (spec, seconds per example)
            (spec, done[spec.run_id]["train_seconds"] / _examples(spec))
            for spec in runs
            if spec.run_id in done
        ]
        self.trained = 0

    def skipped(self, index, spec):
        self.log(f"[{index + 1}/{len(self.runs)}] {_describe(spec)}: done before, skipped")

    def starting(self, index, spec):
        self.log(
            f"[{index + 1}/{len(self.runs)}] {_describe(spec)} — elapsed "
            f"{_duration(time.monotonic() - self.started)}, {self._time_left()}"
        )

    def finished(self, spec, seconds):
        self.remaining.remove(spec)
        self.finished_runs.append((spec, seconds / _examples(spec)))
        self.trained += 1

    def summary(self):
        self.log(
            f"Sweep done: {self.trained} run(s) trained, {len(self.runs) - self.trained} skipped, "
            f"in {_duration(time.monotonic() - self.started)}."
        )

    def _time_left(self):
        if not self.finished_runs:
            return "time left unknown until a run finishes"
        left = sum(_examples(spec) * self._seconds_per_example(spec) for spec in self.remaining)
        return f"about {_duration(left)} left"

    def _seconds_per_example(self, spec):
        for key in (
            ("model", "batch_size", "optimizer"),
            ("model", "batch_size"),
            ("model", "optimizer"),
            ("model",),
            (),
        ):
            similar = [
                rate
                for done, rate in self.finished_runs
                if all(getattr(done, k) == getattr(spec, k) for k in key)
            ]
            if similar:
                return sum(similar) / len(similar)


def _examples(spec):
    return spec.epochs * spec.steps_per_epoch * spec.batch_size


def _describe(spec):
    return (
        f"{spec.optimizer} on {spec.model}, batch {spec.batch_size}, "
        f"{spec.epochs} epochs, lr {spec.learning_rate:.3g}"
    )


def _duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _load_data(config):
    kwargs = {"data_dir": config.data_dir, "manual_dir": config.mnist_manual_dir}
    return (
        mnist_data.load_mnist("train", config.train_examples, **kwargs),
        mnist_data.load_mnist("test", config.test_examples, **kwargs),
    )


_INTEGER_RESULTS = (
    "batch_size",
    "epochs",
    "warmup_steps",
    "steps_per_epoch",
    "train_examples",
    "test_examples",
    "seed",
)
_FLOAT_RESULTS = (
    "learning_rate",
    "test_accuracy",
    "test_loss",
    "train_seconds",
    "examples_per_second",
    "weight_decay",
)


def _result_row(values):
    """A `results.csv` line's values as a row, or `ValueError` saying what is damaged."""
    if len(values) != len(RESULT_FIELDS):
        raise ValueError(f"{len(values)} fields instead of {len(RESULT_FIELDS)}")
    row = dict(zip(RESULT_FIELDS, values))
    for fields, kind in ((_INTEGER_RESULTS, int), (_FLOAT_RESULTS, float)):
        for field in fields:
            try:
                row[field] = kind(row[field])
            except ValueError:
                raise ValueError(f"{field}={row[field]!r} is not a number") from None
    # The last field: a line cut short within it still has every field.
    run_dir = os.path.join(
        "runs", f"{row['model']}-{row['optimizer']}-b{row['batch_size']}-{row['run_id']}"
    )
    if row["run_dir"] != run_dir:
        raise ValueError(f"run_dir={row['run_dir']!r} instead of {run_dir!r}")
    return row


@contextlib.contextmanager
def _atomic_path(path):
    """A temporary path beside `path` to write to, renamed onto `path` after the block.

    A kill at any moment leaves `path` whole, old or new; the temporary file
    such a kill may leave behind is overwritten by the next write of `path`.
    """
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.partial")
    yield temporary
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())  # The data on disk before the rename.
    os.replace(temporary, path)


def _save_figure(figure, path):
    with _atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format=os.path.splitext(path)[1][1:] or "png")


def _split(name, value):
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    value = list(value)
    if not value:
        raise ValueError(f"`{name}` must not be empty.")
    return value


def _choices(name, value, allowed):
    chosen = tuple(_split(name, value))
    unknown = [item for item in chosen if item not in allowed]
    if unknown:
        raise ValueError(
            f"`{name}` must be a comma-separated subset of {list(allowed)}; "
            f"received unknown {unknown}."
        )
    return tuple(dict.fromkeys(chosen))


def _from_text(value, kind):
    """`kind(value)` for text that reads as a `kind` (int or float); anything else
    unchanged, for the checks to refuse with their message."""
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            pass
    return value


def _check_output_dir(name, output_dir):
    if not isinstance(output_dir, (str, os.PathLike)) or not str(output_dir):
        raise ValueError(f"`{name}` must be a folder path; received {name}={output_dir!r}.")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"`{name}` must be a folder, not a file; received {name}={output_dir!r}.")
    return output_dir


def _override(defaults, name, value):
    return defaults[name] if value is None else value


def _per_optimizer(name, value, defaults, optimizers, check, single_value_skips=()):
    """Per-optimizer values: the protocol's, then one value for all (but those in
    `single_value_skips`), then `name=value` pairs; each value passed through
    `check(label, value)`, label `name` or `name[optimizer]`."""
    values = {n: defaults[n] for n in optimizers}
    if value is None:
        return values
    if isinstance(value, dict):
        items = value.items()
    else:
        items = (
            item.split("=", 1) if "=" in item else (None, item)
            for item in _split(name, str(value))
        )
    for optimizer, text in items:
        if optimizer is not None:
            optimizer = optimizer.strip()
            if optimizer not in optimizers:
                raise ValueError(
                    f"`{name}` names optimizer {optimizer!r}, which is not in "
                    f"optimizers={list(optimizers)}."
                )
        label = name if optimizer is None else f"{name}[{optimizer}]"
        number = check(label, _from_text(text, float))
        if optimizer is not None:
            values[optimizer] = number
        else:
            for n in optimizers:
                if n not in single_value_skips:
                    values[n] = number
    return values


def _unique(items):
    return list(dict.fromkeys(items))


def _display(name):
    return DISPLAY_NAMES.get(name, name)


def _plain(value):
    """Floats as plain Python numbers for CSV (not NumPy scalars)."""
    return float(value) if value is not None and not isinstance(value, int) else value
