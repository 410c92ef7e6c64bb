"""Pre-train BERT (masked LM + next sentence) with LAMB and friends, on CPU, GPUs or TPUs.

The flags are those of google-research/bert's `run_pretraining.py`, plus the
optimizer, the `tf.distribute` strategy (TensorFlow) or `keras.distribution`
(`--distribution`, JAX: `lamb.jax_distribution`), XLA, mixed precision and
gradient accumulation. Training is `keras.Model.fit` on keras-hub's BERT.

Steps: `--num_train_steps` counts optimizer steps of `--train_batch_size`
examples (the global batch, split over the replicas and into
`--gradient_accumulation_steps` micro-batches that run one after another; on
TensorFlow inside the step, `lamb.training.GradientAccumulation`, on JAX one
`fit` step each, accumulated by the optimizer; their gradients are summed
over the replicas once, then clipped to `--clip_norm`). Every
`--save_checkpoints_steps` steps a
checkpoint `<output_dir>/ckpt-<step>` holds the weights, the optimizer state,
the dropout RNG state and the step. Started again with the same flags, a run
resumes from its latest checkpoint and skips the batches it has already
trained on, so it ends with the weights an uninterrupted run would have.

Two-phase training (the LAMB paper's mixed-batch recipe): phase 2 is a new run
in a new `--output_dir` with `--init_checkpoint=<phase 1 output_dir>`. It
loads phase 1's weights (not its optimizer state) and trains with its own
sequence length, batch size and schedule, which warms up again from zero.
`--init_checkpoint` is ignored once `--output_dir` has a checkpoint of its own.

Evaluation (BERT's `--do_eval`): masked-LM and next-sentence loss and
accuracy on `--eval_input_file` every `--eval_every_steps` and at the end;
`--target_mlm_accuracy` stops training when reached; `--nodo_train --do_eval`
evaluates a checkpoint. A diverging run stops (`--divergence_steps`).

The output folder: a run holds an `fcntl.flock` on it (freed by the OS when
the process ends, also by SIGKILL), its holder named in `run.lock`, so a
second run on the folder stops at once naming the first (pid, host); folders on gs:// and other
remote file systems cannot be locked (a log line says so). `flags.json` records
the training flags (`TRAINING_FLAGS`), the BERT config and the input files; a
resume with other values stops with the differences unless
`--allow_flag_changes`. A damaged checkpoint (or `checkpoint` state file) is
reported and the newest readable one used; checkpoint folders left by a run
killed while saving (`ckpt-<step>_temp`) are removed at start.
"""

import contextlib
import os
import time

from absl import logging
import keras

from lamb import _app, _files, _startup, configs
from lamb import distribute, jax_distribution
from lamb.data import pretraining as data
from lamb.models import bert
from lamb.pretraining import checkpoints, run_folder, train
from lamb.pretraining.flags import OPTIMIZERS  # noqa: F401 (the --optimizer choices)
from lamb.pretraining.flags import (
    FLAGS, REQUIRED_FLAGS, validate_flags, warn_about_flags_without_effect,
)


def main(argv):
    """Checks the flags, the data and the output folder, then trains and/or evaluates."""
    pretrain(argv)


def pretrain(argv):
    """`main`; returns the trained model (None where there is nothing to train)."""
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: every setting is a --flag.")
    validate_flags()
    FLAGS.bert_config_file = configs.check_exists(FLAGS.bert_config_file, "bert_config_file")
    strategy_name = "tpu" if FLAGS.use_tpu else FLAGS.strategy
    warn_about_flags_without_effect(strategy_name)
    strategy = distribute.make_strategy(
        strategy_name,
        FLAGS.tpu_name,
        FLAGS.tpu_zone,
        FLAGS.gcp_project,
        FLAGS.num_cpu_devices,
    )
    distribution, layout = None, f"--strategy={strategy_name}"
    if keras.backend.backend() == "jax":
        # Before the model is built: its variables take their layouts.
        distribution = jax_distribution.configure_from_flags(jax_distribution.BERT_LAYOUTS)
        layout = f"--distribution={FLAGS.distribution}"
    replicas = train.replicas(strategy, distribution)
    _startup.hide_onednn_int64_notice()
    bert_config = bert.load_bert_config(FLAGS.bert_config_file)
    eval_files = []
    if FLAGS.do_eval:
        eval_files = data.expand_input_files(FLAGS.eval_input_file)
        train.check_records(bert_config, eval_files, FLAGS.verify_input_files)
        train.check_eval_batch_size(replicas, layout)
    if not FLAGS.do_train:
        run_folder.check_output_dir(FLAGS.output_dir)
        train.evaluate_checkpoint(strategy, bert_config, eval_files)
        return None
    files = data.expand_input_files(FLAGS.input_file)
    records = train.check_records(bert_config, files, every_record=False)
    batch_size = train.micro_batch_size(replicas, layout)
    train.check_jit_compile(strategy, strategy_name)
    run_folder.check_output_dir(FLAGS.output_dir)
    chief = train.is_chief(strategy)
    with _files.folder_lock(FLAGS.output_dir) if chief else contextlib.nullcontext():
        record = run_folder.training_record(bert_config, files)
        run_folder.check_training_record(FLAGS.output_dir, record)
        if FLAGS.verify_input_files:
            start = time.time()
            records = train.check_records(bert_config, files, every_record=True)
            logging.info("Checked %d records in %.1f s.", records, time.time() - start)
        if chief:
            checkpoints.remove_stale_temp_folders(FLAGS.output_dir)
            run_folder.write_json(os.path.join(FLAGS.output_dir, run_folder.FLAGS_RECORD), record)
        logging.info(
            "%d input files (%d records checked); %d replicas x %d micro-batches of %d",
            len(files), records, replicas, FLAGS.gradient_accumulation_steps, batch_size,
        )
        return train.train(strategy, bert_config, files, eval_files)


def run():
    """The app (`python -m lamb.run_pretraining`, `lamb-run-pretraining`):
    absl's check of the required flags, errors on one line."""
    _app.run(main, required=REQUIRED_FLAGS)


if __name__ == "__main__":
    run()
