"""`benchmarks/bert_large_batch.py` end to end on a tiny budget."""

import os
import subprocess
import sys

import pytest
from PIL import Image

pytest.importorskip("keras_hub")

from tests import pretraining_helpers as helpers  # noqa: E402

DOCUMENTS = 100  # 291 records of sequence 32.


def run_driver(tmp_path):
    text_dir, work_dir = tmp_path / "text", tmp_path / "work"
    text_dir.mkdir(exist_ok=True)
    helpers.write_corpus(str(text_dir / "corpus.txt"), num_documents=DOCUMENTS)
    vocab = helpers.write_vocab(str(tmp_path / "vocab.txt"), num_documents=DOCUMENTS)
    helpers.write_bert_config(str(tmp_path / "bert_config.json"), len(vocab))
    command = [
        sys.executable, os.path.join(helpers.REPO, "benchmarks", "bert_large_batch.py"),
        f"--text_dir={text_dir}", f"--vocab_file={tmp_path / 'vocab.txt'}",
        f"--bert_config_file={tmp_path / 'bert_config.json'}", f"--work_dir={work_dir}",
        f"--output={tmp_path / 'curves.png'}", "--num_records=256", "--epochs=1",
        "--batch_sizes=8,32", "--micro_batch_size=16", "--save_every_examples=64",
        "--base_learning_rates=adamw=1e-3,lamb=4e-3", "--nojit_compile",
    ]
    result = subprocess.run(command, env=helpers.app_env(), cwd=helpers.REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, work_dir


def files_of(work_dir):
    return sorted(os.path.relpath(os.path.join(d, f), work_dir)
                  for d, _, names in os.walk(work_dir) for f in names)


@pytest.mark.tensorflow_only
def test_four_runs_figure_table_then_a_rerun_trains_nothing(tmp_path):
    stdout, work_dir = run_driver(tmp_path)
    title = Image.open(tmp_path / "curves.png").text["Title"]
    for setting in ("bert_config.json (2 layers, hidden 32)", "sequence 32", "5 predictions",
                    "first 256 records of text x 1 epoch: 256 examples per run", "sqrt(batch / 8)",
                    "AdamW 0.001, LAMB 0.004", "warmup 10%"):
        assert setting in title
    rows = [line for line in stdout.splitlines() if line.startswith(("| AdamW", "| LAMB"))]
    assert [row.split(" | ")[:4] for row in rows] == [
        ["| AdamW, batch 8", "8 (1 x 8)", "32", "0.001"],
        ["| AdamW, batch 32", "32 (2 x 16)", "8", "0.002"],
        ["| LAMB, batch 8", "8 (1 x 8)", "32", "0.004"],
        ["| LAMB, batch 32", "32 (2 x 16)", "8", "0.008"],
    ]
    before = files_of(work_dir)
    assert "records-256.tfrecord" in before
    stdout, _ = run_driver(tmp_path)
    assert stdout.count("nothing to do") == 4 and "training in" not in stdout
    assert files_of(work_dir) == before
