"""The model, its optimizer and the training loop of `lamb.run_pretraining`."""

import math
import os
import sys

from absl import logging
import keras
import tensorflow as tf

import lamb
from lamb.data import pretraining as data
from lamb.models import bert
from lamb.optimizers import registry
from lamb.pretraining.checkpoints import Checkpoints
from lamb.pretraining.flags import FLAGS, MIXED_PRECISION_POLICIES
from lamb.pretraining.monitor import TrainingMonitor, write_metrics

def check_records(bert_config, files, every_record):
    """Checks the records against the flags and the BERT config: each file's
    first record, or every record; returns the number checked."""
    if FLAGS.max_seq_length > bert_config["max_position_embeddings"]:
        raise ValueError(
            f"--max_seq_length={FLAGS.max_seq_length} exceeds max_position_embeddings="
            f"{bert_config['max_position_embeddings']} of {FLAGS.bert_config_file}."
        )
    return data.check_input_files(
        files,
        FLAGS.max_seq_length,
        FLAGS.max_predictions_per_seq,
        every_record,
        vocab_size=int(bert_config["vocab_size"]),
        type_vocab_size=int(bert_config["type_vocab_size"]),
        config_name=FLAGS.bert_config_file,
    )



def micro_batch_size(strategy, strategy_name):
    """Examples per micro-batch on each replica; raises unless the replicas
    and micro-batches share `--train_batch_size` evenly."""
    replicas = strategy.num_replicas_in_sync
    accumulation = FLAGS.gradient_accumulation_steps
    if FLAGS.train_batch_size % (replicas * accumulation):
        raise ValueError(
            f"--train_batch_size={FLAGS.train_batch_size} is not divisible by the "
            f"{replicas} replicas of --strategy={strategy_name} x "
            f"--gradient_accumulation_steps={accumulation}."
        )
    return FLAGS.train_batch_size // (replicas * accumulation)


def _mirrored(strategy):
    return isinstance(
        strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    )


def check_jit_compile(strategy, strategy_name):
    """Raises if `--jit_compile` cannot work with the strategy."""
    replicas = strategy.num_replicas_in_sync
    if FLAGS.jit_compile and replicas > 1 and _mirrored(strategy):
        raise ValueError(
            f"--jit_compile does not work with --strategy={strategy_name} over {replicas} "
            "replicas: Keras 3 compiles the step of all replicas as one XLA function, which "
            "TensorFlow cannot place on several devices (keras-team/keras#19005). Add "
            "--nojit_compile."
        )


def steps_per_execution(strategy, initial_step):
    """Steps per device call: loops that end at every log and checkpoint step
    (counted from `initial_step`), except under (multi-worker) mirrored
    strategies, whose Keras 3 multi-step loop fails (keras-team/keras#19246)."""
    if _mirrored(strategy):
        return 1
    return math.gcd(FLAGS.iterations_per_loop, FLAGS.save_checkpoints_steps, initial_step)


def build_model(bert_config):
    """The compiled BertPretrainer with its optimizer built (call in the
    strategy scope); `main` sets its steps per execution."""
    optimizer_kwargs = {}
    if FLAGS.optimizer != "lars":
        optimizer_kwargs.update(beta_1=FLAGS.beta_1, beta_2=FLAGS.beta_2)
    if FLAGS.optimizer not in registry.KERAS_BUILTINS:  # Keras's own cannot skip steps.
        optimizer_kwargs.update(skip_nonfinite_gradients=True)
    if FLAGS.optimizer == "lamb16":
        optimizer_kwargs.update(row_scales=FLAGS.lamb16_row_scales)
    keras.utils.set_random_seed(FLAGS.seed)
    model = bert.BertPretrainer(
        bert_config,
        gradient_accumulation_steps=FLAGS.gradient_accumulation_steps,
        name="bert_pretrainer",
    )
    optimizer = lamb.create_optimizer(
        init_lr=FLAGS.learning_rate,
        num_train_steps=FLAGS.num_train_steps,
        num_warmup_steps=FLAGS.num_warmup_steps,
        optimizer_type=FLAGS.optimizer,
        weight_decay=FLAGS.weight_decay,
        epsilon=FLAGS.epsilon,
        end_learning_rate=FLAGS.end_learning_rate,
        power=FLAGS.poly_power,
        global_clipnorm=FLAGS.clip_norm or None,
        **optimizer_kwargs,
    )
    model.compile(optimizer=optimizer, jit_compile=FLAGS.jit_compile)
    model.optimizer.build(model.trainable_variables)
    return model


def train(strategy, bert_config, files):
    """Builds the model, resumes from the output folder's newest readable
    checkpoint and trains to --num_train_steps."""
    if FLAGS.mixed_precision:
        keras.mixed_precision.set_global_policy(MIXED_PRECISION_POLICIES[FLAGS.mixed_precision])
    with strategy.scope():
        model = build_model(bert_config)
        checkpoints = Checkpoints(
            FLAGS.output_dir, model, strategy, FLAGS.keep_checkpoint_max,
            f"--bert_config_file={FLAGS.bert_config_file} and --optimizer={FLAGS.optimizer}",
        )
        step = checkpoints.restore(FLAGS.init_checkpoint)
    if step >= FLAGS.num_train_steps:
        logging.info(
            "Nothing to do: --output_dir=%s is already at step %d (--num_train_steps=%d).",
            FLAGS.output_dir, step, FLAGS.num_train_steps,
        )
        return
    # Loops end at the log and checkpoint steps counted from here (set before
    # fit builds its train function).
    model.steps_per_execution = steps_per_execution(strategy, step)
    monitor = TrainingMonitor(
        checkpoints,
        step,
        FLAGS.num_train_steps,
        FLAGS.iterations_per_loop,
        FLAGS.save_checkpoints_steps,
        FLAGS.train_batch_size,
        FLAGS.log_trust_ratios,
        os.path.join(FLAGS.output_dir, "train"),
    )
    remaining = FLAGS.num_train_steps - step
    if remaining > 0:
        dataset = data.make_dataset(
            files,
            FLAGS.train_batch_size,
            FLAGS.max_seq_length,
            FLAGS.max_predictions_per_seq,
            FLAGS.seed,
            skip_batches=step,
        )
        model.fit(
            dataset.take(remaining),
            epochs=1,
            steps_per_epoch=remaining,
            callbacks=[monitor],
            shuffle=False,  # The dataset is shuffled (with a seed) already.
            verbose=1 if sys.stdout.isatty() else 0,
        )
    if checkpoints.chief and monitor.last_logs:
        write_metrics(FLAGS.output_dir, FLAGS.num_train_steps, monitor.last_logs)
    checkpoints.save(FLAGS.num_train_steps)

