"""benchmarks/bert_steps_jax.py (the BERT part of benchmarks/accelerator_check.sh)
runs as on the accelerator machine, where neither TensorFlow nor keras-hub's
optional dependencies exist (a BERT of hidden 32 and 64 tokens, tiny shapes,
CPU), and prints its figures."""

import json
import os
import subprocess
import sys

from tests.pretraining_helpers import tiny_bert_config
from tests.subprocesses import REPO, skip_without


# Missing as a module is missing (ModuleNotFoundError with its name), so
# keras-hub's optional imports take their "not installed" branch.
WITHOUT_ACCELERATOR_MACHINE_ABSENTEES = """
import runpy
import sys

ABSENT = {"tensorflow", "tensorflow_text", "tf_keras", "kagglehub", "kagglesdk",
          "sentencepiece", "huggingface_hub", "requests"}


class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, Absent())
sys.argv = ["bert_steps_jax.py"] + sys.argv[1:]
runpy.run_path("benchmarks/bert_steps_jax.py", run_name="__main__")
"""


def test_bert_steps_jax_runs_without_tensorflow_and_prints_sequences_per_second(tmp_path):
    skip_without("jax", "keras_hub")
    config = tiny_bert_config(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_ACCELERATOR_MACHINE_ABSENTEES, f"--bert_config={config}",
         "--optimizer=lamb", "--batch_size=2", "--sequence=8", "--predictions=2", "--rounds=1",
         "--steps=1"],
        cwd=REPO, env=dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=REPO),
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    results = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["optimizer"] for r in results] == ["lamb"]
    assert results[0]["sequences_per_s"] > 0
    assert results[0]["peak_memory_bytes"] is None  # CPU devices report no memory statistics.
    assert " lamb: " in result.stdout and "sequences/s" in result.stdout
    assert "peak memory n/a" in result.stdout
