"""`benchmarks/bert_large_batch.py` end to end on a tiny budget."""

import os
import subprocess
import sys

import pytest
from PIL import Image

pytest.importorskip("keras_hub")

from tests import pretraining_helpers as helpers  # noqa: E402

DOCUMENTS = 100  # 291 records of sequence 32.


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
        f"--output={tmp_path / 'curves.png'}", "--num_records=256", "--epochs=1",
        "--batch_sizes=8,32", "--micro_batch_size=16", "--save_every_examples=64",
        "--base_learning_rates=adamw=1e-3,lamb=4e-3", "--nojit_compile", "--num_eval_texts=1",
        "--eval_batch_size=16", "--max_eval_steps=2", *extra,
    ]
    result = subprocess.run(command, env=helpers.app_env(), cwd=helpers.REPO,
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result, work_dir


def files_of(work_dir):
    return sorted(os.path.relpath(os.path.join(d, f), work_dir)
                  for d, _, names in os.walk(work_dir) for f in names)


@pytest.mark.tensorflow_only
def test_four_runs_figure_table_then_a_rerun_trains_nothing(tmp_path):
    result, work_dir = run_driver(tmp_path)
    stdout = result.stdout
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
    assert {"train-32.tfrecord", "train-32-256.tfrecord", "eval-32.tfrecord"} <= set(before)
    for row in rows:  # The held-out accuracy of the last evaluation.
        assert 0 <= float(row.split(" | ")[6]) <= 1
    stdout = run_driver(tmp_path)[0].stdout
    assert stdout.count("nothing to do") == 4 and "training in" not in stdout
    assert files_of(work_dir) == before


def test_a_held_out_document_also_in_the_training_texts_is_refused(tmp_path):
    text_dir = tmp_path / "text"
    text_dir.mkdir()
    helpers.write_corpus(str(text_dir / "b_eval.txt"), num_documents=3, seed=1)
    shared = (text_dir / "b_eval.txt").read_text().split("\n\n")[1]
    (text_dir / "a_train.txt").write_text("d9 s0 w1 w2 .\n\n" + shared.replace(" ", "  ") + "\n")
    result, work_dir = run_driver(tmp_path, check=False)
    assert result.returncode == 1
    assert "the document starting 'd1 s0" in result.stderr
    assert "is also in a training file" in result.stderr
    assert not os.path.exists(work_dir / "eval-32.tfrecord")
