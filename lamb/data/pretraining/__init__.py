"""BERT pre-training TFRecords: writing them as BERT does, checking and reading them.

Writing follows google-research/bert's `create_pretraining_data.py` step for
step: the input read as BERT reads it, BERT's tokenization
(`lamb.data.bert_tokenizer`) and the same random stream, so the same records
for the same input files, seed and flags. Only the tokenization runs in
parallel (a process pool over pieces of the input; the random stream comes
after it). The records hold seven fixed-length features, parsed with the
same `FixedLenFeature` spec as BERT's `run_pretraining.py`: files written
here and by BERT's tool are interchangeable.

The modules, in the order the data flows through them:

- `reading`: text files read as BERT reads them, tokenized in parallel.
- `instances`: documents -> sentence pairs, truncated and masked.
- `records`: instances written as BERT's records; record files checked.
- `output_files`: outputs checked before any work, locked, renamed into place.
- `create`: the whole of BERT's tool in one call, over the four above.
- `pipeline`: record files -> batches for training and for evaluation.
- `progress`: the progress lines of the long steps.
"""

from lamb.data.pretraining.create import create_pretraining_files
from lamb.data.pretraining.instances import (
    MaskedLmInstance,
    TrainingInstance,
    create_instances_from_document,
    create_masked_lm_predictions,
    create_training_instances,
    truncate_seq_pair,
    vocab_words,
)
from lamb.data.pretraining.output_files import (
    PARTIAL_SUFFIX,
    check_output_files,
    is_partial_file,
    written_whole,
)
from lamb.data.pretraining.pipeline import (
    INPUT_FEATURES,
    LABEL_FEATURES,
    make_dataset,
    make_eval_dataset,
)
from lamb.data.pretraining.progress import Progress
from lamb.data.pretraining.reading import (
    CHUNK_BYTES,
    MAX_UNKNOWN_FRACTION,
    SPECIAL_TOKENS,
    check_utf8,
    expand_input_files,
    load_vocab,
    read_chunks,
    read_documents,
    tokenize_chunk,
    warn_if_case_mismatch,
)
from lamb.data.pretraining.records import (
    CHECK_BATCH_RECORDS,
    check_example,
    check_input_files,
    check_values,
    feature_spec,
    instance_to_example,
    parse_spec,
    write_instance_to_example_files,
)

__all__ = [
    "CHECK_BATCH_RECORDS", "CHUNK_BYTES", "INPUT_FEATURES", "LABEL_FEATURES",
    "MAX_UNKNOWN_FRACTION", "PARTIAL_SUFFIX", "SPECIAL_TOKENS", "check_example",
    "check_input_files", "check_output_files", "check_utf8", "check_values",
    "create_instances_from_document", "create_masked_lm_predictions", "create_pretraining_files",
    "create_training_instances", "expand_input_files", "feature_spec", "instance_to_example",
    "is_partial_file", "load_vocab", "make_dataset", "make_eval_dataset", "MaskedLmInstance",
    "parse_spec", "Progress",
    "read_chunks", "read_documents", "tokenize_chunk", "TrainingInstance", "truncate_seq_pair",
    "vocab_words", "warn_if_case_mismatch", "write_instance_to_example_files", "written_whole",
]
