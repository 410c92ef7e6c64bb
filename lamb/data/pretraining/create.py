"""BERT's `create_pretraining_data.py` as one call: text files -> record files."""

import random

from lamb.data.pretraining.instances import create_training_instances, vocab_words
from lamb.data.pretraining.output_files import written_whole
from lamb.data.pretraining.reading import CHUNK_BYTES, read_documents, warn_if_case_mismatch
from lamb.data.pretraining.records import write_instance_to_example_files


def create_pretraining_files(
    input_files,
    output_files,
    vocab,
    do_lower_case,
    do_whole_word_mask,
    max_seq_length,
    max_predictions_per_seq,
    dupe_factor,
    masked_lm_prob,
    short_seq_prob,
    random_seed,
    num_processes=1,
    chunk_bytes=CHUNK_BYTES,
    vocab_file=None,
):
    """BERT's `create_pretraining_data.py` on `input_files` (in this order):
    the records written round-robin to `output_files`, each renamed into
    place when complete (`written_whole`; `vocab_file`, if given, is refused
    as an output too). Returns the number of records and of documents."""
    read_files = {"--input_file": input_files}
    if vocab_file is not None:
        read_files["--vocab_file"] = [vocab_file]
    with written_whole(output_files, read_files) as partial_files:
        warn_if_case_mismatch(vocab, do_lower_case)
        documents = read_documents(input_files, vocab, do_lower_case, num_processes, chunk_bytes)
        if not documents:
            raise ValueError(
                f"--input_file: {', '.join(input_files)} "
                f"{'holds' if len(input_files) == 1 else 'hold'} no line with a token."
            )
        instances = create_training_instances(
            documents,
            vocab_words(vocab),
            max_seq_length,
            dupe_factor,
            short_seq_prob,
            masked_lm_prob,
            max_predictions_per_seq,
            do_whole_word_mask,
            random.Random(random_seed),
        )
        count = write_instance_to_example_files(
            instances, vocab, max_seq_length, max_predictions_per_seq, partial_files
        )
    return count, len(documents)
