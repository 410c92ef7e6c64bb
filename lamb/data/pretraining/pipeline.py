"""The input pipeline: record files -> endless, seeded batches of
`(inputs, labels)` for training, and the same held-out batches at every
evaluation."""

import tensorflow as tf

from lamb.data.pretraining.records import parse_spec

INPUT_FEATURES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions")
LABEL_FEATURES = ("masked_lm_ids", "masked_lm_weights", "next_sentence_labels")


def _parse_batch(serialized, max_seq_length, max_predictions_per_seq):
    example = tf.io.parse_example(serialized, parse_spec(max_seq_length, max_predictions_per_seq))
    # int64 -> int32 as in BERT (TPUs support only int32).
    example = {
        name: tf.cast(value, tf.int32) if value.dtype == tf.int64 else value
        for name, value in example.items()
    }
    inputs = {name: example[name] for name in INPUT_FEATURES}
    labels = {name: example[name] for name in LABEL_FEATURES}
    labels["next_sentence_labels"] = tf.squeeze(labels["next_sentence_labels"], axis=-1)
    return inputs, labels


def make_dataset(files, batch_size, max_seq_length, max_predictions_per_seq, seed, skip_batches=0):
    """An endless dataset of `(inputs, labels)` batches in a fixed order.

    The file order, the interleaving and the shuffle buffer (BERT's: 100
    records) are seeded, so the `n`-th batch is the same in every run with the
    same files and `seed`: a resumed run skips the `skip_batches` it has
    already trained on and sees exactly what an uninterrupted run would.
    Under a multi-worker strategy each worker reads every file and keeps its
    share of each batch (auto-shard policy DATA).
    """
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(files))
    dataset = dataset.repeat().shuffle(len(files), seed=seed, reshuffle_each_iteration=False)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(4, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    dataset = dataset.shuffle(100, seed=seed, reshuffle_each_iteration=False)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.skip(skip_batches)
    dataset = dataset.map(
        lambda serialized: _parse_batch(serialized, max_seq_length, max_predictions_per_seq),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(files, batch_size, max_seq_length, max_predictions_per_seq, max_steps):
    """The first `max_steps` whole batches of the records of `files`, read in
    order, once (the same records at every evaluation)."""
    dataset = tf.data.TFRecordDataset(files)
    dataset = dataset.batch(batch_size, drop_remainder=True).take(max_steps)
    dataset = dataset.map(
        lambda serialized: _parse_batch(serialized, max_seq_length, max_predictions_per_seq)
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
