"""The MNIST comparison: protocols, a tiny real sweep, its files, resuming, bad flags, notebook."""

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import lamb
from lamb.mnist import progress, reports
from lamb.mnist.config import make_config
from lamb.mnist.plan import build_optimizer, plan_runs
from lamb.mnist.protocols import PROTOCOLS
from lamb.mnist.results import read_results
from lamb.mnist.sweep import run_sweep
from lamb.models import mnist as mnist_models
from lamb.optimizers.registry import OPTIMIZERS
from tests.pretraining_helpers import tensorboard_scalars

REPO = Path(__file__).resolve().parents[1]
MANUAL_DIR = os.environ.get("MNIST_MANUAL_DIR") or str(REPO.parent / "shared" / "data" / "mnist")
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
needs_mnist = pytest.mark.skipif(
    not all(os.path.exists(os.path.join(MANUAL_DIR, name)) for name in IDX_FILES),
    reason=f"MNIST IDX files not found in {MANUAL_DIR} (set MNIST_MANUAL_DIR)",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REQUIRED_COLUMNS = (
    "optimizer",
    "model",
    "batch_size",
    "epochs",
    "learning_rate",
    "test_accuracy",
    "test_loss",
    "train_seconds",
    "examples_per_second",
)


def tiny_grid(output_dir, **overrides):
    grid = dict(
        optimizers="adam,lamb",
        models="mlp",
        batch_sizes=[32, 128],
        epochs=2,
        train_examples=512,
        test_examples=200,
        trust_ratio_every=4,
        output_dir=str(output_dir),
        mnist_manual_dir=MANUAL_DIR,
    )
    grid.update(overrides)
    return grid


# ----------------------------------------------------------------- protocols


def test_reference2019_protocol_has_the_2019_settings(tmp_path):
    config = make_config(
        "reference2019",
        optimizers="adam,adamw,lamb",
        models="mlp",
        batch_sizes="64,128,1024,16384",
        output_dir=str(tmp_path),
    )
    runs = plan_runs(config)
    assert len(runs) == 12
    for run in runs:
        assert run.learning_rate == 0.001  # Constant, not scaled with the batch size.
        assert (run.warmup_steps, run.lr_decay_power) == (0, 0.0)
        assert run.epochs == 100
        assert run.train_examples == 55_000 and run.test_examples == 10_000
        assert run.steps_per_epoch == 55_000 // run.batch_size  # TF1's int(n / batch)
        assert run.seed == 12345
        assert run.model_variant == "reference2019"  # N(0, 1) initialization
        assert run.exclude_from_weight_decay is None

    adam, adamw, lamb_optimizer = (build_optimizer(r) for r in runs[:3])
    assert type(adam) is keras.optimizers.Adam
    assert adam.epsilon == 1e-8  # TF1 AdamOptimizer's
    assert type(adamw) is lamb.AdamWeightDecay and adamw.weight_decay == 0.0
    assert type(lamb_optimizer) is lamb.LAMB
    assert lamb_optimizer.weight_decay == 0.01
    assert lamb_optimizer.bias_correction is False
    for optimizer in (adam, adamw, lamb_optimizer):
        assert isinstance(optimizer._learning_rate, keras.Variable)  # a constant rate
        assert float(optimizer.learning_rate) == pytest.approx(0.001)


def test_reference2019_lamb_decays_every_variable(tmp_path):
    """Zero gradients: LAMB's direction is λ·w, its ratio 1/λ, so w ← (1 − η)·w, biases too."""
    config = make_config(
        "reference2019",
        optimizers="lamb",
        models="mlp",
        batch_sizes="64",
        output_dir=str(tmp_path),
    )
    (run,) = plan_runs(config)
    model = mnist_models.build_model(run.model, run.model_variant)
    optimizer = build_optimizer(run)
    before = [np.asarray(v).copy() for v in model.trainable_variables]
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in model.trainable_variables])
    for old, variable in zip(before, model.trainable_variables):
        np.testing.assert_allclose(np.asarray(variable), (1 - 0.001) * old, rtol=1e-5)


def test_exclusions_and_optimizer_options_change_one_thing_at_a_time(tmp_path):
    """The 2019 LAMB with one detail changed at a time, as the flags give it."""
    reference = dict(optimizers="adam,lamb", models="mlp", batch_sizes="64", output_dir=str(tmp_path))
    config = make_config(
        "reference2019",
        **reference,
        exclude_from_weight_decay="bias,layer_norm",
        optimizer_options="LAMB.bias_correction=true,lamb.exclude_from_layer_adaptation=[],"
        "adam.epsilon=1e-7,lamb.weight_norm_bounds=none",
    )
    assert config.exclude_from_weight_decay == ("bias", "layer_norm")
    assert config.optimizer_options == {
        "adam": {"epsilon": 1e-7},  # The protocol's 1e-8, replaced.
        "lamb": {"bias_correction": True, "exclude_from_layer_adaptation": [],
                 "weight_norm_bounds": None},
    }
    optimizer = build_optimizer(plan_runs(config)[1])
    assert optimizer.bias_correction and optimizer.get_config()["exclude_from_layer_adaptation"] == []
    assert optimizer.get_config()["exclude_from_weight_decay"] == ["bias", "layer_norm"]
    modern = make_config(**reference, exclude_from_weight_decay="none",
                         optimizer_options="lamb.exclude_from_layer_adaptation=bias|kernel")
    assert modern.exclude_from_weight_decay is None
    assert modern.optimizer_options["lamb"] == {"exclude_from_layer_adaptation": ["bias|kernel"]}
    # Without them, the run ids of earlier versions: finished runs are still found.
    runs = plan_runs(make_config("reference2019", **reference))
    if keras.backend.backend() == "tensorflow":
        assert [run.run_id for run in runs] == ["f3a871b1e7c7", "ba19edd32a20"]
    # Another backend's runs are other runs (other initial weights): never taken for these.
    for backend in ("tensorflow", "jax", "torch"):
        others = [dataclasses.replace(run, backend=backend) for run in runs]
        assert all((a.run_id == b.run_id) == (a.backend == b.backend)
                   for a, b in zip(runs, others))


@pytest.mark.parametrize(
    "options, message",
    [
        ("lamb.bias_corection=true", r"for lamb .*Argument\(s\) not recognized.*bias_corection"),
        ("lasr.momentum=0.9", r"names optimizer 'lasr'"),
        ("lamb=1", r"takes optimizer\.argument=value pairs; received 'lamb=1'"),
        ("lamb.beta_1=2", r"`beta_1` must be a finite number in \[0.0, 1.0\); received beta_1=2"),
    ],
)
def test_bad_optimizer_options_name_the_flag(tmp_path, options, message):
    with pytest.raises(ValueError, match=r"^`--optimizer_options`.*" + message):
        make_config(optimizers="adam,lamb", models="mlp", batch_sizes="64", output_dir=str(tmp_path),
                    optimizer_options=options, argument_prefix="--")


def test_modern_protocol_scales_and_warms_up(tmp_path):
    config = make_config(
        optimizers="adam,lamb",
        models="mlp",
        batch_sizes="64,256,1024",
        output_dir=str(tmp_path),
    )
    runs = {(r.optimizer, r.batch_size): r for r in plan_runs(config)}
    base = config.learning_rates["lamb"]
    assert runs["lamb", 64].learning_rate == pytest.approx(base)
    assert runs["lamb", 256].learning_rate == pytest.approx(2 * base)  # √(256/64)
    assert runs["lamb", 1024].learning_rate == pytest.approx(4 * base)
    assert runs["lamb", 1024].warmup_steps == 60_000 // 1024  # one epoch
    assert runs["lamb", 64].model_variant == "modern"
    assert runs["lamb", 64].exclude_from_weight_decay == ("bias",)
    assert runs["adam", 64].weight_decay == 0.0
    schedule = build_optimizer(runs["lamb", 1024])._learning_rate
    assert isinstance(schedule, lamb.schedules.WarmupPolynomialDecay)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_registered_optimizer_builds_and_steps(tmp_path, protocol):
    config = make_config(
        protocol,
        optimizers=",".join(OPTIMIZERS),
        models="mlp",
        batch_sizes="64",
        output_dir=str(tmp_path),
    )
    model = mnist_models.build_model("mlp", config.model_variant)
    gradients = [keras.random.normal(v.shape, seed=1) for v in model.trainable_variables]
    for run in plan_runs(config):
        optimizer = build_optimizer(run)
        before = [np.asarray(v).copy() for v in model.trainable_variables]
        for _ in range(2):  # Step 0 of a warmup has learning rate 0.
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        moved = [
            not np.array_equal(b, np.asarray(v)) for b, v in zip(before, model.trainable_variables)
        ]
        assert all(moved), run.optimizer


def test_learning_rate_and_weight_decay_per_optimizer(tmp_path):
    config = make_config(
        optimizers="adam,lamb,lars",
        models="mlp",
        batch_sizes="64",
        learning_rate="0.002,lars=3",
        weight_decay="0.05",
        output_dir=str(tmp_path),
    )
    assert config.learning_rates == {"adam": 0.002, "lamb": 0.002, "lars": 3.0}
    assert config.weight_decays == {"adam": 0.0, "lamb": 0.05, "lars": 0.05}


def test_epochs_per_model(tmp_path):
    config = make_config(
        optimizers="lamb",
        models="mlp,cnn,bigru",
        batch_sizes="64",
        epochs="10,cnn=3,BiGRU=3",
        output_dir=str(tmp_path),
    )
    assert config.epochs == {"mlp": 10, "cnn": 3, "bigru": 3}
    assert {run.model: run.epochs for run in plan_runs(config)} == config.epochs
    text = "10 epochs (MLP), 3 (CNN, Bi-GRU) of 60,000"
    assert text in reports.describe_settings(config)
    assert text in reports.figure_title(config)
    same = make_config(models="mlp,cnn", epochs="4", output_dir=str(tmp_path))
    assert "after 4 epochs of 60,000" in reports.describe_settings(same)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(optimizers="adam,sgdx"), r"optimizers.*subset of \['adam', 'adamw', 'lamb'"),
        (dict(models="mlp,resnet"), r"models.*subset of \['mlp', 'cnn'"),
        (dict(batch_sizes="64,0"), r"batch_sizes.*integer in \[1, inf\)"),
        (dict(batch_sizes="64", train_examples=32), r"batch_sizes.*train_examples=32"),
        (dict(learning_rate="lamb=fast"), r"learning_rate.*'fast'"),
        (dict(learning_rate="lars=1"), r"learning_rate.*'lars'.*not in optimizers"),
        (dict(weight_decay="adam=0.1"), r"weight_decay.*adam"),
        (dict(epochs=0), r"epochs"),
        (dict(epochs="3,cnn=2"), r"`epochs` names model 'cnn', which is not in models=\['mlp'\]"),
        (dict(epochs="3,mlp=0"), r"`epochs\[mlp\]` must be an integer in \[1, inf\)"),
        (dict(test_examples=10_001), r"test_examples.*\[1, 10000\]"),
        (dict(lr_scaling="cubic"), r"lr_scaling.*'sqrt'"),
    ],
)
def test_bad_arguments_name_the_argument_and_allowed_values(tmp_path, arguments, message):
    arguments = {"optimizers": "adam,lamb", "models": "mlp", "batch_sizes": "64", **arguments}
    with pytest.raises(ValueError, match=message):
        make_config(output_dir=str(tmp_path), **arguments)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(learning_rate="nan"), r"`learning_rate` must be a finite number in \[0.0, inf\)"),
        (dict(learning_rate=float("inf")), r"`learning_rate` must be a finite number"),
        (dict(learning_rate="0.001,lamb=-inf"), r"`learning_rate\[lamb\]` must be a finite"),
        (dict(weight_decay="nan"), r"`weight_decay` must be a finite number in \[0.0, inf\)"),
        (dict(weight_decay={"lamb": float("inf")}), r"`weight_decay\[lamb\]` must be a finite"),
        (dict(warmup_epochs=float("nan")), r"`warmup_epochs` must be a finite number in \[0.0"),
        (dict(lr_decay_power=float("inf")), r"`lr_decay_power` must be a finite number in \[0.0"),
        (dict(lr_decay_power=-1.0), r"`lr_decay_power` must be a finite number in \[0.0"),
        (dict(seed=-1), r"`seed` must be an integer in \[0, 4294967295\]; received seed=-1"),
        (dict(trust_ratio_every=2.5), r"`trust_ratio_every` must be an integer; received .*2.5"),
        (dict(trust_ratio_every=-1), r"`trust_ratio_every` must be an integer in \[0, inf\)"),
        (dict(batch_sizes="64.5"), r"`batch_sizes` must be an integer; received .*'64.5'"),
        (dict(epochs=2.5), r"`epochs` must be an integer; received epochs=2.5"),
        (dict(base_batch_size=True), r"`base_batch_size` must be an integer; received .*True"),
        (dict(train_examples=True), r"`train_examples` must be an integer; received .*True"),
        (dict(output_dir=""), r"`output_dir` must be a folder path"),
    ],
)
def test_non_finite_or_out_of_range_settings_are_refused(tmp_path, arguments, message):
    arguments = {"optimizers": "adam,lamb", "models": "mlp", "batch_sizes": "64",
                 "output_dir": str(tmp_path), **arguments}
    with pytest.raises(ValueError, match=message):
        make_config(**arguments)


def test_a_misspelt_setting_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"unknown settings \['epoch'\]; they are \['protocol'"):
        make_config(output_dir=str(tmp_path), epoch=3)


def test_names_are_case_insensitive_and_misspelt_ones_get_the_closest(tmp_path):
    config = make_config(optimizers="LAMB,Adam", models="MLP", batch_sizes="64",
                         protocol="Modern", lr_scaling="SQRT", learning_rate="0.001,Lamb=0.01",
                         output_dir=str(tmp_path))
    assert (config.optimizers, config.models, config.protocol) == (("lamb", "adam"), ("mlp",), "modern")
    assert config.learning_rates["lamb"] == 0.01 and config.lr_scaling == "sqrt"
    with pytest.raises(ValueError, match=r"`models` must be a comma-separated subset of "
                                         r"\['mlp', .*\]; received unknown 'cnnn' \(did you mean "
                                         r"'cnn'\?\), 'resnet'\.$"):
        make_config(models="mlp,cnnn,resnet", output_dir=str(tmp_path))


def test_without_network_or_manual_dir_mnist_fails_in_seconds_saying_what_to_do(tmp_path):
    """No network (a proxy on a closed local port refuses at once; with none,
    the same check waits at most 5 s): one line, not minutes of retries."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("mnist_manual_dir", "no_proxy", "tf_cpp_min_log_level")}
    env.update(PYTHONPATH=str(REPO), HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "lamb.mnist_compare", "--optimizers=lamb", "--models=mlp",
         "--batch_sizes=64", "--epochs=1", f"--data_dir={tmp_path / 'tfds'}",
         f"--output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "mnist_compare: error: MNIST could not be downloaded from storage.googleapis.com "
        "(ProxyError; 5 s timeout); pass --mnist_manual_dir (or set MNIST_MANUAL_DIR) to a "
        "folder with the four IDX files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz."
    ]
    assert seconds < 40, seconds  # TensorFlow's import included (about 10 s here).


def test_a_manual_dir_without_the_idx_files_is_named_at_once(tmp_path):
    from lamb.data import mnist as mnist_data

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(mnist_data.MnistUnavailable, match=rf"MNIST: {tmp_path} \(--mnist_manual_dir "
                                                          r"or \$MNIST_MANUAL_DIR\) lacks "
                                                          r"train-labels-idx1-ubyte\.gz, t10k"):
        mnist_data.load_mnist("test", 10, data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path))


@needs_mnist
@pytest.mark.parametrize(
    "flag, message",
    [
        ("--learning_rate=nan", "`--learning_rate` must be a finite number in [0.0, inf)"),
        ("--weight_decay=lamb=inf", "`--weight_decay[lamb]` must be a finite number in [0.0, inf)"),
    ],
)
def test_command_line_refuses_a_non_finite_setting_before_training(tmp_path, flag, message):
    """On a grid that would train in seconds: nothing is trained, the flag is named."""
    result = subprocess.run(
        [sys.executable, "-m", "lamb.mnist_compare", "--optimizers=lamb", "--models=mlp",
         "--batch_sizes=64", "--epochs=1", "--train_examples=128", "--test_examples=100",
         f"--mnist_manual_dir={MANUAL_DIR}", f"--output_dir={tmp_path}", flag],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------- a real sweep


@needs_mnist
def test_tiny_sweep_writes_csv_markdown_plots_and_skips_finished_runs(tmp_path):
    lines = []
    config = make_config(**tiny_grid(tmp_path))
    rows = run_sweep(config, log=lines.append)
    assert len(rows) == 4 and sum("done before, skipped" in line for line in lines) == 0
    assert lines[0].startswith("MNIST: ")  # Which data the sweep uses.
    assert re.match(r"\[1/4\] adam on mlp, batch 32", lines[1])
    assert "left" in lines[2]
    assert lines[-1].startswith(f"Results: {tmp_path / 'results.md'} ")

    # results.csv: one row per run, the required columns, plausible values.
    with open(tmp_path / "results.csv", newline="") as file:
        reader = csv.DictReader(file)
        assert set(REQUIRED_COLUMNS) <= set(reader.fieldnames)
        written = list(reader)
    assert [(r["optimizer"], int(r["batch_size"])) for r in written] == [
        ("adam", 32),
        ("lamb", 32),
        ("adam", 128),
        ("lamb", 128),
    ]
    for row in written:
        assert row["model"] == "mlp" and int(row["epochs"]) == 2
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0
        assert float(row["test_loss"]) > 0
        steps = 512 // int(row["batch_size"])
        assert float(row["examples_per_second"]) == pytest.approx(
            2 * steps * int(row["batch_size"]) / float(row["train_seconds"]), rel=1e-2
        )
    # Trained well above chance (10 %) even on 512 images.
    assert max(float(r["test_accuracy"]) for r in written) > 0.5

    # results.md: a table per batch size, rows optimizers, columns models.
    markdown = (tmp_path / "results.md").read_text()
    for batch_size in (32, 128):
        section = markdown.split(f"### Batch size {batch_size}\n")[1].split("###")[0]
        table = [line for line in section.splitlines() if line.startswith("|")]
        assert table[0] == "| Optimizer | MLP |"
        for line, optimizer in zip(table[2:], ("Adam", "LAMB")):
            cell = line.split("|")[2].strip().strip("*")
            row = next(
                r
                for r in written
                if r["optimizer"] == optimizer.lower() and int(r["batch_size"]) == batch_size
            )
            assert line.startswith(f"| {optimizer} |")
            assert cell == f"{100 * float(row['test_accuracy']):.2f}"

    # The plots are PNG images, and every run has its trust-ratio log and plot.
    import matplotlib.image

    from PIL import Image

    for name in ("accuracy_vs_batch_size.png", "accuracy_per_epoch.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
        assert matplotlib.image.imread(tmp_path / name).shape[2] in (3, 4)
        # The title states the settings (as the figure's suptitle and PNG Title).
        title = Image.open(tmp_path / name).text["Title"]
        assert "protocol modern: 2 epochs of 512 images, seed 12345" in title
        assert "learning rates Adam 0.001, LAMB 0.005 (at batch 64, sqrt-scaled;" in title
    # Chosen runs in one figure (for ablations), through the script that draws them.
    def run_curves(*args, check=True):
        return subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "mnist_run_curves.py"), *args],
            check=check, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    runs = [f"--run={r['optimizer']} b{r['batch_size']}={tmp_path / r['run_dir']}" for r in written]
    run_curves(*runs, f"--output={tmp_path / 'runs.png'}", "--title=MLP, one setting changed per run")
    assert Image.open(tmp_path / "runs.png").text["Title"] == "MLP, one setting changed per run"
    # A panel per batch size, the optimizers styled alike in both: one line per run printed.
    panel_runs = [
        f"--run=batch {r['batch_size']} | {r['optimizer']}={tmp_path / r['run_dir']}"
        for r in written
    ]
    curves = run_curves(
        *panel_runs, f"--output={tmp_path / 'panels.png'}", "--title=MLP, a panel per batch size"
    )
    assert Image.open(tmp_path / "panels.png").text["Title"] == "MLP, a panel per batch size"
    printed = sorted(line.split(":")[0] for line in curves.stdout.splitlines()[1:])
    assert printed == sorted(f"batch {r['batch_size']} | {r['optimizer']}" for r in written)
    mixed = run_curves(runs[0], panel_runs[1], f"--output={tmp_path / 'mixed.png'}", check=False)
    assert mixed.returncode != 0 and "Give every --run a panel" in mixed.stderr
    for row in written:
        run_dir = tmp_path / row["run_dir"]
        assert (run_dir / "trust_ratios.png").read_bytes()[:8] == PNG_MAGIC
        assert (run_dir / "trust_ratios.csv").stat().st_size > 0
        assert not (run_dir / "backup").exists()  # removed once the run finished

    # Repeating the command runs nothing; a larger grid runs only what is new.
    modified = {
        r["run_id"]: (tmp_path / r["run_dir"] / "epochs.csv").stat().st_mtime_ns for r in written
    }
    lines.clear()
    again = run_sweep(config, log=lines.append)
    assert [r["run_id"] for r in again] == [r["run_id"] for r in written]
    assert sum("done before, skipped" in line for line in lines) == 4
    assert "0 run(s) trained, 4 skipped" in lines[-2]
    lines.clear()
    larger = make_config(**tiny_grid(tmp_path, optimizers="lamb", batch_sizes=[32, 64, 128]))
    run_sweep(larger, log=lines.append)
    assert "1 run(s) trained, 2 skipped" in lines[-2]
    # Only the new run (batch 64) is left, estimated from the finished LAMB runs.
    (starting,) = [line for line in lines if "elapsed" in line]
    examples = lambda row: row["epochs"] * row["steps_per_epoch"] * row["batch_size"]
    finished = [r for r in read_results(tmp_path / "results.csv")
                if r["optimizer"] == "lamb" and r["batch_size"] != 64]
    (new_run,) = [r for r in plan_runs(larger) if r.batch_size == 64]
    seconds_per_example = sum(r["train_seconds"] / examples(r) for r in finished) / len(finished)
    expected = new_run.epochs * new_run.steps_per_epoch * 64 * seconds_per_example
    assert f"about {progress._duration(expected)} left" in starting
    with open(tmp_path / "results.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == 5
    for run_id, mtime in modified.items():
        row = next(r for r in written if r["run_id"] == run_id)
        assert (tmp_path / row["run_dir"] / "epochs.csv").stat().st_mtime_ns == mtime
    # Changing a setting makes a new run.
    changed = make_config(**tiny_grid(tmp_path, batch_sizes=[32], seed=7))
    assert {r.run_id for r in plan_runs(changed)}.isdisjoint(modified)


@needs_mnist
def test_tensorboard_dir_gets_loss_and_accuracy_per_epoch(tmp_path):
    config = make_config(**tiny_grid(tmp_path / "out", optimizers="lamb", batch_sizes=[128],
                                     trust_ratio_every=0, tensorboard_dir=str(tmp_path / "tb")))
    (row,) = run_sweep(config, log=lambda line: None)
    (run_name,) = os.listdir(tmp_path / "tb")
    train = tensorboard_scalars(tmp_path / "tb" / run_name / "train")
    validation = tensorboard_scalars(tmp_path / "tb" / run_name / "validation")
    with open(tmp_path / "out" / row["run_dir"] / "epochs.csv", newline="") as file:
        epochs = list(csv.DictReader(file))
    for scalars, split in ((train, "train"), (validation, "test")):
        for metric in ("loss", "accuracy"):
            logged = scalars[f"epoch_{metric}"]
            assert sorted(logged) == [0, 1]  # One value per epoch.
            for epoch, line in enumerate(epochs):
                assert logged[epoch] == pytest.approx(float(line[f"{split}_{metric}"]), rel=1e-5)


# ------------------------------------------- a diverging run, the data used, bad folders


@pytest.fixture(scope="module")
def diverging_sweep(tmp_path_factory):
    """The app on a fresh tensorflow-datasets folder, with Adam's rate at 1e6:
    `(completed process, data_dir, output_dir)`."""
    if not all(os.path.exists(os.path.join(MANUAL_DIR, name)) for name in IDX_FILES):
        pytest.skip(f"MNIST IDX files not found in {MANUAL_DIR} (set MNIST_MANUAL_DIR)")
    folder = tmp_path_factory.mktemp("diverging")
    data_dir, output_dir = folder / "tfds", folder / "out"
    result = subprocess.run(
        [sys.executable, "-m", "lamb.mnist_compare", "--optimizers=adam,lamb", "--models=mlp",
         "--batch_sizes=128", "--epochs=2", "--train_examples=512", "--test_examples=200",
         "--learning_rate=0.001,adam=1e6", f"--data_dir={data_dir}",
         f"--mnist_manual_dir={MANUAL_DIR}", f"--output_dir={output_dir}"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return result, data_dir, output_dir


def test_a_diverging_run_is_stopped_marked_and_the_sweep_goes_on(diverging_sweep):
    result, _, output_dir = diverging_sweep
    assert result.returncode == 3, result.stderr  # The sweep finished, but a run diverged.
    lines = result.stdout.splitlines()
    (diverged,) = [line for line in lines if "diverged at step" in line]
    assert re.fullmatch(
        r"  diverged at step (\d) of 8 \(loss \S+; last normal loss 2\.\d+\): stopped and "
        r"marked diverged; the sweep goes on\. A lower --learning_rate \(here 1\.41e\+06\) may "
        r"help\.",
        diverged,
    ), diverged
    step = int(re.search(r"step (\d)", diverged).group(1))
    second_run = next(i for i, line in enumerate(lines) if line.startswith("[2/2]"))
    assert lines.index(diverged) < second_run
    adam, lamb_row = read_results(output_dir / "results.csv")
    assert adam["diverged_at_step"] == step and adam["test_accuracy"] is None
    assert adam["test_loss"] is None
    assert lamb_row["diverged_at_step"] is None and 0 < lamb_row["test_accuracy"] <= 1
    epochs = (output_dir / adam["run_dir"] / "epochs.csv").read_text().splitlines()
    assert len(epochs) == 1 + 2  # Stopped in epoch 2, at most 3 steps after step 3.
    markdown = (output_dir / "results.md").read_text()
    assert f"| Adam | diverged (step {step}) |" in markdown
    assert f"| LAMB | **{100 * lamb_row['test_accuracy']:.2f}** |" in markdown
    assert "Sweep done: 2 run(s) trained, 0 skipped, in " in lines[-2]
    assert lines[-2].endswith("; 1 diverged (adam on mlp, batch 128).")


def test_the_app_ends_saying_where_its_results_are(diverging_sweep):
    result, _, output_dir = diverging_sweep
    out = str(output_dir) + os.sep
    assert result.stdout.splitlines()[-1] == (
        f"Results: {out}results.md (a table per batch size), {out}results.csv (a row per run); "
        f"plots: {out}accuracy_vs_batch_size.png, {out}accuracy_per_epoch.png; "
        f"each run's logs: {out}runs{os.sep}."
    )
    for name in ("results.md", "results.csv", "accuracy_vs_batch_size.png",
                 "accuracy_per_epoch.png"):
        assert (output_dir / name).stat().st_size > 0


def test_preparing_mnist_is_one_line_without_tensorflow_datasets_logs(diverging_sweep):
    result, data_dir, _ = diverging_sweep
    assert result.stdout.splitlines()[0] == (
        f"MNIST: preparing tensorflow-datasets' copy in {data_dir / 'mnist' / '3.0.1'} from the "
        f"IDX files in {MANUAL_DIR} (once)"
    )
    assert (data_dir / "mnist" / "3.0.1" / "dataset_info.json").exists()
    for noise in ("Dl Completed", "Generating", "Shuffling", "dataset_info.py", "Downloading and",
                  "Load dataset info", "it/s", "examples/s"):
        assert noise not in result.stdout + result.stderr, noise


@pytest.mark.parametrize("damage", ["missing", "no_file", "truncated", "other"])
def test_a_bad_manual_dir_is_refused_though_mnist_is_prepared(diverging_sweep, tmp_path, damage):
    """Never silently ignored: the prepared copy is used only with the same files."""
    from lamb.data import mnist as mnist_data

    _, data_dir, _ = diverging_sweep
    manual_dir = tmp_path / "idx"
    if damage != "missing":
        manual_dir.mkdir()
        for name in IDX_FILES:
            (manual_dir / name).write_bytes(Path(MANUAL_DIR, name).read_bytes())
    labels = manual_dir / "t10k-labels-idx1-ubyte.gz"
    if damage == "no_file":
        labels.unlink()
    elif damage == "truncated":
        labels.write_bytes(labels.read_bytes()[:1000])
    elif damage == "other":  # A valid gzip file, other labels.
        import gzip

        labels.write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\x27\x10" + bytes(10_000)))
    message = {
        "missing": rf"MNIST: {manual_dir} \(--mnist_manual_dir or \$MNIST_MANUAL_DIR\) is not a "
                   r"folder\.$",
        "no_file": r"\) lacks t10k-labels-idx1-ubyte\.gz \(of the four IDX files",
        "truncated": rf"MNIST: {labels} is not the canonical t10k-labels-idx1-ubyte\.gz \(1,000 "
                     r"bytes, SHA-256 [0-9a-f]{12}\.\.\.; expected 4,542 bytes, "
                     r"f7ae60f92e00\.\.\.\): "
                     r"damaged or another dataset's; replace it with the file from https://",
        "other": r"is not the canonical t10k-labels-idx1-ubyte\.gz",
    }[damage]
    with pytest.raises(mnist_data.MnistUnavailable, match=message):
        mnist_data.load_mnist("test", 10, data_dir=str(data_dir), manual_dir=str(manual_dir))


def test_the_prepared_copy_is_named_with_the_manual_dir_it_matches(diverging_sweep):
    from lamb.data import mnist as mnist_data

    _, data_dir, _ = diverging_sweep
    lines = []
    mnist_data.prepare_mnist(str(data_dir), MANUAL_DIR, log=lines.append)
    assert lines == [
        f"MNIST: tensorflow-datasets' prepared copy in {data_dir / 'mnist' / '3.0.1'} "
        f"(the same files as {MANUAL_DIR})"
    ]


def test_divergence_guard_waits_for_three_bad_steps_or_the_last_one():
    from lamb.mnist.training import DivergenceGuard

    def guarded(losses):
        guard = DivergenceGuard()
        guard.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
        guard.model.stop_training = False
        guard.on_train_begin()
        for step, loss in enumerate(losses):
            if guard.model.stop_training:
                break
            guard.on_train_batch_end(step, {"loss": loss})
        guard.on_train_end()
        return guard.diverged_at_step, guard.steps

    assert guarded([2.3, 2.2, 3000.0, 2.1, 2.0]) == (None, 5)  # A spike that recovers.
    assert guarded([2.3, 2.2, 2301.0, 2302.0, float("inf"), 2.0]) == (3, 5)
    assert guarded([2.3, float("nan"), float("nan"), float("nan"), 1.0]) == (2, 4)
    assert guarded([2.3, 2.2, 2.1, float("nan")]) == (4, 4)  # At the last step.
    assert guarded([float("nan")] * 3) == (1, 3)  # Never a finite loss.
    assert guarded([0.001, 999.0, 1001.0, 1002.0, 1003.0]) == (3, 5)  # 1000 × max(loss, 1).


def test_results_written_before_diverged_at_step_are_read_as_not_diverged(tmp_path):
    from lamb.mnist.results import RESULT_FIELDS_WITHOUT_DIVERGED

    values = dict(optimizer="lamb", model="mlp", batch_size=64, epochs=2, learning_rate=0.005,
                  test_accuracy=0.97, test_loss=0.1, train_seconds=3.0, examples_per_second=99.0,
                  protocol="modern", weight_decay=0.01, warmup_steps=4, steps_per_epoch=4,
                  train_examples=256, test_examples=100, seed=1, run_id="0123456789ab",
                  run_dir=os.path.join("runs", "mlp-lamb-b64-0123456789ab"))
    with open(tmp_path / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, RESULT_FIELDS_WITHOUT_DIVERGED)
        writer.writeheader()
        writer.writerow(values)
    (row,) = read_results(tmp_path / "results.csv")
    assert row == {**values, "diverged_at_step": None}


@pytest.mark.parametrize("parent", [
    "file",
    pytest.param("proc", marks=pytest.mark.skipif(sys.platform != "linux", reason="Linux's /proc")),
])
def test_an_output_dir_that_cannot_be_written_is_refused_before_training(tmp_path, parent):
    (tmp_path / "a_file").write_text("")
    output_dir = str(tmp_path / "a_file" / "out") if parent == "file" else "/proc/lamb_results"
    reason = "Not a directory" if parent == "file" else "No such file or directory"
    message = (rf"^`--output_dir` must be a folder that can be written: {reason}; "
               rf"received --output_dir='{re.escape(output_dir)}'\.$")
    with pytest.raises(ValueError, match=message):
        make_config(output_dir=output_dir, argument_prefix="--")


def test_the_app_logs_a_warmup_longer_than_a_run_on_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")  # An --output_dir in it fails before any training.
    result = subprocess.run(
        [sys.executable, "-m", "lamb.mnist_compare", "--models=mlp", "--epochs=1",
         "--warmup_epochs=5", f"--output_dir={tmp_path / 'a_file' / 'out'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    warning, error = result.stderr.splitlines()
    assert re.fullmatch(
        r"W\d{4} [\d:.]+ +\d+ mnist_compare\.py:\d+\] `--warmup_epochs=5` is longer than "
        r"`--epochs=1` for mlp: .* and never decays\.",
        warning,
    ), warning
    assert error.startswith("mnist_compare: error: `--output_dir` must be a folder that can be")


def test_a_warmup_longer_than_a_run_gets_a_warning(tmp_path):
    with pytest.warns(UserWarning) as warned:
        make_config(warmup_epochs=5, epochs="8,mlp=1", models="mlp,cnn", output_dir=str(tmp_path))
    assert [str(warning.message) for warning in warned] == [
        "`warmup_epochs=5` is longer than `epochs=1` for mlp: its learning rate rises for the "
        "whole run (the warmup is cut at the run's end) and never decays."
    ]


# ----------------------------------------------------------------- the notebook


@needs_mnist
@pytest.mark.notebook
def test_notebook_runs_headless_on_a_small_grid(tmp_path):
    """With the README's command (the notebook extra's `jupyter-execute`)."""
    nbformat = pytest.importorskip("nbformat")
    jupyter_execute = Path(sys.executable).parent / "jupyter-execute"
    if not jupyter_execute.exists():
        pytest.skip(f"{jupyter_execute} not installed (pip install '.[notebook]')")
    grid = tiny_grid(tmp_path, batch_sizes=[64, 256], epochs=1, trust_ratio_every=2)
    # The kernel starts in notebooks/: without PYTHONPATH it would import an installed lamb.
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    executed = tmp_path / "executed.ipynb"
    subprocess.run(
        [str(jupyter_execute), f"--output={executed}", "notebooks/mnist_tensorflow.ipynb"],
        check=True, capture_output=True, cwd=REPO, timeout=900,
        env={**os.environ, "MNIST_NOTEBOOK_GRID": json.dumps(grid), "PYTHONPATH": pythonpath},
    )
    notebook = nbformat.read(executed, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    for noise in ("cuInit", "absl::InitializeLog", "oneDNN", "Warning"):
        assert noise not in streams
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    markdown = [o.get("data", {}).get("text/markdown", "") for o in outputs]
    assert any("### Batch size 256" in text for text in markdown)
    # The last cell's conclusions are this run's: its batch sizes, steps and seed.
    assert markdown[-1].startswith("- **Batch 64** (a run: 8 steps): best per model: MLP: ")
    assert "- **Batch 256** (a run: 2 steps): " in markdown[-1]
    assert "one run per cell (seed 12345)" in markdown[-1]
    assert (tmp_path / "results.csv").exists()


def test_findings_are_computed_from_the_rows(tmp_path):
    config = make_config(models="mlp,cnn", optimizers="adam,adamw,lamb", batch_sizes=[64, 8192],
                         epochs="10,cnn=4", output_dir=str(tmp_path))
    accuracies = {(64, "mlp"): (0.9844, 0.9835, 0.9855), (64, "cnn"): (0.9939, 0.9936, 0.9940),
                  (8192, "mlp"): (0.9598, 0.9207, 0.9714), (8192, "cnn"): (0.9515, 0.1135, None)}
    rows = [
        dict(batch_size=batch_size, model=model, optimizer=optimizer, test_accuracy=accuracy,
             epochs=config.epochs[model], steps_per_epoch=60_000 // batch_size,
             diverged_at_step=None if accuracy is not None else 12)
        for (batch_size, model), values in accuracies.items()
        for optimizer, accuracy in zip(config.optimizers, values)
    ]
    assert reports.describe_findings(config, rows).splitlines() == [
        "- **Batch 64** (a run: MLP 9370 steps, CNN 3748): best per model: MLP: LAMB 98.55 %, "
        "0.11 points over Adam; CNN: LAMB 99.40 %, 0.01 points over Adam. Most accurate: LAMB on "
        "2 of 2 models.",
        "- **Batch 8192** (a run: MLP 70 steps, CNN 28): best per model: MLP: LAMB 97.14 %, 1.16 "
        "points over Adam; CNN: Adam 95.15 %, 83.80 points over AdamW. Most accurate: LAMB on 1 "
        "of 2, Adam on 1 of 2 models. Near chance (10 %): AdamW on CNN (11.35 %). Diverged: LAMB "
        "on CNN (step 12).",
        "- **What it does not show:** one run per cell (seed 12345), so differences of a few "
        "tenths of a point are not established; learning rates set once at batch 64 and "
        "sqrt-scaled from there, not tuned per model or batch size; the runs at batch 8192 (MLP "
        "70 steps, CNN 28) show the optimizers on that budget, not where they would converge.",
    ]


def test_a_second_sweep_on_the_same_folder_stops_at_once_naming_the_first(tmp_path):
    """Two sweeps on one folder would rewrite each other's results.csv."""
    from lamb import _files

    config = make_config(
        "modern", optimizers="lamb", models="mlp", batch_sizes="64", output_dir=str(tmp_path),
    )
    with _files.folder_lock(str(tmp_path)):
        with pytest.raises(RuntimeError, match=rf"output_dir={re.escape(str(tmp_path))} is in "
                                               rf"use by another run \(pid {os.getpid()} on host"):
            run_sweep(config)
    assert sorted(os.listdir(tmp_path)) == [_files.LOCK_FILE]
