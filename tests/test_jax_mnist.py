"""`lamb.mnist_compare` on the JAX backend: the same results as TensorFlow, on
every device count, and a killed sweep resumes.

The JAX work runs in subprocesses (`tests/jax_mnist_worker.py`) under
`KERAS_BACKEND=jax` with 4 virtual CPU devices, and as 2 processes joined
over 127.0.0.1, through the app's own training code; each compares its
weights with one device on the whole batch, LAMB clipped below the
gradient's norm (so a clip of a replica's or a micro-batch's share would show).
"""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from lamb.mnist.config import make_config
from lamb.mnist.results import read_results
from lamb.mnist.training import evaluation_batch_size
from tests import jax_mnist_worker as worker
from tests import subprocesses
from tests.test_mnist_compare import MANUAL_DIR, REPO, needs_mnist
from tests.test_mnist_sweep_kills import GRID, assert_same_sweep

FLOAT32_ROUNDING = 2e-6  # Max abs weight difference over a few steps.
TIMINGS = ("train_seconds", "examples_per_second")
pytest.importorskip("jax")


QUIET = dict(TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


def _env(devices, compilation_cache=None):
    return subprocesses.jax_env(devices, compilation_cache, **QUIET)


def _has_mnist():
    return not needs_mnist.args[0]


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """The XLA programs compiled by the worker and the app (the sweep's are
    compiled once, not for each of its three runs)."""
    return tmp_path_factory.mktemp("jax_compilation_cache")


@pytest.fixture(scope="module")
def devices_run(tmp_path_factory, compilation_cache):
    """The worker's measurements and folder; with MNIST, after `TF_CELL` ran
    here under TensorFlow."""
    out_dir = tmp_path_factory.mktemp("jax_mnist")
    arguments = []
    if _has_mnist():
        worker.tf_cell(str(out_dir / "tf_run"), MANUAL_DIR, out_dir / "tf_cell.npz")
        arguments = [MANUAL_DIR, json.dumps(GRID)]
    return subprocesses.run_worker(
        "tests.jax_mnist_worker", "devices", str(out_dir), *arguments,
        compilation_cache=compilation_cache, **QUIET
    ), out_dir


@needs_mnist
def test_jax_trains_a_cell_as_tensorflow_does(devices_run):
    """One cell of the app on real MNIST, from TensorFlow's initial weights
    (each backend draws its own from the seed): the same weights, accuracy and
    loss, under its own run id."""
    results, _ = devices_run
    cell = results["tf_cell"]
    assert cell["difference"] < FLOAT32_ROUNDING
    jax_row, tf_row = (
        {k: v for k, v in cell[row].items() if k not in TIMINGS}
        for row in ("jax_row", "tensorflow_row")
    )
    assert jax_row.pop("test_loss") == pytest.approx(tf_row.pop("test_loss"), rel=1e-5)
    # The backend is part of a run's id, so that neither takes the other's runs.
    assert jax_row.pop("run_id") != tf_row.pop("run_id")
    assert jax_row.pop("run_dir") != tf_row.pop("run_dir")
    assert jax_row == tf_row


@pytest.mark.parametrize(
    "configuration, batch_devices",
    [("data_parallel", 4), ("model_parallel", 2), ("data_parallel_accumulation", 4)],
)
def test_distributed_runs_equal_one_device(devices_run, configuration, batch_devices):
    results, _ = devices_run
    assert results["devices"] == 4
    assert results["gradient_norm"] > 10 * worker.CLIPNORM  # The clip acts.
    run = results[configuration]
    assert run["batch_devices"] == batch_devices
    assert run["difference"] < FLOAT32_ROUNDING
    assert run["test_loss"] == pytest.approx(results["reference_test_loss"], rel=1e-5)


def test_model_parallel_splits_the_mlp_kernels(devices_run):
    results, _ = devices_run
    assert results["model_parallel"]["sharded"] == [
        "mlp/dense/kernel", "mlp/dense_1/kernel", "mlp/dense_2/kernel", "mlp/logits/kernel"
    ]
    assert results["data_parallel"]["sharded"] == []


def test_a_model_axis_that_cannot_split_the_kernels_is_a_clear_error(devices_run):
    results, _ = devices_run
    assert results["model_axis_error"] == (
        "--mesh_shape=1,3: MODEL (3) must divide 256, the width of the kernels model_parallel "
        "splits."
    )


def test_two_processes_equal_one_process(devices_run):
    _, out_dir = devices_run
    results = subprocesses.run_two_processes("tests.jax_mnist_worker", str(out_dir), **QUIET)
    for process_id, result in enumerate(results):
        assert result["process"] == process_id
        assert (result["devices"], result["local_devices"], result["batch_devices"]) == (4, 2, 4)
        assert result["difference"] < FLOAT32_ROUNDING


def _command(output_dir):
    return [sys.executable, "-m", "lamb.mnist_compare", f"--output_dir={output_dir}"] + [
        f"--{name}={value}" for name, value in GRID.items()
    ]


@needs_mnist
def test_a_sweep_killed_on_jax_resumes_to_the_uninterrupted_results(
        devices_run, compilation_cache, tmp_path):
    """SIGKILL at the end of the first epoch (a run half done), then the same
    command: the results of the worker's uninterrupted sweep, to the byte."""
    _, out_dir = devices_run
    output_dir = tmp_path / "killed"
    process = subprocess.Popen(_command(output_dir), cwd=REPO, env=_env(4, compilation_cache),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if re.search(r" - val_loss: ", line):  # After the first epoch's files are written.
            process.send_signal(signal.SIGKILL)
            break
    assert process.wait(timeout=300) == -signal.SIGKILL
    assert read_results(output_dir / "results.csv") == []
    assert os.listdir(output_dir / "runs")  # The first run's folder, without its row.

    finished = subprocess.run(_command(output_dir), cwd=REPO, env=_env(4, compilation_cache), capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "left from an interrupted run" in finished.stdout
    assert_same_sweep(output_dir, out_dir / "sweep")


@pytest.mark.parametrize(
    "backend, flags, message",
    [
        ("tensorflow", ["--distribution=data_parallel"],
         "--distribution=data_parallel needs the JAX backend (KERAS_BACKEND=jax); KERAS_BACKEND "
         "is 'tensorflow', where mnist_compare trains on one device."),
        ("jax", ["--distribution=data_parallel", "--batch_sizes=64,6"],
         "`--batch_sizes` must be divisible by 4, the number of devices each batch is split "
         "over; received 6."),
    ],
)
def test_distribution_flags_get_one_line_errors(tmp_path, backend, flags, message):
    env = dict(_env(4), KERAS_BACKEND=backend)
    result = subprocess.run(
        [sys.executable, "-m", "lamb.mnist_compare", "--optimizers=lamb", "--models=mlp",
         f"--output_dir={tmp_path / 'out'}", *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"mnist_compare: error: {message}"]
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(batch_sizes="64,6,10"), r"^`batch_sizes` must be divisible by 4, the number of "
                                      r"devices each batch is split over; received \[6, 10\]\.$"),
        (dict(test_examples=10), r"^`test_examples` must be divisible by 4, .*; received 10\.$"),
    ],
)
def test_batches_must_divide_by_the_devices_they_are_split_over(tmp_path, arguments, message):
    arguments = {"optimizers": "lamb", "models": "mlp", "batch_sizes": "64", **arguments}
    with pytest.raises(ValueError, match=message):
        make_config(output_dir=str(tmp_path), batch_devices=4, **arguments)
    make_config(output_dir=str(tmp_path), **arguments)  # One device takes them.


@pytest.mark.parametrize(
    "test_examples, batch_devices, expected",
    [(10_000, 1, 1000), (10_001, 1, 1000), (10_000, 8, 1000), (10_000, 16, 400), (100, 4, 100),
     (12, 4, 12), (2008, 8, 8), (8192, 2048, 2048)],
)
def test_evaluation_batches_are_whole_on_several_devices(test_examples, batch_devices, expected):
    assert evaluation_batch_size(test_examples, batch_devices) == expected
