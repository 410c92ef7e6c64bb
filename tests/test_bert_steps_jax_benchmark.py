"""benchmarks/bert_steps_jax.py runs (a BERT of hidden 32 and 64 tokens, tiny shapes, CPU)
and prints its figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pretraining_helpers import write_bert_config

ROOT = Path(__file__).resolve().parent.parent


def test_bert_steps_jax_prints_sequences_per_second_for_each_optimizer(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("keras_hub")
    config = str(tmp_path / "bert_config.json")
    write_bert_config(config, vocab_size=64, num_hidden_layers=1)
    result = subprocess.run(
        [sys.executable, "benchmarks/bert_steps_jax.py", f"--bert_config={config}",
         "--batch_size=2", "--sequence=8", "--predictions=2", "--rounds=1", "--steps=1"],
        cwd=ROOT, env=dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(ROOT)),
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    results = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["optimizer"] for r in results] == ["lamb", "adamw"]
    for r in results:
        assert r["sequences_per_s"] > 0
        assert r["peak_memory_bytes"] is None  # CPU devices report no memory statistics.
    assert "lamb: " in result.stdout and "sequences/s" in result.stdout
