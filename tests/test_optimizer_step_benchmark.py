"""`benchmarks/optimizer_step.py` under `KERAS_BACKEND=jax` with TensorFlow
made unimportable, as on an accelerator machine without it: it runs and
writes its Markdown table (one round of one step: no timing is checked)."""

import os
import subprocess
import sys

from tests.subprocesses import REPO, skip_without


WITHOUT_TENSORFLOW = """
import runpy
import sys


class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("no TensorFlow in this test")


sys.meta_path.insert(0, NoTensorFlow())
sys.argv = ["optimizer_step.py"] + sys.argv[1:]
runpy.run_path("benchmarks/optimizer_step.py", run_name="__main__")
"""


def test_the_step_benchmark_runs_under_jax_without_tensorflow(tmp_path):
    skip_without("jax", "optax")
    markdown = tmp_path / "steps.md"
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "benchmarks")]),
    )
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, "--variable_set=50x1M", "--rounds=1",
         "--steps_per_round=1", "--optimizers=adam,lamb,keras_lamb,optax_lamb,optax_adam",
         f"--markdown={markdown}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = markdown.read_text()
    assert "50x1M: 50 variables, 50.0M parameters, jax on cpu" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| Keras Adam", "| `lamb.LAMB`", "| Keras Lamb", "| optax lamb", "| optax adam"
    ]
    # Adam and LAMB keep m and v in float32: 8 bytes of state per parameter,
    # so a step reads w, g, m, v and writes w, m, v.
    for row in rows:
        assert " | 8.00 | 16.00 + 12.00 | " in row, row
    assert "`lamb.LAMB` / optax lamb " in table and "`lamb.LAMB` / Keras Lamb " in table
