"""Pre-train BERT (masked LM + next sentence) with LAMB and friends, on CPU, GPUs or TPUs.

The flags are those of google-research/bert's `run_pretraining.py`, plus the
optimizer, the `tf.distribute` strategy, XLA, mixed precision and gradient
accumulation. Training is `keras.Model.fit` on keras-hub's BERT.

Steps: `--num_train_steps` counts optimizer steps of `--train_batch_size`
examples (the global batch, split over the replicas and, on each, into
`--gradient_accumulation_steps` micro-batches that run one after another
inside the step: `lamb.training.GradientAccumulation`; their gradients are
summed over the replicas once, then clipped to `--clip_norm`). Every
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

The output folder: a run holds `<output_dir>/run.lock` (`fcntl.flock`, freed
by the OS when the process ends, also by SIGKILL), so a second run on the
folder stops at once naming the first (pid, host); folders on gs:// and other
remote file systems cannot be locked (a log line says so). `flags.json` records
the training flags (`TRAINING_FLAGS`), the BERT config and the input files; a
resume with other values stops with the differences unless
`--allow_flag_changes`. A damaged checkpoint (or `checkpoint` state file) is
reported and the newest readable one used; checkpoint folders left by a run
killed while saving (`ckpt-<step>_temp`) are removed at start.
"""

import contextlib
import json
import math
import os
import re
import socket
import sys
import time

from absl import flags
from absl import logging
import keras
import tensorflow as tf

import lamb
from lamb import _app, _checks, _files, configs
from lamb import distribute
from lamb.data import pretraining as data
from lamb.models import bert
from lamb.optimizers import base, registry

FLAGS = flags.FLAGS
OPTIMIZERS = tuple(registry.OPTIMIZERS)
MIXED_PRECISION_POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}

# google-research/bert's flags.
flags.DEFINE_string(
    "bert_config_file",
    None,
    "The config json file corresponding to the pre-trained BERT model. "
    "This specifies the model architecture. A path, or the name of an installed "
    "config: bert_config_tiny.json, bert_config_base.json, bert_config_large.json "
    "(python -m lamb.configs lists them).",
)
flags.DEFINE_string(
    "input_file", None, "Input TF example files (can be a glob or comma separated)."
)
flags.DEFINE_string(
    "output_dir",
    None,
    "The output directory where the model checkpoints, TensorBoard logs and "
    "metrics.json will be written.",
)
flags.DEFINE_string(
    "init_checkpoint",
    None,
    "Initial weights: a checkpoint of this app, or an output_dir (its latest "
    "checkpoint). Used only when --output_dir has no checkpoint yet.",
)
flags.DEFINE_integer(
    "max_seq_length",
    128,
    "The maximum total input sequence length after WordPiece tokenization. "
    "Must match the data.",
)
flags.DEFINE_integer(
    "max_predictions_per_seq",
    20,
    "Maximum number of masked LM predictions per sequence. Must match the data.",
)
flags.DEFINE_integer("train_batch_size", 32, "Global batch size for one optimizer step.")
flags.DEFINE_float("learning_rate", 5e-5, "The peak learning rate.")
flags.DEFINE_integer("num_train_steps", 100000, "Number of optimizer steps.")
flags.DEFINE_integer("num_warmup_steps", 10000, "Number of linear warmup steps.")
flags.DEFINE_integer(
    "save_checkpoints_steps", 1000, "How often to save the model checkpoint (in steps)."
)
flags.DEFINE_integer(
    "iterations_per_loop",
    1000,
    "Log metrics every this many steps. Steps run on the device in loops that end at "
    "every log and checkpoint step (Keras steps_per_execution).",
)
flags.DEFINE_bool("use_tpu", False, "Whether to use TPU (the same as --strategy=tpu).")
flags.DEFINE_string(
    "tpu_name", None, "The Cloud TPU to use: its name, a grpc:// address, or 'local' on a TPU VM."
)
flags.DEFINE_string("tpu_zone", None, "[Optional] GCE zone where the Cloud TPU is located in.")
flags.DEFINE_string("gcp_project", None, "[Optional] Project name for the Cloud TPU.")

# The optimizer, distribution and precision.
_app.define_choice("optimizer", "lamb", OPTIMIZERS, "The optimizer.")
flags.DEFINE_float(
    "weight_decay", None,
    "Weight decay (not on LayerNorm and bias); default 0.01, none for adam (which has none).",
)
flags.DEFINE_bool(
    "lamb16_row_scales", True,
    "lamb16: a scale per row of each 8-bit moment (per token of the embedding), "
    "not one per variable.",
)
flags.DEFINE_float("beta_1", 0.9, "First-moment decay (lamb, adamw, adam, lamb16).")
flags.DEFINE_float("beta_2", 0.999, "Second-moment decay (lamb, adamw, adam, lamb16).")
flags.DEFINE_float("epsilon", 1e-6, "Epsilon of the Adam-type optimizers.")
flags.DEFINE_float(
    "end_learning_rate", 0.0, "Learning rate at the end of the polynomial decay."
)
flags.DEFINE_float("poly_power", 1.0, "Power of the polynomial learning-rate decay.")
flags.DEFINE_float(
    "clip_norm",
    1.0,
    "Clip the gradients to this global norm (BERT: 1.0), after summing them over "
    "the micro-batches and replicas; 0 turns clipping off.",
)
_app.define_choice("strategy", "default", distribute.STRATEGIES, "The tf.distribute strategy.")
flags.DEFINE_integer(
    "num_cpu_devices",
    1,
    "Split the CPU into this many logical devices (to run mirrored/multi_worker without GPUs).",
)
flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step.")
_app.define_choice(
    "mixed_precision",
    None,
    list(MIXED_PRECISION_POLICIES),
    "Compute in bfloat16 or float16 (with dynamic loss scaling); variables stay float32.",
)
flags.DEFINE_integer(
    "gradient_accumulation_steps",
    1,
    "Micro-batches per optimizer step, run one after another on each replica; each "
    "has train_batch_size / (replicas x this) examples per replica.",
)

# Run control.
flags.DEFINE_integer("seed", 12345, "Seed of the initial weights, dropout and input order.")
flags.DEFINE_integer("keep_checkpoint_max", 5, "How many recent checkpoints to keep.")
flags.DEFINE_bool(
    "verify_input_files",
    True,
    "Check every record of every input file before training: TFRecord checksums, "
    "features, and values against the BERT config and flags (token ids below "
    "vocab_size, segment ids below type_vocab_size, masked-LM positions below "
    "--max_seq_length, masks and next-sentence labels 0 or 1, masked-LM weights "
    "finite in [0, 1]). Without it only the first record of each file is checked.",
)
flags.DEFINE_bool(
    "allow_flag_changes",
    False,
    "Resume even if the training flags, BERT config or input files differ from "
    "those recorded in <output_dir>/flags.json (the differences are logged and "
    "the record replaced).",
)
flags.DEFINE_bool(
    "log_trust_ratios",
    False,
    "Log each variable's LAMB/LARS trust ratio, weight norm and update norm to TensorBoard.",
)

MAX_SEED = 2**32 - 1  # NumPy's seeds (keras.utils.set_random_seed).

# The flags that change what a run computes (with the BERT config and the
# input files). A resume must keep them (or pass --allow_flag_changes). The
# others may change: logging, checkpoint frequency and count, input checks,
# and the hardware layout (--strategy, --num_cpu_devices, --use_tpu and the
# TPU's address, --jit_compile), which changes the weights only by float
# rounding (and the dropout masks) as the losses are averaged over the
# global batch.
TRAINING_FLAGS = (
    "init_checkpoint", "max_seq_length", "max_predictions_per_seq", "train_batch_size",
    "learning_rate", "num_train_steps", "num_warmup_steps", "optimizer", "weight_decay",
    "beta_1", "beta_2", "epsilon", "end_learning_rate", "poly_power", "clip_norm",
    "mixed_precision", "gradient_accumulation_steps", "seed",
)
FLAGS_RECORD = "flags.json"
CHECKPOINT_STATE = "checkpoint"
REQUIRED_FLAGS = ("bert_config_file", "input_file", "output_dir")


def validate_flags():
    """Checks every flag's type and range, and the flags against each other,
    before any work; raises ValueError naming the flag and what is allowed."""
    for name in REQUIRED_FLAGS:
        value = getattr(FLAGS, name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"--{name} is required (a path); received {value!r}.")
    for name in ("init_checkpoint", "tpu_name", "tpu_zone", "gcp_project"):
        value = getattr(FLAGS, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"--{name} must be a string; received {value!r}.")
    for name in (
        "max_seq_length", "max_predictions_per_seq", "train_batch_size", "num_train_steps",
        "save_checkpoints_steps", "iterations_per_loop", "gradient_accumulation_steps",
        "keep_checkpoint_max", "num_cpu_devices",
    ):
        _checks.check_int(f"--{name}", getattr(FLAGS, name), low=1)
    _checks.check_int("--num_warmup_steps", FLAGS.num_warmup_steps, low=0)
    _checks.check_int("--seed", FLAGS.seed, low=0, high=MAX_SEED)
    _checks.check_learning_rate(FLAGS.learning_rate, "--learning_rate")
    for name in ("end_learning_rate", "poly_power"):
        _checks.check_float(f"--{name}", getattr(FLAGS, name), low=0.0)
    if FLAGS.weight_decay is not None:
        _checks.check_float("--weight_decay", FLAGS.weight_decay, low=0.0)
        if FLAGS.weight_decay and FLAGS.optimizer in registry.WITHOUT_WEIGHT_DECAY:
            raise ValueError(
                f"--optimizer={FLAGS.optimizer} has no weight decay; drop "
                f"--weight_decay={FLAGS.weight_decay} or use --optimizer=adamw."
            )
    _checks.check_float("--clip_norm", FLAGS.clip_norm, low=0.0)  # 0: no clipping.
    for name in ("beta_1", "beta_2"):
        _checks.check_float(f"--{name}", getattr(FLAGS, name), 0.0, 1.0)
    # ε = 0 would divide 0 by 0 for weights that never get a gradient.
    _checks.check_float("--epsilon", FLAGS.epsilon, low=0.0, low_inclusive=False)
    _checks.check_choice("--optimizer", FLAGS.optimizer, OPTIMIZERS)
    _checks.check_choice("--strategy", FLAGS.strategy, distribute.STRATEGIES)
    if FLAGS.mixed_precision is not None:
        _checks.check_choice("--mixed_precision", FLAGS.mixed_precision, MIXED_PRECISION_POLICIES)
    for name in ("use_tpu", "jit_compile", "verify_input_files", "log_trust_ratios",
                 "allow_flag_changes", "lamb16_row_scales"):
        _checks.check_bool(f"--{name}", getattr(FLAGS, name))
    if FLAGS.num_warmup_steps > FLAGS.num_train_steps:
        raise ValueError(
            f"--num_warmup_steps={FLAGS.num_warmup_steps} must be in "
            f"[0, --num_train_steps={FLAGS.num_train_steps}]."
        )
    if FLAGS.max_predictions_per_seq > FLAGS.max_seq_length:
        raise ValueError(
            f"--max_predictions_per_seq={FLAGS.max_predictions_per_seq} exceeds "
            f"--max_seq_length={FLAGS.max_seq_length}."
        )
    if FLAGS.use_tpu and FLAGS.strategy not in ("default", "tpu"):
        raise ValueError(
            f"--use_tpu asks for --strategy=tpu, not --strategy={FLAGS.strategy}; drop one."
        )


def warn_about_flags_without_effect(strategy_name):
    """A warning for each flag set (on the command line or in a flagfile)
    that changes nothing in this configuration."""
    optimizer = FLAGS.optimizer
    if FLAGS.log_trust_ratios and not issubclass(
        registry.OPTIMIZERS[optimizer], base.LayerAdaptiveOptimizer
    ):
        _app.warn_without_effect(
            "log_trust_ratios",
            f"with --optimizer={optimizer}, which has no trust ratio (lamb, lamb16 and lars do)",
        )
    if optimizer == "lars":
        for name in ("beta_1", "beta_2", "epsilon"):
            _app.warn_without_effect(name, "with --optimizer=lars (momentum, no moments)")
    if optimizer != "lamb16":
        _app.warn_without_effect("lamb16_row_scales", f"with --optimizer={optimizer} (only lamb16)")
    if strategy_name != "tpu":
        for name in ("tpu_name", "tpu_zone", "gcp_project"):
            _app.warn_without_effect(name, f"with --strategy={strategy_name} (only with tpu)")
    if FLAGS.num_cpu_devices > 1 and strategy_name not in ("mirrored", "multi_worker"):
        _app.warn_without_effect(
            "num_cpu_devices", f"with --strategy={strategy_name} (one device: use mirrored)"
        )


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


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


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
            f"({_first_line(error)})."
        ) from None


def training_record(bert_config, files):
    """What a resume must keep: the training flags, the BERT config, the input files."""
    record = {name: getattr(FLAGS, name) for name in TRAINING_FLAGS}
    if FLAGS.optimizer == "lamb16":  # its state's layout
        record["lamb16_row_scales"] = FLAGS.lamb16_row_scales
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


def write_json(path, value):
    """Writes `value` to `path` as JSON, atomically (a temporary file renamed)."""
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def checkpoint_steps(directory):
    """The steps of the `ckpt-<step>` checkpoints with files in `directory`."""
    if not tf.io.gfile.isdir(directory):
        return []
    steps = set()
    for name in tf.io.gfile.listdir(directory):
        match = re.fullmatch(r"ckpt-(\d+)\.(index|data-\d{5}-of-\d{5})", name)
        if match:
            steps.add(int(match.group(1)))
    return sorted(steps)


def holds_checkpoints(directory):
    """Whether `directory` has checkpoint files or a checkpoint state file."""
    return bool(checkpoint_steps(directory)) or tf.io.gfile.exists(
        os.path.join(directory, CHECKPOINT_STATE)
    )


def remove_stale_temp_folders(output_dir):
    """Removes `ckpt-<step>_temp` folders: TensorFlow writes a checkpoint there
    and merges it into `ckpt-<step>.*`, so one is left only by a run killed
    while saving (TensorFlow: it "can be safely removed")."""
    for name in tf.io.gfile.listdir(output_dir):
        if re.fullmatch(r"ckpt-\d+_temp", name.rstrip("/")):
            path = os.path.join(output_dir, name.rstrip("/"))
            logging.warning("Removing %s, left by a run killed while saving a checkpoint.", path)
            tf.io.gfile.rmtree(path)


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


def checkpoint_damage(path):
    """Why the checkpoint `path` cannot be read (missing, truncated or altered
    files), or None if all its tensors read back with their checksums."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError) as error:
        return f"{type(error).__name__}: {_first_line(error)}"
    return None


class Checkpoints:
    """Step-numbered checkpoints `<output_dir>/ckpt-<step>` of everything a resume needs.

    TensorFlow checkpoints are written whole before `<output_dir>/checkpoint`
    names them, so a process killed while saving leaves the previous one
    intact. A checkpoint damaged afterwards is reported and the previous one
    used; a damaged or missing state file is rebuilt from the checkpoints
    present. Under multi-worker training every worker saves (the variables may
    need collective reads); only the chief's copy is kept.

    Args:
        output_dir: The run's folder.
        model: The compiled model, its optimizer built.
        strategy: The distribution strategy.
        max_to_keep: How many recent checkpoints to keep.
        model_description: What `model` is made of (flags, files), for the
            error when a checkpoint does not fit it.
    """

    def __init__(self, output_dir, model, strategy, max_to_keep, model_description):
        self.max_to_keep = max_to_keep
        self.model_description = model_description
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.checkpoint = tf.train.Checkpoint(
            global_step=self.global_step,
            model=list(model.variables),
            optimizer=list(model.optimizer.variables),
        )
        self.model_variables = list(model.variables)
        self.output_dir = output_dir
        self.chief = distribute.is_chief(strategy)
        self.worker_dir = os.path.join(
            output_dir, f"worker_{getattr(strategy.cluster_resolver, 'task_id', 0)}_tmp"
        ) if not self.chief else None
        self.manager = None  # Opened at the first save, once `restore` has mended the state file.
        self.saved_step = None

    def restore(self, init_checkpoint):
        """Restores the newest readable checkpoint of the output folder (else
        `init_checkpoint`'s weights); returns the step."""
        steps = checkpoint_steps(self.output_dir)
        state_path = os.path.join(self.output_dir, CHECKPOINT_STATE)
        state_readable = self._state_readable(state_path)
        for step in reversed(steps):
            path = os.path.join(self.output_dir, f"ckpt-{step}")
            damage = self._read(self.checkpoint, path)
            if damage:
                logging.warning("Checkpoint %s is damaged (%s); trying the previous one.",
                                path, damage)
                continue
            logging.info("Resuming from %s", path)
            if init_checkpoint:
                logging.warning(
                    "--init_checkpoint=%s has no effect: --output_dir=%s holds checkpoints "
                    "of its own, resumed instead.", init_checkpoint, self.output_dir,
                )
            if not state_readable and self.chief:
                self._write_state([s for s in steps if s <= step])
            self.saved_step = step
            return int(self.global_step.numpy())
        if steps or tf.io.gfile.exists(state_path):
            raise ValueError(
                f"--output_dir={self.output_dir} holds checkpoints ({CHECKPOINT_STATE} state "
                f"file: {'readable' if state_readable else 'damaged or absent'}; steps "
                f"{steps}) but none is readable (see the warnings). Move them away to start "
                "from step 0, or use another --output_dir."
            )
        if init_checkpoint:
            path = tf.train.latest_checkpoint(init_checkpoint) or init_checkpoint
            logging.info("Initializing the weights from %s", path)
            damage = self._read(tf.train.Checkpoint(model=self.model_variables), path)
            if damage:
                raise ValueError(f"--init_checkpoint: {path} is missing or damaged ({damage}).")
        return 0

    @staticmethod
    def _state_readable(state_path):
        """Whether the state file exists and parses (logs a warning if it is damaged)."""
        if not tf.io.gfile.exists(state_path):
            return False
        try:
            if tf.train.get_checkpoint_state(os.path.dirname(state_path)) is not None:
                return True
        except ValueError:  # An empty file.
            pass
        logging.warning("%s is damaged; looking for the checkpoints themselves.", state_path)
        return False

    def _write_state(self, steps):
        """Writes a state file naming the checkpoints of `steps` (the last one
        latest), so that the CheckpointManager keeps only the newest ones."""
        paths = [os.path.join(self.output_dir, f"ckpt-{step}") for step in steps]
        now = time.time()
        tf.compat.v1.train.update_checkpoint_state(
            self.output_dir,
            paths[-1],
            all_model_checkpoint_paths=paths,
            all_model_checkpoint_timestamps=[now] * len(paths),
            last_preserved_timestamp=now - 1,
        )
        logging.info("Rewrote the state file %s (latest: %s).",
                     os.path.join(self.output_dir, CHECKPOINT_STATE), paths[-1])

    def _read(self, checkpoint, path):
        """Reads `path` into `checkpoint`; returns None, or why its files are
        damaged. Raises ValueError if it is whole but does not fit the model."""
        try:
            # Values without an object here are no error: the CheckpointManager's
            # save_counter, and the optimizer state of an --init_checkpoint
            # (expect_partial keeps TensorFlow from warning about them at exit).
            status = checkpoint.read(path).expect_partial()
            status.assert_existing_objects_matched()
            return None
        except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
            damage = checkpoint_damage(path)
            if damage:
                return damage
            raise ValueError(
                f"{path}: cannot restore this checkpoint into the model of "
                f"{self.model_description} ({_first_line(error)})."
            ) from None

    def save(self, step):
        """Saves the checkpoint of `step` unless it was restored or saved already."""
        if step == self.saved_step:
            return
        self.global_step.assign(step)
        if self.chief:
            if self.manager is None:
                self.manager = tf.train.CheckpointManager(
                    self.checkpoint,
                    self.output_dir,
                    max_to_keep=self.max_to_keep,
                    checkpoint_name="ckpt",
                )
            self.manager.save(checkpoint_number=step)
        else:
            self.checkpoint.write(os.path.join(self.worker_dir, "ckpt"))
            tf.io.gfile.rmtree(self.worker_dir)
        self.saved_step = step


class TrainingMonitor(keras.callbacks.Callback):
    """Every `log_every` steps and at the last: a log line, TensorBoard
    scalars (the metrics averaged since the previous log); every `save_every`
    steps before the last, a checkpoint. Each `fit` step is one optimizer step.
    """

    def __init__(self, checkpoints, initial_step, num_train_steps, log_every, save_every,
                 train_batch_size, log_trust_ratios, summary_dir):
        super().__init__()
        self.checkpoints = checkpoints
        self.initial_step = initial_step
        self.num_train_steps = num_train_steps
        self.log_every = log_every
        self.save_every = save_every
        self.train_batch_size = train_batch_size
        self.log_trust_ratios = log_trust_ratios
        self.step = initial_step
        self.writer = tf.summary.create_file_writer(summary_dir) if checkpoints.chief else None
        self.last_logs = {}
        self.skipped_steps = 0
        self.loop_start = (time.time(), initial_step)

    def on_train_batch_end(self, batch, logs=None):
        # Keras reports the last batch of a device loop as if the loop were
        # whole; the data (and so the run) ends at num_train_steps.
        self.step = min(self.initial_step + batch + 1, self.num_train_steps)
        if self.step % self.save_every == 0 and self.step < self.num_train_steps:
            self.checkpoints.save(self.step)  # main() saves the last step after metrics.json.
        if self.step % self.log_every and self.step < self.num_train_steps:
            return
        start_time, start_step = self.loop_start
        # Read in the cross-replica context: the metrics of all replicas combined.
        logs = {
            name: float(keras.ops.convert_to_numpy(value))
            for name, value in self.model.get_metrics_result().items()
        }
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        skipped = self._skipped_steps()
        if skipped is not None:
            if skipped > self.skipped_steps:
                logging.warning(
                    "%d steps skipped since the previous log for an inf or NaN gradient "
                    "(weights and optimizer state unchanged); %d in this run's optimizer so far.",
                    skipped - self.skipped_steps, skipped,
                )
            self.skipped_steps = skipped
            logs["skipped_steps"] = skipped
        logs["examples_per_second"] = (
            (self.step - start_step) * self.train_batch_size / (time.time() - start_time)
        )
        self.last_logs = logs
        logging.info(
            "step %d/%d: %s",
            self.step,
            self.num_train_steps,
            ", ".join(f"{name}={value:.5g}" for name, value in logs.items()),
        )
        if self.writer is not None:
            self._write_summaries(logs)
        self.model.reset_metrics()
        self.loop_start = (time.time(), self.step)

    def on_train_begin(self, logs=None):
        self.skipped_steps = self._skipped_steps() or 0  # as restored

    def _skipped_steps(self):
        """The optimizer's count of skipped steps, or None if it cannot skip."""
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        if not getattr(optimizer, "skip_nonfinite_gradients", False):
            return None
        return optimizer.skipped_steps

    def _write_summaries(self, logs):
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        with self.writer.as_default(step=self.step):
            for name, value in logs.items():
                tf.summary.scalar(name, value)
            if self.log_trust_ratios and hasattr(optimizer, "layer_statistics"):
                statistics = optimizer.layer_statistics()
                for index, name in enumerate(("weight_norm", "update_norm", "trust_ratio")):
                    values = [stats[index] for stats in statistics.values()]
                    tf.summary.histogram(f"{name}s", values)
                    for path, stats in statistics.items():
                        tf.summary.scalar(f"{name}/{path}", stats[index])
        self.writer.flush()


def write_metrics(output_dir, step, logs):
    """Writes `<output_dir>/metrics.json` atomically."""
    metrics = {"global_step": step, **logs}
    path = os.path.join(output_dir, "metrics.json")
    write_json(path, metrics)
    logging.info("Final metrics in %s: %s", path, metrics)


def main(argv):
    """Checks the flags, the data and the output folder, then trains."""
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
    bert_config = bert.load_bert_config(FLAGS.bert_config_file)
    files = data.expand_input_files(FLAGS.input_file)
    records = check_records(bert_config, files, every_record=False)
    batch_size = micro_batch_size(strategy, strategy_name)
    check_jit_compile(strategy, strategy_name)
    check_output_dir(FLAGS.output_dir)
    chief = distribute.is_chief(strategy)
    with _files.folder_lock(FLAGS.output_dir) if chief else contextlib.nullcontext():
        record = training_record(bert_config, files)
        check_training_record(FLAGS.output_dir, record)
        if FLAGS.verify_input_files:
            start = time.time()
            records = check_records(bert_config, files, every_record=True)
            logging.info("Checked %d records in %.1f s.", records, time.time() - start)
        if chief:
            remove_stale_temp_folders(FLAGS.output_dir)
            write_json(os.path.join(FLAGS.output_dir, FLAGS_RECORD), record)
        logging.info(
            "%d input files (%d records checked); %d replicas x %d micro-batches of %d",
            len(files), records, strategy.num_replicas_in_sync,
            FLAGS.gradient_accumulation_steps, batch_size,
        )
        train(strategy, bert_config, files)


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


def run():
    """The app (`python -m lamb.run_pretraining`, `lamb-run-pretraining`):
    absl's check of the required flags, errors on one line."""
    _app.run(main, required=REQUIRED_FLAGS)


if __name__ == "__main__":
    run()
