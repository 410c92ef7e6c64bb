"""Record files in BERT's format: writing instances as `tf.train.Example`s
with BERT's seven fixed-length features, and checking files of records
(framing, features, value ranges) before training reads them."""

import collections

from absl import logging
from google.protobuf.message import DecodeError
import numpy as np
import tensorflow as tf

from lamb.data.pretraining.progress import Progress


def feature_spec(max_seq_length, max_predictions_per_seq):
    """BERT's `name_to_features`: name -> (dtype, length)."""
    return {
        "input_ids": (tf.int64, max_seq_length),
        "input_mask": (tf.int64, max_seq_length),
        "segment_ids": (tf.int64, max_seq_length),
        "masked_lm_positions": (tf.int64, max_predictions_per_seq),
        "masked_lm_ids": (tf.int64, max_predictions_per_seq),
        "masked_lm_weights": (tf.float32, max_predictions_per_seq),
        "next_sentence_labels": (tf.int64, 1),
    }


def parse_spec(max_seq_length, max_predictions_per_seq):
    return {
        name: tf.io.FixedLenFeature([length], dtype)
        for name, (dtype, length) in feature_spec(max_seq_length, max_predictions_per_seq).items()
    }


def _int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _float_feature(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def instance_to_example(instance, token_ids, max_seq_length, max_predictions_per_seq):
    """A `tf.train.Example` with BERT's features, zero-padded to fixed lengths."""
    input_ids = [token_ids[token] for token in instance.tokens]
    if len(input_ids) > max_seq_length:
        raise ValueError(f"An instance has {len(input_ids)} > {max_seq_length} tokens.")
    pad = max_seq_length - len(input_ids)
    input_mask = [1] * len(input_ids) + [0] * pad
    segment_ids = list(instance.segment_ids) + [0] * pad
    input_ids = input_ids + [0] * pad

    num_predictions = len(instance.masked_lm_positions)
    pad = max_predictions_per_seq - num_predictions
    masked_lm_positions = list(instance.masked_lm_positions) + [0] * pad
    masked_lm_ids = [token_ids[token] for token in instance.masked_lm_labels] + [0] * pad
    masked_lm_weights = [1.0] * num_predictions + [0.0] * pad

    features = collections.OrderedDict()
    features["input_ids"] = _int_feature(input_ids)
    features["input_mask"] = _int_feature(input_mask)
    features["segment_ids"] = _int_feature(segment_ids)
    features["masked_lm_positions"] = _int_feature(masked_lm_positions)
    features["masked_lm_ids"] = _int_feature(masked_lm_ids)
    features["masked_lm_weights"] = _float_feature(masked_lm_weights)
    features["next_sentence_labels"] = _int_feature([1 if instance.is_random_next else 0])
    return tf.train.Example(features=tf.train.Features(feature=features))


def write_instance_to_example_files(
    instances, vocab, max_seq_length, max_predictions_per_seq, output_files
):
    """Writes the instances round-robin to the output files; returns the
    count. RuntimeError naming --output_file if the writing fails (a full
    disk, ...)."""
    token_ids = {token: i for i, token in enumerate(vocab)}
    progress = Progress("Written", len(instances), " instances")
    try:
        writers = [tf.io.TFRecordWriter(output_file) for output_file in output_files]
        for index, instance in enumerate(instances):
            example = instance_to_example(
                instance, token_ids, max_seq_length, max_predictions_per_seq
            )
            writers[index % len(writers)].write(example.SerializeToString(deterministic=True))
            if index < 3:
                logging.info("tokens: %s", " ".join(instance.tokens))
            progress.add(1)
        for writer in writers:
            writer.close()
    except tf.errors.OpError as error:
        raise RuntimeError(f"--output_file: writing the records failed: {error.message}.") from None
    progress.finish()
    return len(instances)


def _length_flag(name):
    if name in ("input_ids", "input_mask", "segment_ids"):
        return "--max_seq_length"
    if name == "next_sentence_labels":
        return "the format (one label per example)"
    return "--max_predictions_per_seq"


def check_example(example, where, max_seq_length, max_predictions_per_seq):
    """Raises ValueError naming `where` (file and record) and the feature if
    `example` lacks a feature or has the wrong type or length."""
    features = example.features.feature
    for name, (dtype, length) in feature_spec(max_seq_length, max_predictions_per_seq).items():
        if name not in features:
            raise ValueError(f"{where}: no feature {name!r}.")
        kind = "float_list" if dtype == tf.float32 else "int64_list"
        if features[name].WhichOneof("kind") != kind:
            raise ValueError(
                f"{where}: feature {name!r} is a {features[name].WhichOneof('kind')}, "
                f"BERT's format has an {kind}."
            )
        values = len(getattr(features[name], kind).value)
        if values != length:
            raise ValueError(
                f"{where}: feature {name!r} has {values} values per example but "
                f"{_length_flag(name)} asks for {length}."
            )


CHECK_BATCH_RECORDS = 1024  # Records parsed and checked at a time.


def _integer_ranges(max_seq_length, vocab_size, type_vocab_size, config_name):
    """(feature, end, what is allowed) for the integer features, whose values
    must lie in [0, end); the vocabulary bounds only where given."""
    ranges = []
    if vocab_size is not None:
        allowed = f"0 to {vocab_size - 1} (vocab_size={vocab_size} of {config_name})"
        ranges += [("input_ids", vocab_size, allowed), ("masked_lm_ids", vocab_size, allowed)]
    if type_vocab_size is not None:
        allowed = f"0 to {type_vocab_size - 1} (type_vocab_size={type_vocab_size} of {config_name})"
        ranges.append(("segment_ids", type_vocab_size, allowed))
    return ranges + [
        ("masked_lm_positions", max_seq_length,
         f"0 to {max_seq_length - 1} (positions within --max_seq_length={max_seq_length})"),
        ("input_mask", 2, "0 or 1"),
        ("next_sentence_labels", 2, "0 (B follows A) or 1 (B is random)"),
    ]


def check_values(batch, path, first_record, integer_ranges):
    """Raises ValueError naming `path`, the record and the feature at the first
    value of the parsed `batch` (NumPy arrays of records `first_record`, ...)
    that is out of range; masked_lm_weights must be finite and in [0, 1]."""
    problems = []
    for name, end, allowed in integer_ranges:
        values = batch[name]
        problems.append((name, values, (values < 0) | (values >= end), allowed))
    weights = batch["masked_lm_weights"]
    problems.append(
        ("masked_lm_weights", weights, ~((weights >= 0) & (weights <= 1)), "finite numbers in [0, 1]")
    )
    first_bad = None
    for name, values, bad, allowed in problems:
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size and (first_bad is None or rows[0] < first_bad[0]):
            row = rows[0]
            first_bad = (row, name, values[row][bad[row]][0], allowed)
    if first_bad is not None:
        row, name, value, allowed = first_bad
        raise ValueError(
            f"{path}, record {first_record + row} (counting from 0): {name} holds {value}; "
            f"allowed: {allowed}."
        )


def _raise_for_unparsable_record(path, first_record, count, max_seq_length, max_predictions_per_seq):
    """Finds the record among `count` from `first_record` that `parse_example`
    rejected and raises ValueError naming it."""
    records = tf.data.TFRecordDataset(path).skip(first_record).take(count)
    for index, record in enumerate(records, start=first_record):
        where = f"{path}, record {index} (counting from 0)"
        try:
            example = tf.train.Example.FromString(record.numpy())
        except DecodeError as error:
            raise ValueError(f"{where}: not a tf.train.Example ({error}).") from None
        check_example(example, where, max_seq_length, max_predictions_per_seq)


def check_input_files(
    files,
    max_seq_length,
    max_predictions_per_seq,
    read_all_records,
    vocab_size=None,
    type_vocab_size=None,
    config_name="the BERT config",
):
    """Checks each file's first record, or every record if `read_all_records`:
    the TFRecord framing and checksums, the features' types and lengths, and
    the values (token ids in [0, vocab_size), segment ids in [0,
    type_vocab_size), masked-LM positions in [0, max_seq_length), input mask
    and next-sentence labels 0 or 1, masked-LM weights finite in [0, 1]).
    Records are parsed and checked in batches (vectorized).

    Args:
        vocab_size, type_vocab_size: The BERT config's bounds on the token
            and segment ids (`None`: not checked); `config_name` names the
            config in messages.

    Returns:
        The number of records checked.

    Raises:
        FileNotFoundError, ValueError: naming the file, the record and the problem.
    """
    integer_ranges = _integer_ranges(max_seq_length, vocab_size, type_vocab_size, config_name)
    spec = parse_spec(max_seq_length, max_predictions_per_seq)
    records = 0
    for path in files:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path}: no such input file.")
        dataset = tf.data.TFRecordDataset(path)
        if not read_all_records:
            dataset = dataset.take(1)
        batches = dataset.batch(CHECK_BATCH_RECORDS).prefetch(2)
        checked = 0
        iterator = iter(batches)
        while True:
            try:
                serialized = next(iterator)
            except StopIteration:
                break
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                raise ValueError(
                    f"{path}: corrupt TFRecord file, at or after record {checked} "
                    f"({error.message.splitlines()[0]})."
                ) from None
            try:
                batch = tf.io.parse_example(serialized, spec)
            except tf.errors.InvalidArgumentError:
                _raise_for_unparsable_record(
                    path, checked, len(serialized), max_seq_length, max_predictions_per_seq
                )
                raise
            check_values({name: value.numpy() for name, value in batch.items()}, path, checked,
                         integer_ranges)
            checked += len(serialized)
        if not checked:
            raise ValueError(f"{path}: the file holds no record.")
        records += checked
    return records
