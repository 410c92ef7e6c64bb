"""`lamb.distribute` through the app: mirrored and multi-worker (with a killed
worker) with gradient accumulation, fp16 on the several-GPU recipe, TPU."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

pytest.importorskip("keras_hub")

from absl import flags  # noqa: E402
from absl.testing import flagsaver  # noqa: E402

from lamb import distribute  # noqa: E402
from lamb import run_pretraining  # noqa: E402
from tests import pretraining_helpers as helpers  # noqa: E402

# Gradients summed over the micro-batches and replicas, then clipped to a
# global norm well below theirs: equal to one device only if the clipping
# sees the global gradient.
RUN = dict(num_train_steps=8, save_checkpoints_steps=4, iterations_per_loop=2, clip_norm=0.1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return helpers.make_pretraining_data(str(tmp_path_factory.mktemp("bert_data")))


def run_in_process(args):
    with flagsaver.flagsaver():
        flags.FLAGS(["run_pretraining", *args])
        run_pretraining.main([])


@pytest.fixture(scope="module")
def one_device(data, tmp_path_factory):
    """Final weights of the run on one device (default strategy)."""
    output_dir = str(tmp_path_factory.mktemp("one_device"))
    run_in_process(helpers.app_args(data, output_dir, **RUN))
    return helpers.checkpoint_values(os.path.join(output_dir, "ckpt-8"))


# A fresh process: collective-op instance keys left by earlier MirroredStrategy
# use in the test process would clash with this run's.
MIRRORED_RUNNER = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from absl import app
from lamb import run_pretraining
app.run(run_pretraining.main, argv=["run_pretraining", *sys.argv[1:]])
"""


def run_mirrored(args, output_dir):
    subprocess.run(
        [sys.executable, "-c", MIRRORED_RUNNER, *args],
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
        timeout=1200,
    )
    return helpers.model_weights(os.path.join(output_dir, "ckpt-8"))


def test_mirrored_two_cpus_of_four_micro_batches_equal_one_device(data, one_device, tmp_path):
    args = helpers.app_args(data, str(tmp_path), strategy="mirrored",
                            gradient_accumulation_steps=4, **RUN)
    helpers.assert_same_weights(
        run_mirrored(args, str(tmp_path)),
        {k: v for k, v in one_device.items() if k.startswith("model/")},
        rtol=1e-5,
        atol=1e-6,
    )


def test_readme_several_gpu_recipe_shortened_trains_in_fp16(data, tmp_path):
    """The README's several-GPU command (phase-1 flagfile, mirrored, fp16,
    accumulation) with a tiny model, batch and run."""
    args = ["--flagfile=configs/lamb_bert_large_phase1.flags", "--strategy=mirrored",
            "--mixed_precision=fp16", "--gradient_accumulation_steps=2", "--nojit_compile",
            *helpers.app_args(data, str(tmp_path), num_train_steps=8, num_warmup_steps=2,
                              save_checkpoints_steps=4, iterations_per_loop=4)]
    weights = run_mirrored(args, str(tmp_path))
    assert all(tf.math.reduce_all(tf.math.is_finite(w)) for w in weights.values())
    with open(os.path.join(tmp_path, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["global_step"] == 8 and metrics["loss"] < 20


def test_jit_compile_with_mirrored_fails_at_once_naming_the_flags(data, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_RUNNER,
         *helpers.app_args(data, str(tmp_path), strategy="mirrored", jit_compile=True)],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "--jit_compile does not work with --strategy=mirrored over 2 replicas" in result.stderr
    assert not os.listdir(tmp_path)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(args, tmp_path, attempt):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            helpers.start_app(
                args, tmp_path / f"worker{index}-{attempt}.log", TF_CONFIG=json.dumps(tf_config)
            )
        )
    return processes


def _stop(processes):
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


def test_multi_worker_killed_worker_then_restart_resumes(data, one_device, tmp_path):
    output_dir = str(tmp_path / "out")
    args = helpers.app_args(data, output_dir, strategy="multi_worker",
                            gradient_accumulation_steps=2, **RUN)
    processes = _start_workers(args, tmp_path, 0)
    try:
        deadline = time.time() + 240
        while tf.train.latest_checkpoint(output_dir) is None:
            if any(p.poll() is not None for p in processes) or time.time() > deadline:
                pytest.fail((tmp_path / "worker0-0.log").read_text()[-3000:])
            time.sleep(0.05)
        processes[1].send_signal(signal.SIGKILL)  # A worker dies ...
        assert processes[1].wait(timeout=30) == -signal.SIGKILL
    finally:
        _stop(processes)  # ... and the job is torn down.
    assert tf.train.latest_checkpoint(output_dir).endswith("ckpt-4")

    processes = _start_workers(args, tmp_path, 1)
    try:
        for index, process in enumerate(processes):
            log = tmp_path / f"worker{index}-1.log"
            assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        _stop(processes)
    assert "Resuming from" in (tmp_path / "worker0-1.log").read_text()
    assert not [name for name in os.listdir(output_dir) if name.startswith("worker_")]
    final = helpers.checkpoint_values(os.path.join(output_dir, "ckpt-8"))
    helpers.assert_same_weights(
        {k: v for k, v in final.items() if k.startswith("model/")},
        {k: v for k, v in one_device.items() if k.startswith("model/")},
        rtol=1e-5,
        atol=1e-6,
    )
    with open(os.path.join(output_dir, "metrics.json")) as f:
        assert json.load(f)["global_step"] == 8


def test_tpu_without_a_tpu_fails_at_once_with_a_clear_message(data, tmp_path):
    start = time.time()
    result = helpers.run_app(
        helpers.app_args(data, str(tmp_path), use_tpu=True, tpu_name="local"), timeout=120
    )
    assert result.returncode != 0
    assert "--strategy=tpu: no TPU reachable with --tpu_name='local'" in result.stderr
    assert time.time() - start < 120
    assert not os.listdir(tmp_path)


def test_strategy_and_tf_config_errors_name_the_problem(monkeypatch):
    with pytest.raises(ValueError, match="--strategy='gpu' must be one of"):
        distribute.make_strategy("gpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        distribute.multi_worker_strategy()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]},
                                                "task": {"type": "worker", "index": 3}}))
    with pytest.raises(ValueError, match="TF_CONFIG=.* is not a cluster of workers"):
        distribute.multi_worker_strategy()

