"""`lamb.create_pretraining_data` against google-research/bert's tool: speed and identity.

    python benchmarks/pretraining_data_vs_bert.py --bert_dir=../bert

Both tools run as commands on the same input files in the same order (the
Shakespeare corpus of shared/data, given as a comma-separated list, sorted),
with the same vocabulary, seed and flags, with and without
--do_whole_word_mask; ours with --num_processes=1 and with every CPU. Prints
a table: wall time of each command (start-up included), the time spent
tokenizing (ours: from its log; BERT's: its `FullTokenizer` timed here on
the lines its tool reads), records per second, and the fraction of records
equal to BERT's, in order (1.0: the same file content). Exits 1 if a
fraction is not 1.0.
"""

import glob
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data")

FLAGS = flags.FLAGS
flags.DEFINE_string("bert_dir", None, "A google-research/bert checkout.", required=True)
flags.DEFINE_string(
    "input_glob", os.path.join(SHARED, "text", "shakespeare", "*.txt"), "The input text files."
)
flags.DEFINE_string(
    "vocab_file", os.path.join(SHARED, "bert", "vocab_uncased.txt"), "The vocabulary."
)
flags.DEFINE_integer("max_seq_length", 128, "--max_seq_length of both tools.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "--max_predictions_per_seq of both tools.")
flags.DEFINE_integer("dupe_factor", 2, "--dupe_factor of both tools.")
flags.DEFINE_integer("random_seed", 12345, "--random_seed of both tools.")
flags.DEFINE_integer(
    "num_processes", os.cpu_count() or 1, "--num_processes of our parallel run."
)


def _run(command, output):
    start = time.perf_counter()
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES=""),
    )
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{' '.join(command[:4])} ... failed:\n{result.stderr[-3000:]}")
    import tensorflow as tf

    tokenized = re.search(r"Tokenized \(.*\): [\d.,]+ MB in ([\d.]+) s", result.stderr)
    records = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(output)]
    return seconds, tokenized and float(tokenized.group(1)), records


def _bert_tokenization_seconds(files):
    """BERT's FullTokenizer on the lines of `files` as its tool reads them."""
    from bert_reference import load_bert_module  # benchmarks/bert_reference.py

    tokenization = load_bert_module(FLAGS.bert_dir, "tokenization")
    tokenizer = tokenization.FullTokenizer(FLAGS.vocab_file, do_lower_case=True)
    gfile = tokenization.tf.gfile
    lines = []
    for path in files:
        with gfile.GFile(path, "r") as reader:
            lines += [tokenization.convert_to_unicode(line).strip() for line in reader]
    start = time.perf_counter()
    for line in lines:
        tokenizer.tokenize(line)
    return time.perf_counter() - start


def main(argv):
    del argv
    files = sorted(glob.glob(FLAGS.input_glob))
    if not files:
        sys.exit(f"--input_glob={FLAGS.input_glob} matches no file.")
    megabytes = sum(os.path.getsize(f) for f in files) / 1e6
    print(f"{len(files)} files, {megabytes:.1f} MB; --max_seq_length={FLAGS.max_seq_length} "
          f"--dupe_factor={FLAGS.dupe_factor}; {os.cpu_count()} CPUs")
    bert_tokenize = _bert_tokenization_seconds(files)
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        for whole_word in (False, True):
            common = [
                f"--input_file={','.join(files)}", f"--vocab_file={FLAGS.vocab_file}",
                f"--max_seq_length={FLAGS.max_seq_length}",
                f"--max_predictions_per_seq={FLAGS.max_predictions_per_seq}",
                f"--dupe_factor={FLAGS.dupe_factor}", f"--random_seed={FLAGS.random_seed}",
                f"--do_whole_word_mask={whole_word}",
            ]
            bert_out = os.path.join(tmp, f"bert-{whole_word}.tfrecord")
            bert_seconds, _, bert = _run(
                [sys.executable, os.path.join(REPO, "benchmarks", "bert_reference.py"),
                 f"--bert_dir={FLAGS.bert_dir}", "--", f"--output_file={bert_out}", *common],
                bert_out,
            )
            masking = "whole word" if whole_word else "per WordPiece"
            rows.append((masking, "BERT's tool", bert_seconds, bert_tokenize, len(bert), 1.0))
            for processes in (1, FLAGS.num_processes):
                out = os.path.join(tmp, f"ours-{whole_word}-{processes}.tfrecord")
                seconds, tokenize, ours = _run(
                    [sys.executable, "-m", "lamb.create_pretraining_data",
                     f"--output_file={out}", f"--num_processes={processes}", *common],
                    out,
                )
                same = sum(a == b for a, b in zip(ours, bert)) / max(len(ours), len(bert))
                failed |= same != 1.0
                rows.append(
                    (masking, f"lamb, {processes} process{'es' if processes > 1 else ''}",
                     seconds, tokenize, len(ours), same)
                )
    print("| masking | tool | wall s | tokenizing s | records | records/s | identical to BERT's |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for masking, tool, seconds, tokenize, count, same in rows:
        print(f"| {masking} | {tool} | {seconds:.1f} | {tokenize:.1f} | {count} | "
              f"{count / seconds:,.0f} | {same:.4f} |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    app.run(main)
