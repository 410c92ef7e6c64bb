"""Runs the backend-agnostic tests again under `KERAS_BACKEND=jax`.

Keras picks its backend once per process, so the JAX run is a subprocess.
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parent.parent
BACKEND_AGNOSTIC_TESTS = ["tests/optimizers", "tests/test_schedules.py", "tests/test_factory.py"]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs from the TensorFlow run")
def test_optimizer_tests_pass_under_jax():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *BACKEND_AGNOSTIC_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout
