"""`benchmarks/lamb16_row_drift.py` on a short run: after a spike in one entry,
the other entries' v stored by LAMB16's codec rounding to nearest decays with
the spiked one's, while the codec's stochastic rounding holds it within 1.5x
of float32's, as docs/guides/lamb16.md says."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_nearest_rounding_lets_a_spiked_row_drift_and_stochastic_rounding_does_not():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "benchmarks/lamb16_row_drift.py", "--steps=600", "--spike_step=100"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            rows[int(cells[0]), cells[1]] = (float(cells[2]), float(cells[3]))
    assert sorted({step for step, _ in rows}) == [99, 200, 400, 600]
    before, after = rows[99, "nearest"], rows[600, "nearest"]
    assert before[0] < 0.05 and before[1] < 1.5
    assert after[0] > 0.5 and after[1] > 2.0
    for step in (99, 200, 400, 600):
        below_half, median = rows[step, "stochastic"]
        assert below_half < 0.1 and 1 / 1.5 < median < 1.5, step
