"""benchmarks/bert_steps_tf_jax.py runs (a BERT of hidden 32 and 8 tokens, one
round of one step, CPU): examples/s and peak memory of the two-device
configuration (the one-device ones run the same function with fewer devices or
TensorFlow, left out to keep this short), and LAMB's state split over the
model axis under model_parallel."""

import json
import os
import subprocess
import sys

from tests.pretraining_helpers import tiny_bert_config
from tests.subprocesses import REPO, skip_without


def test_bert_steps_tf_jax_measures_each_configuration_and_the_sharded_state(tmp_path):
    skip_without("jax", "keras_hub")
    config = tiny_bert_config(tmp_path)
    result = subprocess.run(
        [sys.executable, "benchmarks/bert_steps_tf_jax.py", f"--bert_config={config}",
         "--batch_size=4", "--sequence=8", "--predictions=2", "--rounds=1", "--steps=1",
         "--configurations=jax_data_parallel_2"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    *timed, state = lines
    assert [r["configuration"] for r in timed] == ["jax_data_parallel_2"]
    for r in timed:
        assert r["examples_per_s"][0] > 0
        assert r["peak_resident_bytes"][0] > 2**20  # A Python process with JAX and Keras.
    one = state["state_bytes"]["one_device"]
    sharded = state["state_bytes"]["model_parallel"]
    assert len(one["optimizer"]) == 1 and len(sharded["optimizer"]) == 4
    # The kernels and tables split in two on "model", the rest replicated:
    # each device holds more than half of one device's state, and less than all.
    for total_bytes in sharded["optimizer"]:
        assert one["optimizer"][0] / 2 < total_bytes < one["optimizer"][0]
    assert "| jax_data_parallel_2 | " in result.stdout
