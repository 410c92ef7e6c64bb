"""The model, its optimizer and the training loop of `lamb.run_pretraining`."""

import json
import math
import os
import sys

from absl import logging
import keras
import tensorflow as tf

import lamb
from lamb import distribute
from lamb.data import pretraining as data
from lamb.models import bert
from lamb.optimizers import registry
from lamb.pretraining import evaluation, run_folder
from lamb.pretraining.checkpoints import holds_checkpoints, make_checkpoints
from lamb.pretraining.flags import FLAGS, MIXED_PRECISION_POLICIES
from lamb.pretraining.monitor import METRICS_FILE, TrainingMonitor, write_metrics

EVAL_RESULTS_FILE = "eval_results.json"  # BERT's eval_results.txt, as JSON.


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



def replicas(strategy, distribution):
    """Into how many shares each batch is split: the replicas of the
    `tf.distribute` strategy, or the batch axis of the JAX distribution's
    device mesh (all processes' devices)."""
    if distribution is None:
        return strategy.num_replicas_in_sync
    mesh = distribution.device_mesh
    return mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)]


def is_chief(strategy):
    """Whether this process writes the run's files: the chief of a
    multi-worker strategy, or JAX's process 0."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index() == 0
    return distribute.is_chief(strategy)


def fit_steps_per_step():
    """`fit` steps per optimizer step: on JAX, where the optimizer accumulates
    the micro-batches (Keras's `gradient_accumulation_steps`), one per
    micro-batch; on TensorFlow 1 (`lamb.training.GradientAccumulation`
    accumulates inside the step)."""
    return FLAGS.gradient_accumulation_steps if keras.backend.backend() == "jax" else 1


def micro_batch_size(replica_count, layout):
    """Examples per micro-batch on each replica; raises unless the
    `replica_count` replicas (of `layout`, the flag that sets them) and the
    micro-batches share `--train_batch_size` evenly."""
    accumulation = FLAGS.gradient_accumulation_steps
    if FLAGS.train_batch_size % (replica_count * accumulation):
        raise ValueError(
            f"--train_batch_size={FLAGS.train_batch_size} is not divisible by the "
            f"{replica_count} replicas of {layout} x "
            f"--gradient_accumulation_steps={accumulation}."
        )
    return FLAGS.train_batch_size // (replica_count * accumulation)


def check_eval_batch_size(replica_count, layout):
    """Raises unless the replicas (of `layout`) share `--eval_batch_size` evenly."""
    if FLAGS.eval_batch_size % replica_count:
        raise ValueError(
            f"--eval_batch_size={FLAGS.eval_batch_size} is not divisible by the "
            f"{replica_count} replicas of {layout}."
        )


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
    """Steps per device call: loops that end at every log, checkpoint and eval
    step (counted from `initial_step`), except under (multi-worker) mirrored
    strategies, whose Keras 3 multi-step loop fails (keras-team/keras#19246)."""
    if _mirrored(strategy):
        return 1
    eval_every = FLAGS.eval_every_steps if FLAGS.do_eval else 0
    every = (FLAGS.iterations_per_loop, FLAGS.save_checkpoints_steps, eval_every)
    return math.gcd(*every, initial_step)


def build_model(bert_config):
    """The compiled BertPretrainer with its optimizer built (call in the
    strategy scope); `main` sets its steps per execution."""
    optimizer_kwargs = {}
    if FLAGS.optimizer != "lars":
        optimizer_kwargs.update(beta_1=FLAGS.beta_1, beta_2=FLAGS.beta_2)
    if FLAGS.optimizer not in registry.KERAS_BUILTINS:  # Keras's own cannot skip steps.
        optimizer_kwargs.update(skip_nonfinite_gradients=True)
    if FLAGS.optimizer == "lamb16":
        optimizer_kwargs.update(row_scales=FLAGS.lamb16_row_scales,
                                moment_rounding=FLAGS.lamb16_moment_rounding)
    in_step_accumulation = FLAGS.gradient_accumulation_steps
    if fit_steps_per_step() > 1:
        optimizer_kwargs.update(gradient_accumulation_steps=fit_steps_per_step())
        in_step_accumulation = 1
    keras.utils.set_random_seed(FLAGS.seed)
    model = bert.BertPretrainer(
        bert_config,
        gradient_accumulation_steps=in_step_accumulation,
        name="bert_pretrainer",
    )
    optimizer = lamb.create_optimizer(
        init_lr=FLAGS.learning_rate,
        num_train_steps=FLAGS.num_train_steps,
        num_warmup_steps=FLAGS.num_warmup_steps,
        optimizer_type=FLAGS.optimizer,
        weight_decay=FLAGS.weight_decay,
        epsilon=FLAGS.epsilon,
        global_clipnorm=FLAGS.clip_norm or None,
        start_warmup_step=FLAGS.start_warmup_step,
        **schedule_options(),
        **optimizer_kwargs,
    )
    jit_compile = FLAGS.jit_compile or keras.backend.backend() == "jax"
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    model.optimizer.build(model.trainable_variables)
    return model


def schedule_options():
    """`create_optimizer`'s arguments of the decay that --decay_schedule names."""
    if FLAGS.decay_schedule == "cosine":
        return dict(decay_schedule="cosine", alpha=FLAGS.cosine_alpha)
    return dict(end_learning_rate=FLAGS.end_learning_rate, power=FLAGS.poly_power)


def build(strategy, bert_config):
    """The model (in `strategy`'s scope, in --mixed_precision) and its checkpoints."""
    if FLAGS.mixed_precision:
        keras.mixed_precision.set_global_policy(MIXED_PRECISION_POLICIES[FLAGS.mixed_precision])
    with strategy.scope():
        model = build_model(bert_config)
        checkpoints = make_checkpoints(
            FLAGS.output_dir, model, strategy, FLAGS.keep_checkpoint_max,
            f"--bert_config_file={FLAGS.bert_config_file} and --optimizer={FLAGS.optimizer}",
        )
    return model, checkpoints


def split_into_micro_batches(dataset, micro_batches):
    """Each batch of `dataset` as `micro_batches` batches in a row, each
    labelled with the whole batch's counts of masked-LM predictions and of
    examples (`bert.STEP_COUNTS`), so that its loss is its share of the
    optimizer step's loss (`bert.BertPretrainer.compute_loss`)."""

    def with_step_counts(x, y):
        weights = tf.cast(y["masked_lm_weights"], tf.float32)
        examples = tf.shape(weights)[0]
        counts = tf.stack([tf.reduce_sum(weights), tf.cast(examples, tf.float32)])
        return x, {**y, bert.STEP_COUNTS: tf.tile(counts[None], [examples, 1])}

    size = FLAGS.train_batch_size // micro_batches
    return dataset.map(with_step_counts).rebatch(size, drop_remainder=True)


def make_evaluator(model, eval_files, summary_dir):
    """The evaluator of `model` on the first --max_eval_steps batches of `eval_files`."""
    dataset = data.make_eval_dataset(
        eval_files, FLAGS.eval_batch_size, FLAGS.max_seq_length, FLAGS.max_predictions_per_seq,
        FLAGS.max_eval_steps,
    )
    return evaluation.Evaluator(model, dataset, summary_dir)


def stopped_at_target(output_dir, step):
    """Whether the run in `output_dir` stopped at `step` with an eval masked-LM
    accuracy of at least --target_mlm_accuracy (per its metrics.json)."""
    path = os.path.join(output_dir, METRICS_FILE)
    if FLAGS.target_mlm_accuracy is None or not tf.io.gfile.exists(path):
        return False
    try:
        with tf.io.gfile.GFile(path) as f:
            metrics = json.load(f)
    except ValueError:
        return False
    accuracy = metrics.get("eval_masked_lm_accuracy")
    return (metrics.get("target_mlm_accuracy_reached_at_step") == step
            and accuracy is not None and accuracy >= FLAGS.target_mlm_accuracy)


def raise_for_bad_record(bert_config, files, error):
    """After a TensorFlow error in training under --noverify_input_files: a
    ValueError naming the file and record at fault, if a check of every
    record finds one (else nothing)."""
    logging.error("Training failed (%s); checking every input record.",
                  type(error).__name__)
    try:
        check_records(bert_config, files, every_record=True)
    except ValueError as bad_record:
        raise ValueError(f"training stopped at a bad input record: {bad_record} "
                         "(--verify_input_files checks them all before training).") from None


def train(strategy, bert_config, files, eval_files=None):
    """Builds the model, resumes from the output folder's newest readable
    checkpoint and trains to --num_train_steps (or --target_mlm_accuracy),
    evaluating on `eval_files` if given; returns the model (None if the
    folder's run had ended); raises RuntimeError if training diverges."""
    model, checkpoints = build(strategy, bert_config)
    with strategy.scope():
        step = checkpoints.restore(FLAGS.init_checkpoint)
    if step >= FLAGS.num_train_steps or stopped_at_target(FLAGS.output_dir, step):
        logging.info(
            "Nothing to do: --output_dir=%s is already at step %d (--num_train_steps=%d%s).",
            FLAGS.output_dir, step, FLAGS.num_train_steps,
            "" if step >= FLAGS.num_train_steps else ", --target_mlm_accuracy reached",
        )
        return None
    # Loops end at the log, checkpoint and eval steps counted from here (set
    # before fit builds its train function).
    fit_steps = fit_steps_per_step()
    model.steps_per_execution = steps_per_execution(strategy, step) * fit_steps
    summaries = os.path.join(FLAGS.output_dir, "{}") if checkpoints.chief else None
    evaluator = None
    if eval_files:
        evaluator = make_evaluator(model, eval_files, summaries and summaries.format("eval"))
    monitor = TrainingMonitor(
        checkpoints,
        step,
        FLAGS.num_train_steps,
        FLAGS.iterations_per_loop,
        FLAGS.save_checkpoints_steps,
        FLAGS.train_batch_size,
        FLAGS.log_trust_ratios,
        os.path.join(FLAGS.output_dir, "train"),
        FLAGS.divergence_steps,
        evaluator,
        FLAGS.eval_every_steps,
        FLAGS.target_mlm_accuracy,
        fit_steps,
    )
    remaining = FLAGS.num_train_steps - step
    dataset = data.make_dataset(
        files,
        FLAGS.train_batch_size,
        FLAGS.max_seq_length,
        FLAGS.max_predictions_per_seq,
        FLAGS.seed,
        skip_batches=step,
    ).take(remaining)
    if fit_steps > 1:
        dataset = split_into_micro_batches(dataset, fit_steps)
    try:
        model.fit(
            dataset,
            epochs=1,
            steps_per_epoch=remaining * fit_steps,
            callbacks=[monitor],
            shuffle=False,  # The dataset is shuffled (with a seed) already.
            verbose=1 if sys.stdout.isatty() else 0,
        )
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        raise_for_bad_record(bert_config, list(files) + list(eval_files or []), error)
        raise
    if monitor.diverged:
        if checkpoints.chief:  # A sweep's driver reads the outcome here.
            write_metrics(FLAGS.output_dir, monitor.step, monitor.last_logs, monitor.last_eval,
                          diverged=monitor.diverged)
        raise RuntimeError(
            f"{monitor.diverged}; lower --learning_rate={FLAGS.learning_rate:g}, or raise "
            f"--divergence_steps={FLAGS.divergence_steps} (0: never stop). Newest checkpoint "
            f"kept: step {checkpoints.saved_step}."
        )
    final_step = monitor.target_reached_at or FLAGS.num_train_steps
    checkpoints.save(final_step)
    if checkpoints.chief and monitor.last_logs:
        write_metrics(FLAGS.output_dir, final_step, monitor.last_logs, monitor.last_eval,
                      monitor.target_reached_at, FLAGS.train_batch_size)
    return model


def evaluate_checkpoint(strategy, bert_config, eval_files):
    """--nodo_train --do_eval: evaluates the newest readable checkpoint of
    --output_dir (else --init_checkpoint); writes eval_results.json there."""
    if not holds_checkpoints(FLAGS.output_dir) and not FLAGS.init_checkpoint:
        raise ValueError(
            f"--nodo_train --do_eval evaluates a checkpoint, but --output_dir={FLAGS.output_dir} "
            "holds none: give --init_checkpoint (a checkpoint or a run's output_dir)."
        )
    model, checkpoints = build(strategy, bert_config)
    with strategy.scope():
        step = checkpoints.restore(FLAGS.init_checkpoint, weights_only=True)
    summary_dir = os.path.join(FLAGS.output_dir, "eval") if checkpoints.chief else None
    results = make_evaluator(model, eval_files, summary_dir)(step)
    if checkpoints.chief:
        path = os.path.join(FLAGS.output_dir, EVAL_RESULTS_FILE)
        run_folder.write_json(path, {"global_step": step, **results})
        logging.info("Eval results in %s", path)
