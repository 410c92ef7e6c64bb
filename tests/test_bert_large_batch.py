"""`benchmarks/bert_large_batch.py` end to end on a tiny budget."""

import math
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

pytest.importorskip("keras_hub")

from tests import pretraining_helpers as helpers  # noqa: E402

DOCUMENTS = 100  # 291 records of sequence 32.
DIVERGING = 1e5  # A retune factor whose run diverges.
PHASE_FACTOR = 0.5  # The two phases' rates: this times their square-root rates.


def run_driver(tmp_path, *extra, check=True):
    text_dir, work_dir = tmp_path / "text", tmp_path / "work"
    text_dir.mkdir(exist_ok=True)
    if not any(text_dir.iterdir()):
        helpers.write_corpus(str(text_dir / "a_train.txt"), num_documents=DOCUMENTS)
        helpers.write_corpus(str(text_dir / "b_eval.txt"), num_documents=20, seed=1)  # Held out.
    vocab = helpers.write_vocab(str(tmp_path / "vocab.txt"), num_documents=DOCUMENTS)
    helpers.write_bert_config(str(tmp_path / "bert_config.json"), len(vocab))
    command = [
        sys.executable, os.path.join(helpers.REPO, "benchmarks", "bert_large_batch.py"),
        f"--text_dir={text_dir}", f"--vocab_file={tmp_path / 'vocab.txt'}",
        f"--bert_config_file={tmp_path / 'bert_config.json'}", f"--work_dir={work_dir}",
        f"--output={tmp_path / 'large_batch'}", "--num_records=256", "--epochs=1",
        "--batch_sizes=8,32", "--micro_batch_size=16", "--eval_every_examples=64",
        "--optimizers=lamb", "--sweep_learning_rates=lamb=4e-3:1e-2", "--sweep_examples=256",
        "--sweep_extensions=1", f"--retune_factors={DIVERGING}", "--divergence_steps=2",
        "--nojit_compile", "--num_eval_texts=1", "--eval_batch_size=16", "--max_eval_steps=2",
        f"--two_phase_factors={PHASE_FACTOR}",
        *extra,
    ]
    result = subprocess.run(command, env=helpers.app_env(), cwd=helpers.REPO,
                            capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result, work_dir


def files_of(work_dir):
    return sorted(os.path.relpath(os.path.join(d, f), work_dir)
                  for d, _, names in os.walk(work_dir) for f in names)


def table_rows(stdout):
    return [line.split(" | ") for line in stdout.splitlines() if line.startswith(
        ("| sweep", "| grid", "| retune", "| phase"))]


@pytest.mark.tensorflow_only
def test_sweep_grid_retune_two_phase_figures_then_a_rerun_trains_nothing(tmp_path):
    """Every stage, a retune run that diverges among them (a result, not an error)."""
    result, work_dir = run_driver(tmp_path)
    rows = table_rows(result.stdout)
    # stage, optimizer, batch (micro-batches), steps, warmup steps, peak lr.
    assert [row[:2] for row in rows] == [["| sweep", "LAMB"]] * 3 + [["| grid", "LAMB"]] * 2 + [
        ["| retune", "LAMB"], ["| phase 1", "LAMB"], ["| phase 2", "LAMB"]]
    sweep, grid = rows[:3], rows[3:5]
    # Either given rate is the best of two, an edge: one more step beyond it (x or / 2.5).
    first = max(sweep[:2], key=lambda row: float(row[6]))
    assert sweep[2][5] == f"{0.01 * 2.5 if first[5] == '0.01' else 0.004 / 2.5:.3g}"
    best = max(sweep, key=lambda row: float(row[6]))
    assert grid[0][1:] == best[1:]  # The sweep's best run is the grid's at the smallest batch.
    base = float(best[5])
    # 256 examples: 32 steps at batch 8 (warmup 20% x 8/32 of them), 8 at 32 (20%).
    assert best[2:5] == ["8 (1 x 8)", "32", "2"]
    assert grid[1][2:6] == ["32 (2 x 16)", "8", "2", f"{2 * base:.3g}"]
    # Retuned: x DIVERGING; it diverged (the guard's second bad step), and the driver went on.
    assert rows[5][2:6] == ["32 (2 x 16)", "8", "2", f"{2 * DIVERGING * base:.3g}"]
    assert re.fullmatch(r"diverged at step [2-8]", rows[5][6]), rows[5]
    assert f"retune: LAMB, batch 32, lr {2 * DIVERGING * base:.3g}: {rows[5][6]}." in result.stdout
    # Phase 1: sequence 16 at batch 64, 3 steps (192 examples); phase 2: 2 steps of 32.
    assert rows[6][2:6] == ["64 (4 x 16)", "3", "1", f"{PHASE_FACTOR * math.sqrt(8) * base:.3g}"]
    assert rows[7][2:6] == ["32 (2 x 16)", "2", "0", f"{PHASE_FACTOR * 2 * base:.3g}"]
    for row in rows[:5] + rows[6:]:  # Held-out masked-LM accuracy.
        assert 0 <= float(row[6]) <= 1
    for name in ("curves", "batch"):
        title = Image.open(tmp_path / f"large_batch_{name}.png").text["Title"]
        for setting in ("bert_config.json (2 layers, hidden 32)", "sequence 32",
                        "256 records of text x 1 epochs = 256 examples per run",
                        "sqrt(batch / 8)", "warmup 20% of the steps at batch 32"):
            assert setting in title
    before = files_of(work_dir)
    assert {"train-32.tfrecord", "train-32-256.tfrecord", "eval-32.tfrecord",
            "train-16.tfrecord", "train-16-256.tfrecord", "eval-16.tfrecord"} <= set(before)
    stdout = run_driver(tmp_path)[0].stdout
    assert stdout.count("nothing to do") == 8 and "training in" not in stdout
    assert files_of(work_dir) == before
    assert table_rows(run_driver(tmp_path, "--report_only")[0].stdout) == rows


def test_held_out_documents_that_a_training_file_also_holds_are_left_out(tmp_path):
    text_dir, work_dir = tmp_path / "text", tmp_path / "work"
    text_dir.mkdir()
    helpers.write_corpus(str(text_dir / "b_eval.txt"), num_documents=3, seed=1)
    held_out = (text_dir / "b_eval.txt").read_text().strip("\n").split("\n\n")
    (text_dir / "a_train.txt").write_text("d9 s0 w1 w2 .\n\n" + held_out[1].replace(" ", "  "))
    script = (
        "import sys; sys.path.insert(0, 'benchmarks'); import bert_large_batch as b; "
        f"b.FLAGS(['b', '--text_dir={text_dir}', '--work_dir={work_dir}', '--num_eval_texts=1']); "
        "print(b.split_texts())"
    )
    result = subprocess.run([sys.executable, "-c", script], env=helpers.app_env(),
                            cwd=helpers.REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "b_eval.txt: 2 documents held out, 1 left out" in result.stdout
    kept = (work_dir / "held_out" / "b_eval.txt").read_text()
    assert kept == held_out[0] + "\n\n" + held_out[2] + "\n"  # Lines (sentences) as written.
