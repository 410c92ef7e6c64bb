"""Create masked-LM / next-sentence TFRecords for BERT pre-training.

The algorithm, flags and output format are those of google-research/bert's
`create_pretraining_data.py`; the WordPiece tokenization is keras-hub's
`WordPieceTokenizer` (tensorflow-text's FastWordpieceTokenizer underneath).
Input: text files with one sentence per line and a blank line between
documents. Output: `tf.train.Example`s with `input_ids`, `input_mask`,
`segment_ids`, `masked_lm_positions`, `masked_lm_ids`, `masked_lm_weights`
and `next_sentence_labels`, readable by BERT's `run_pretraining.py` and by
`lamb.run_pretraining`.
"""

import random

from absl import app
from absl import flags
from absl import logging

from lamb import _checks
from lamb.data import pretraining

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "input_file", None, "Input raw text file (or comma-separated list of files or globs)."
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


def validate_flags():
    """Rejects flag values BERT's algorithm cannot work with, naming the flag."""
    _checks.check_int("--max_seq_length", FLAGS.max_seq_length, low=5)
    _checks.check_int("--max_predictions_per_seq", FLAGS.max_predictions_per_seq, low=1)
    _checks.check_int("--dupe_factor", FLAGS.dupe_factor, low=1)
    _checks.check_float(
        "--masked_lm_prob", FLAGS.masked_lm_prob, 0.0, 1.0, low_inclusive=False
    )
    _checks.check_float("--short_seq_prob", FLAGS.short_seq_prob, 0.0, 1.0, high_inclusive=True)


def main(argv):
    del argv
    validate_flags()
    vocab = pretraining.load_vocab(FLAGS.vocab_file)
    input_files = pretraining.expand_input_files(FLAGS.input_file)
    logging.info("Reading %d input files (%s, ...)", len(input_files), input_files[0])
    tokenizer = pretraining.make_tokenizer(vocab, FLAGS.do_lower_case)
    documents = pretraining.read_documents(input_files, tokenizer)
    if not documents:
        raise ValueError(f"--input_file={FLAGS.input_file} holds no text.")
    instances = pretraining.create_training_instances(
        documents,
        vocab,
        FLAGS.max_seq_length,
        FLAGS.dupe_factor,
        FLAGS.short_seq_prob,
        FLAGS.masked_lm_prob,
        FLAGS.max_predictions_per_seq,
        FLAGS.do_whole_word_mask,
        random.Random(FLAGS.random_seed),
    )
    output_files = FLAGS.output_file.split(",")
    count = pretraining.write_instance_to_example_files(
        instances, vocab, FLAGS.max_seq_length, FLAGS.max_predictions_per_seq, output_files
    )
    logging.info("Wrote %d instances from %d documents to %s", count, len(documents), output_files)


if __name__ == "__main__":
    flags.mark_flags_as_required(["input_file", "output_file", "vocab_file"])
    app.run(main)
