"""Create masked-LM / next-sentence TFRecords for BERT pre-training.

The algorithm, tokenization, random stream, flags and output format are
those of google-research/bert's `create_pretraining_data.py`: the same input
files (in the same order), seed and flags give the same records. The one
difference: each glob of --input_file is read in sorted order (BERT: the
file system's order). Tokenization runs in --num_processes processes.
Input: UTF-8 text files with one sentence per line and a blank line between
documents. Output: `tf.train.Example`s with `input_ids`, `input_mask`,
`segment_ids`, `masked_lm_positions`, `masked_lm_ids`, `masked_lm_weights`
and `next_sentence_labels`, readable by BERT's `run_pretraining.py` and by
`lamb.run_pretraining`.
"""

import os

from absl import flags
from absl import logging

from lamb import _app, _checks
from lamb.data import pretraining

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "input_file", None,
    "Input raw text file (or comma-separated list of files or globs, each glob read in sorted "
    "order).",
)
flags.DEFINE_string(
    "output_file", None, "Output TF example file (or comma-separated list of files)."
)
flags.DEFINE_string("vocab_file", None, "The WordPiece vocabulary file, one token a line.")
flags.DEFINE_bool(
    "do_lower_case",
    True,
    "Whether to lower case the input text (and strip accents). True for uncased "
    "models, False for cased models.",
)
flags.DEFINE_bool(
    "do_whole_word_mask",
    False,
    "Whether to mask all the WordPieces of a word at once, as BERT's whole-word masking.",
)
flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length.")
flags.DEFINE_integer(
    "max_predictions_per_seq", 20, "Maximum number of masked LM predictions per sequence."
)
flags.DEFINE_integer("random_seed", 12345, "Random seed for data generation.")
flags.DEFINE_integer(
    "dupe_factor", 10, "Number of times to duplicate the input data (with different masks)."
)
flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM probability.")
flags.DEFINE_float(
    "short_seq_prob",
    0.1,
    "Probability of creating sequences which are shorter than the maximum length.",
)
flags.DEFINE_integer(
    "num_processes",
    getattr(os, "process_cpu_count", os.cpu_count)() or 1,
    "Processes that tokenize the input (the records do not depend on it). Default: the CPUs "
    "this process may use.",
)


def validate_flags():
    """Rejects flag values BERT's algorithm cannot work with, naming the flag."""
    _checks.check_int("--max_seq_length", FLAGS.max_seq_length, low=5)
    _checks.check_int("--max_predictions_per_seq", FLAGS.max_predictions_per_seq, low=1)
    _checks.check_int("--dupe_factor", FLAGS.dupe_factor, low=1)
    _checks.check_float(
        "--masked_lm_prob", FLAGS.masked_lm_prob, 0.0, 1.0, low_inclusive=False
    )
    _checks.check_float("--short_seq_prob", FLAGS.short_seq_prob, 0.0, 1.0, high_inclusive=True)
    _checks.check_int("--num_processes", FLAGS.num_processes, low=1)


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: every setting is a --flag.")
    validate_flags()
    vocab = pretraining.load_vocab(FLAGS.vocab_file)
    input_files = pretraining.expand_input_files(FLAGS.input_file)
    output_files = FLAGS.output_file.split(",")
    logging.info("Reading %d input files (%s, ...)", len(input_files), input_files[0])
    count, documents = pretraining.create_pretraining_files(
        input_files,
        output_files,
        vocab,
        do_lower_case=FLAGS.do_lower_case,
        do_whole_word_mask=FLAGS.do_whole_word_mask,
        max_seq_length=FLAGS.max_seq_length,
        max_predictions_per_seq=FLAGS.max_predictions_per_seq,
        dupe_factor=FLAGS.dupe_factor,
        masked_lm_prob=FLAGS.masked_lm_prob,
        short_seq_prob=FLAGS.short_seq_prob,
        random_seed=FLAGS.random_seed,
        num_processes=FLAGS.num_processes,
        vocab_file=FLAGS.vocab_file,
    )
    logging.info("Wrote %d instances from %d documents to %s", count, documents, output_files)


def run():
    """The app (`python -m lamb.create_pretraining_data`,
    `lamb-create-pretraining-data`): errors on one line."""
    _app.run(main, required=["input_file", "output_file", "vocab_file"])


if __name__ == "__main__":
    run()
