"""mnist_compare survives kills: files left damaged by a kill, and SIGKILLs at random moments.

Every test compares with one uninterrupted tiny sweep (`reference`): a sweep repeated after a
kill must end with its results, not merely finish.
"""

import csv
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import keras
import pytest

from lamb.mnist.config import make_config
from lamb.mnist.plan import plan_runs
from lamb.mnist.results import read_results
from lamb.mnist.sweep import run_sweep
from tests.test_mnist_compare import MANUAL_DIR, REPO, needs_mnist

pytestmark = needs_mnist

EPOCHS = 3
# Two runs (adam, lamb) of 4 steps an epoch; the trust-ratio logs make them write more files.
GRID = dict(
    optimizers="adam,lamb",
    models="mlp",
    batch_sizes="64",
    epochs=EPOCHS,
    train_examples=256,
    test_examples=100,
    trust_ratio_every=2,
    mnist_manual_dir=MANUAL_DIR,
)
TIMINGS = ("train_seconds", "examples_per_second")


def sweep(output_dir):
    """Runs the tiny sweep in this process; returns its rows and progress lines."""
    lines = []
    config = make_config(output_dir=str(output_dir), **GRID)
    rows = run_sweep(config, log=lines.append)
    return rows, lines


def comparable(rows):
    """Rows without timings, by run id (results.csv lists runs in the order they finished)."""
    rows = sorted(rows, key=lambda row: row["run_id"])
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def assert_same_sweep(output_dir, reference_dir):
    """The same results, per-epoch and trust-ratio logs, tables and files (timings aside)."""
    folders = (output_dir, reference_dir)
    rows, reference_rows = (read_results(Path(d, "results.csv")) for d in folders)
    assert comparable(rows) == comparable(reference_rows)
    for row in rows:
        for name in ("epochs.csv", "trust_ratios.csv"):
            log, reference_log = (Path(d, row["run_dir"], name) for d in folders)
            assert _without_train_seconds(log) == _without_train_seconds(reference_log), log
    markdown, reference_markdown = (Path(d, "results.md").read_text() for d in folders)
    assert markdown == reference_markdown
    assert _files(output_dir) == _files(reference_dir)  # No backups, temporary files, stray runs.


def _without_train_seconds(path):
    with open(path, newline="") as file:
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in csv.DictReader(file)]


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The output folder of an uninterrupted sweep."""
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    rows, _ = sweep(output_dir)
    assert len(rows) == 2
    return output_dir


# ----------------------------------------------------------- files left by a killed sweep


def _damaged_weights(size, tmp_path):
    """The first `size` bytes of a real `.weights.h5` file, as a kill during its save leaves it."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.save_weights(tmp_path / "whole.weights.h5")
    return (tmp_path / "whole.weights.h5").read_bytes()[:size]


@pytest.mark.parametrize("size", [0, 96])
def test_a_run_killed_while_saving_its_keras_backup_is_trained_again(tmp_path, reference, size):
    """Earlier versions resumed from `backup/latest.weights.h5`; damaged, it failed every rerun."""
    output_dir = tmp_path / "sweep"
    shutil.copytree(reference, output_dir)
    config = make_config(output_dir=str(output_dir), **GRID)
    killed_run = plan_runs(config)[0]
    results = output_dir / "results.csv"
    its_row = f"{killed_run.optimizer},".encode()
    lines = results.read_bytes().splitlines(True)
    results.write_bytes(b"".join(line for line in lines if not line.startswith(its_row)))
    # The run's folder as a kill during epoch 2's save left it under the earlier versions.
    interrupted = str(output_dir / "runs" / killed_run.run_name)
    epoch_log = Path(interrupted, "epochs.csv")
    epoch_log.write_text("".join(epoch_log.read_text().splitlines(True)[:3]))
    os.makedirs(os.path.join(interrupted, "backup"))
    Path(interrupted, "backup", "latest.weights.h5").write_bytes(_damaged_weights(size, tmp_path))
    Path(interrupted, "backup", "training_metadata.json").write_text('{"epoch": 1}')

    _, lines = sweep(output_dir)

    assert any("left from an interrupted run" in line and interrupted in line for line in lines)
    assert "1 run(s) trained, 1 skipped" in lines[-2]
    assert_same_sweep(output_dir, reference)


def test_an_empty_results_file_is_read_as_no_results(tmp_path, reference):
    """Earlier versions then appended rows without a header, and the next rerun crashed."""
    (tmp_path / "results.csv").write_bytes(b"")
    sweep(tmp_path)
    assert_same_sweep(tmp_path, reference)
    _, lines = sweep(tmp_path)
    assert "0 run(s) trained, 2 skipped" in lines[-2]
    assert_same_sweep(tmp_path, reference)


@pytest.mark.parametrize("cut", ["mid-row", "in-run_dir"])
def test_a_half_written_results_row_is_skipped_with_a_warning(tmp_path, reference, cut):
    """A row cut short (all fields there when cut in the last one) counts as not written."""
    output_dir = tmp_path / "sweep"
    shutil.copytree(reference, output_dir)
    results = output_dir / "results.csv"
    text = results.read_bytes()
    last_row = text.rstrip(b"\r\n").rsplit(b"\n", 1)[1]
    assert last_row.startswith(b"lamb,")
    keep = len(text) - len(b"\r\n") - (len(last_row) // 2 if cut == "mid-row" else 3)
    results.write_bytes(text[:keep])

    with pytest.warns(UserWarning, match=r"results\.csv, line 3: damaged results row"):
        _, lines = sweep(output_dir)

    assert "1 run(s) trained, 1 skipped" in lines[-2]
    assert_same_sweep(output_dir, reference)


# ----------------------------------------------------------- SIGKILL at random moments


def _command(output_dir):
    flags = {**GRID, "output_dir": output_dir}
    return [sys.executable, "-m", "lamb.mnist_compare"] + [
        f"--{name}={value}" for name, value in flags.items()
    ]


CHILD_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def _kill_after(output_dir, epoch_ends, delay, stderr_path):
    """Starts the sweep, SIGKILLs it `delay` seconds after its `epoch_ends`-th finished epoch.

    Returns the exit code: -SIGKILL, or 0 if the sweep finished first.
    """
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            _command(output_dir), cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
            env=CHILD_ENV,
        )
        watchdog = threading.Timer(120, process.terminate)  # A hang ends in SIGTERM, not SIGKILL.
        watchdog.start()
        seen = 0
        for line in process.stdout:  # Keras prints an epoch's line after its end-of-epoch saves.
            seen += bool(re.search(r" - val_loss: ", line))
            if seen == epoch_ends:
                threading.Timer(delay, process.send_signal, [signal.SIGKILL]).start()
        returncode = process.wait()
        watchdog.cancel()
    assert returncode in (0, -signal.SIGKILL), Path(stderr_path).read_text()[-3000:]
    return returncode


def _interrupted_runs(output_dir):
    """Run folders without a row in results.csv."""
    done = {row["run_dir"] for row in read_results(output_dir / "results.csv")}
    runs = output_dir / "runs"
    folders = {str(p.relative_to(output_dir)) for p in runs.iterdir()} if runs.exists() else set()
    return folders - done


def test_sweep_killed_at_random_moments_ends_with_the_uninterrupted_results(tmp_path, reference):
    """Three SIGKILLs, each a seeded random time after an epoch's end: the first just after the
    first epoch's saves (a run half done), the second in the saves after a run's last epoch
    (its plot, results.csv, the reports), the third after a random epoch; then the command
    is repeated once more and must finish."""
    output_dir = tmp_path / "killed"
    rng = random.Random(15)
    schedule = [  # (finished epochs to wait for, seconds to wait after: from, to)
        (1, (0.0, 0.05)),  # Just after the first epoch's saves: a run half done.
        (EPOCHS, (0.3, 1.2)),  # After a run's last epoch: its plot, results.csv, the reports.
        (rng.randint(1, 2 * EPOCHS), (0.0, 0.4)),
    ]
    interrupted = []
    for attempt, (epoch_ends, delays) in enumerate(schedule):
        runs_left = len(GRID["optimizers"].split(",")) - len(
            read_results(output_dir / "results.csv")
        )
        epoch_ends = min(epoch_ends, runs_left * EPOCHS)
        delay = rng.uniform(*delays)
        returncode = _kill_after(output_dir, epoch_ends, delay, tmp_path / f"stderr{attempt}")
        if returncode == 0:  # Finished before the kill.
            break
        interrupted.append(_interrupted_runs(output_dir))
    assert len(interrupted) >= 2 and interrupted[0], interrupted  # Killed mid-run at least once.

    finished = subprocess.run(
        _command(output_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env=CHILD_ENV,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Sweep done" in finished.stdout
    assert_same_sweep(output_dir, reference)
