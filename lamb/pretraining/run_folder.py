"""What a resume must keep (`<output_dir>/flags.json`), the output folder's
checks, and JSON files written whole."""

import json
import math
import os
import socket

from absl import logging
import tensorflow as tf

from lamb.pretraining.checkpoints import first_line, holds_checkpoints
from lamb.pretraining.flags import FLAGS, TRAINING_FLAGS

FLAGS_RECORD = "flags.json"


def check_output_dir(output_dir):
    """Creates `output_dir` if needed and checks that it is a folder this
    process can write to (by writing and removing a small file)."""
    if tf.io.gfile.exists(output_dir) and not tf.io.gfile.isdir(output_dir):
        raise ValueError(f"--output_dir={output_dir} is a file, not a folder.")
    probe = os.path.join(output_dir, f".write_test.{socket.gethostname()}.{os.getpid()}")
    try:
        tf.io.gfile.makedirs(output_dir)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("lamb.run_pretraining checks that it can write here.\n")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as error:
        raise ValueError(
            f"--output_dir={output_dir}: cannot create or write files in this folder "
            f"({first_line(error)})."
        ) from None


def training_record(bert_config, files):
    """What a resume must keep: the training flags, the BERT config, the input files."""
    record = {name: getattr(FLAGS, name) for name in TRAINING_FLAGS}
    if FLAGS.optimizer == "lamb16":  # its state's layout
        record["lamb16_row_scales"] = FLAGS.lamb16_row_scales
        if FLAGS.lamb16_moment_rounding != "nearest":
            record["lamb16_moment_rounding"] = FLAGS.lamb16_moment_rounding
    # Recorded when set, so that the records of runs from before these flags still match.
    if FLAGS.decay_schedule == "cosine":
        record.update(decay_schedule="cosine", cosine_alpha=FLAGS.cosine_alpha)
    if FLAGS.start_warmup_step:
        record["start_warmup_step"] = FLAGS.start_warmup_step
    record["bert_config"] = bert_config
    record["input_files"] = list(files)
    return record


def _differences(old, new):
    """`name: old → new` for each differing entry of two training records."""
    differences = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, "(not recorded)"), new.get(key, "(not recorded)")
        if before == after:
            continue
        if key == "bert_config" and isinstance(before, dict):
            differences += [
                f"BERT config {name}: {before.get(name)!r} → {after.get(name)!r}"
                for name in sorted(set(before) | set(after))
                if before.get(name) != after.get(name)
            ]
        elif key == "input_files" and isinstance(before, list):
            added = sorted(set(after) - set(before))
            removed = sorted(set(before) - set(after))
            differences.append(
                f"input files: {len(before)} → {len(after)} (added {_some(added)}, "
                f"removed {_some(removed)}{', reordered' if not added and not removed else ''})"
            )
        else:
            differences.append(f"--{key}: {before!r} → {after!r}")
    return differences


def _some(names, count=3):
    shown = ", ".join(names[:count]) or "none"
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")


def check_training_record(output_dir, record):
    """On a resume (`output_dir` holds checkpoints), raises ValueError listing
    each difference between `record` and the one in flags.json, unless
    --allow_flag_changes (then logs them)."""
    if not holds_checkpoints(output_dir):
        return
    path = os.path.join(output_dir, FLAGS_RECORD)
    if not tf.io.gfile.exists(path):
        logging.warning("%s holds checkpoints but no %s: the flags they were trained with "
                        "are unknown; recording these.", output_dir, FLAGS_RECORD)
        return
    try:
        with tf.io.gfile.GFile(path) as f:
            recorded = json.load(f)
        differences = _differences(recorded, record)
    except (ValueError, AttributeError) as error:
        differences = [f"{path} is unreadable ({error})"]
    if not differences:
        return
    message = (
        f"--output_dir={output_dir} holds a run with other training flags "
        f"({path}): {'; '.join(differences)}."
    )
    if FLAGS.allow_flag_changes:
        logging.warning("%s Resuming anyway (--allow_flag_changes).", message)
        return
    raise ValueError(
        f"{message} Resume with the same flags, use another --output_dir, or add "
        "--allow_flag_changes."
    )


def strict_json_values(value):
    """`value` with each NaN or infinite float replaced by None (JSON's null:
    strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_values(item) for item in value]
    return value


def write_json(path, value):
    """Writes `value` to `path` as strict JSON (non-finite numbers as null),
    atomically (a temporary file renamed)."""
    text = json.dumps(strict_json_values(value), indent=2, sort_keys=True, allow_nan=False)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write(text + "\n")
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)

