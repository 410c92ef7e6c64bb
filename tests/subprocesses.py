"""What the tests that run in subprocesses share.

The test side: the environment of a subprocess (the checkout on PYTHONPATH,
no GPU; under KERAS_BACKEND=jax, N virtual CPU devices), a JAX worker's
result (the JSON line it prints last), and 2 workers joined over 127.0.0.1.
The worker side (run under JAX, imported there): weights gathered from every
device and process, their difference, a gradient's norm.

Nothing here imports JAX or TensorFlow when imported (the suite's process
forks; a JAX worker need not load TensorFlow).
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def app_env(**extra):
    """The environment of a subprocess: this one's, the checkout first on
    PYTHONPATH, TensorFlow's C++ logs off, no GPU; with `extra`."""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env


def jax_env(devices, compilation_cache=None, **extra):
    """`app_env` under KERAS_BACKEND=jax with `devices` virtual CPU devices;
    with `compilation_cache`, a folder of compiled XLA programs that the
    subprocesses given it share (compiling is most of these tests' time: a
    program compiled again, in another run or process, is read from it)."""
    env = {"KERAS_BACKEND": "jax",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    if compilation_cache:
        env.update(JAX_COMPILATION_CACHE_DIR=str(compilation_cache),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return app_env(**env, **extra)


def skip_without(*modules):
    """Skips the test unless `modules` are installed (looked up, not imported)."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}")


def last_json_line(output):
    return json.loads(output.strip().splitlines()[-1])


def run_worker(module, *args, devices=4, **env):
    """`python -m module args` on `devices` JAX devices (`jax_env(devices,
    **env)`): the JSON line it printed last."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=jax_env(devices, **env),
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return last_json_line(result.stdout)


def run_two_processes(module, *args, **env):
    """`python -m module process ID PORT args` for ID 0 and 1, joined over a
    free port of 127.0.0.1, on 2 JAX devices each (`jax_env(2, **env)`): the
    JSON line each printed last."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", module, "process", str(process_id), str(port), *args],
            cwd=REPO, env=jax_env(2, **env), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for process_id in (0, 1)
    ]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stdout[-3000:] + stderr[-6000:]
    return [last_json_line(stdout) for stdout, _ in outputs]


def gathered_weights(model):
    """The model's weights as NumPy arrays, whole: gathered from every device and process."""
    from jax.experimental import multihost_utils

    return [np.asarray(multihost_utils.process_allgather(v.value, tiled=True))
            for v in model.weights]


def max_difference(a, b):
    return float(max(np.max(np.abs(x - y)) for x, y in zip(a, b)))


def gradient_norm(model, batch):
    """The global norm of the gradient of the compiled `model`'s loss on
    `batch` (`(x, y)`) at its weights."""
    import jax
    import keras

    x, y = batch

    def loss_of(trainable):
        mapping = list(zip(model.trainable_variables, trainable))
        with keras.StatelessScope(state_mapping=mapping):
            return model.compute_loss(x=x, y=y, y_pred=model(x, training=True))

    gradients = jax.jit(jax.grad(loss_of))([v.value for v in model.trainable_variables])
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(g))) for g in gradients)))
