"""`benchmarks/fit_step.py` runs on a tiny model and prints a row per
optimizer (one round: no timing is checked)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_fit_benchmark_runs():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")]))
    result = subprocess.run(
        [sys.executable, "benchmarks/fit_step.py", "--optimizers=adam,lamb", "--layers=1",
         "--width=64", "--rounds=1", "--steps_per_round=2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert rows == ["adam", "lamb"], result.stdout
    assert "fit: 1 x Dense(64), batch 32" in result.stdout
