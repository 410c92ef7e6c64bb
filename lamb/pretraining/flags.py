"""The flags of `lamb.run_pretraining` (google-research/bert's names and the
optimizer, distribution and precision), their checks, and warnings for flags
that change nothing."""

from absl import flags
import keras

from lamb import _app, _checks
from lamb import distribute, jax_distribution
from lamb.factory import DECAY_SCHEDULES
from lamb.optimizers import moments, registry
from lamb.optimizers.layer_adaptive import LayerAdaptiveOptimizer

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
    "every log, checkpoint and eval step (Keras steps_per_execution).",
)
flags.DEFINE_bool("do_train", True, "Whether to run training.")
flags.DEFINE_bool("do_eval", False, "Whether to run eval on the dev set (--eval_input_file).")
flags.DEFINE_string(
    "eval_input_file", None,
    "Held-out TF example files for --do_eval (a glob or comma separated): records "
    "made from other documents than --input_file's.",
)
flags.DEFINE_integer("eval_batch_size", 8, "Total batch size for eval.")
flags.DEFINE_integer(
    "max_eval_steps", 100,
    "Maximum number of eval steps: each eval reads the first max_eval_steps x "
    "eval_batch_size records of --eval_input_file, in order.",
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
_app.define_choice(
    "lamb16_moment_rounding", "nearest", moments.ROUNDINGS,
    "lamb16: how v's 8-bit codes round; stochastic keeps v unbiased where nearest "
    "rounding drifts, at high learning rates (docs/guides/lamb16.md).",
)
flags.DEFINE_float("beta_1", 0.9, "First-moment decay (lamb, adamw, adam, lamb16).")
flags.DEFINE_float("beta_2", 0.999, "Second-moment decay (lamb, adamw, adam, lamb16).")
flags.DEFINE_float("epsilon", 1e-6, "Epsilon of the Adam-type optimizers.")
flags.DEFINE_float(
    "end_learning_rate", 0.0, "Learning rate at the end of the polynomial decay."
)
flags.DEFINE_float("poly_power", 1.0, "Power of the polynomial learning-rate decay.")
_app.define_choice(
    "decay_schedule",
    "polynomial",
    DECAY_SCHEDULES,
    "The decay after the warmup: BERT's polynomial decay to --end_learning_rate, or a cosine "
    "decay to --cosine_alpha times --learning_rate.",
)
flags.DEFINE_float(
    "cosine_alpha", 0.0, "The cosine decay's floor, a fraction of --learning_rate in [0, 1]."
)
flags.DEFINE_integer(
    "start_warmup_step",
    0,
    "The step at which the schedule starts (MLPerf BERT's): steps before it count as step 0, "
    "e.g. for a phase that continues another run's checkpoint and its step count.",
)
flags.DEFINE_float(
    "clip_norm",
    1.0,
    "Clip the gradients to this global norm (BERT: 1.0), after summing them over "
    "the micro-batches and replicas; 0 turns clipping off.",
)
_app.define_choice(
    "strategy", "default", distribute.STRATEGIES,
    "The tf.distribute strategy (TensorFlow backend; on JAX: --distribution).",
)
jax_distribution.define_flags()
flags.DEFINE_integer(
    "num_cpu_devices",
    1,
    "Split the CPU into this many logical devices (to run mirrored/multi_worker without GPUs).",
)
flags.DEFINE_bool(
    "jit_compile", False,
    "XLA-compile the training step (TensorFlow backend; JAX always compiles it).",
)
_app.define_choice(
    "mixed_precision",
    None,
    list(MIXED_PRECISION_POLICIES),
    "Compute in bfloat16 or float16 (with dynamic loss scaling); variables stay float32.",
)
flags.DEFINE_integer(
    "gradient_accumulation_steps",
    1,
    "Micro-batches per optimizer step, run one after another; each has "
    "train_batch_size / this examples, split over the replicas (TensorFlow: "
    "lamb.training.GradientAccumulation inside the step; JAX: the optimizer's own "
    "gradient_accumulation_steps, one fit step per micro-batch).",
)

# Run control.
flags.DEFINE_integer(
    "eval_every_steps", 0,
    "With --do_train --do_eval: evaluate every this many steps (and at the last "
    "step); 0: at the last step only.",
)
flags.DEFINE_float(
    "target_mlm_accuracy", None,
    "With --do_train --do_eval: stop training at the first evaluation whose "
    "masked-LM accuracy reaches this (MLPerf's BERT: 0.720); metrics.json records "
    "the step and the examples seen.",
)
flags.DEFINE_integer(
    "divergence_steps", 100,
    "Stop the run (exit status 1, no checkpoint of the diverged weights, metrics.json "
    "with diverged_at_step) once the "
    "training loss has been NaN or infinite, above 10 times its lowest logged value, "
    "or every step skipped for a non-finite gradient, for this many steps in a row "
    "(checked at each log, --iterations_per_loop). 0: never stop.",
)
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
# TPU's address, --jit_compile; on JAX --distribution, --mesh_shape and the
# process flags), which changes the weights only by float rounding (and the
# dropout masks) as the losses are averaged over the global batch.
TRAINING_FLAGS = (
    "init_checkpoint", "max_seq_length", "max_predictions_per_seq", "train_batch_size",
    "learning_rate", "num_train_steps", "num_warmup_steps", "optimizer", "weight_decay",
    "beta_1", "beta_2", "epsilon", "end_learning_rate", "poly_power", "clip_norm",
    "mixed_precision", "gradient_accumulation_steps", "seed",
)
REQUIRED_FLAGS = ("bert_config_file", "output_dir")


def validate_flags():
    """Checks every flag's type and range, and the flags against each other,
    before any work; raises ValueError naming the flag and what is allowed."""
    for name in REQUIRED_FLAGS:
        value = getattr(FLAGS, name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"--{name} is required (a path); received {value!r}.")
    _check_modes()
    for name in ("init_checkpoint", "tpu_name", "tpu_zone", "gcp_project", "eval_input_file"):
        value = getattr(FLAGS, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"--{name} must be a string; received {value!r}.")
    for name in (
        "max_seq_length", "max_predictions_per_seq", "train_batch_size", "num_train_steps",
        "save_checkpoints_steps", "iterations_per_loop", "gradient_accumulation_steps",
        "keep_checkpoint_max", "num_cpu_devices", "eval_batch_size", "max_eval_steps",
    ):
        _checks.check_int(f"--{name}", getattr(FLAGS, name), low=1)
    for name in ("num_warmup_steps", "eval_every_steps", "divergence_steps", "start_warmup_step"):
        _checks.check_int(f"--{name}", getattr(FLAGS, name), low=0)
    if FLAGS.target_mlm_accuracy is not None:
        _checks.check_float("--target_mlm_accuracy", FLAGS.target_mlm_accuracy, 0.0, 1.0,
                            low_inclusive=False, high_inclusive=True)
    _checks.check_int("--seed", FLAGS.seed, low=0, high=MAX_SEED)
    _checks.check_learning_rate(FLAGS.learning_rate, "--learning_rate")
    for name in ("end_learning_rate", "poly_power"):
        _checks.check_float(f"--{name}", getattr(FLAGS, name), low=0.0)
    _checks.check_choice("--decay_schedule", FLAGS.decay_schedule, DECAY_SCHEDULES)
    _checks.check_float("--cosine_alpha", FLAGS.cosine_alpha, 0.0, 1.0, high_inclusive=True)
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
    _checks.check_choice("--lamb16_moment_rounding", FLAGS.lamb16_moment_rounding,
                         moments.ROUNDINGS)
    _checks.check_choice("--strategy", FLAGS.strategy, distribute.STRATEGIES)
    _check_backend_flags()
    if FLAGS.mixed_precision is not None:
        _checks.check_choice("--mixed_precision", FLAGS.mixed_precision, MIXED_PRECISION_POLICIES)
    for name in ("use_tpu", "jit_compile", "verify_input_files", "log_trust_ratios",
                 "allow_flag_changes", "lamb16_row_scales", "do_train", "do_eval"):
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


def _check_backend_flags():
    """Raises where a flag of one backend's distribution is given on the other,
    or where Keras's own optimizers would accumulate gradients on JAX."""
    _checks.check_choice("--distribution", FLAGS.distribution, jax_distribution.DISTRIBUTIONS)
    if keras.backend.backend() != "jax":
        if FLAGS.distribution != "none":
            jax_distribution.check_backend(f"--distribution={FLAGS.distribution}")
        for name in ("mesh_shape", "coordinator_address", "num_processes", "process_id"):
            if getattr(FLAGS, name) is not None:
                jax_distribution.check_backend(f"--{name}")
        return
    if FLAGS.use_tpu or FLAGS.strategy != "default":
        given = "--use_tpu" if FLAGS.use_tpu else f"--strategy={FLAGS.strategy}"
        raise ValueError(
            f"{given} is TensorFlow's (tf.distribute); on the JAX backend use "
            "--distribution=data_parallel or model_parallel."
        )
    if FLAGS.distribution == "none" and (FLAGS.num_processes or 1) > 1:
        raise ValueError(
            f"--num_processes={FLAGS.num_processes} with --distribution=none would train "
            "the same steps in every process; use --distribution=data_parallel or "
            "model_parallel."
        )
    accumulation = FLAGS.gradient_accumulation_steps
    if accumulation > 1 and FLAGS.optimizer in registry.KERAS_BUILTINS:
        raise ValueError(
            f"--gradient_accumulation_steps={accumulation} with --optimizer={FLAGS.optimizer} "
            "does not work on the JAX backend: Keras's own optimizers pass their schedule "
            "the micro-batch count, not the optimizer step; use one of "
            f"{sorted(set(OPTIMIZERS) - set(registry.KERAS_BUILTINS))}."
        )
    if accumulation > 1 and FLAGS.mixed_precision == "fp16":
        raise ValueError(
            f"--gradient_accumulation_steps={accumulation} with --mixed_precision=fp16 does not "
            "work on the JAX backend: Keras's loss scaling skips a non-finite micro-batch, "
            "not its whole step; use --mixed_precision=bf16."
        )


def _check_modes():
    """Raises unless --do_train or --do_eval is on, each with its input files."""
    if not FLAGS.do_train and not FLAGS.do_eval:
        raise ValueError(
            "--nodo_train without --do_eval does nothing: add --do_train or --do_eval."
        )
    for mode, name in (("do_train", "input_file"), ("do_eval", "eval_input_file")):
        value = getattr(FLAGS, name)
        if getattr(FLAGS, mode) and (not isinstance(value, str) or not value):
            raise ValueError(f"--{name} is required with --{mode} (a path); received {value!r}.")
    if FLAGS.target_mlm_accuracy is not None and not (FLAGS.do_train and FLAGS.do_eval):
        raise ValueError(
            f"--target_mlm_accuracy={FLAGS.target_mlm_accuracy} stops training at an "
            "evaluation: it needs --do_train and --do_eval."
        )


def warn_about_flags_without_effect(strategy_name):
    """A warning for each flag set (on the command line or in a flagfile)
    that changes nothing in this configuration."""
    optimizer = FLAGS.optimizer
    if not (FLAGS.do_train and FLAGS.do_eval):
        _app.warn_without_effect("eval_every_steps", "without both --do_train and --do_eval")
    if not FLAGS.do_eval:
        for name in ("eval_input_file", "eval_batch_size", "max_eval_steps"):
            _app.warn_without_effect(name, "without --do_eval")
    if FLAGS.log_trust_ratios and not issubclass(
        registry.OPTIMIZERS[optimizer], LayerAdaptiveOptimizer
    ):
        _app.warn_without_effect(
            "log_trust_ratios",
            f"with --optimizer={optimizer}, which has no trust ratio (lamb, lamb16 and lars do)",
        )
    if optimizer == "lars":
        for name in ("beta_1", "beta_2", "epsilon"):
            _app.warn_without_effect(name, "with --optimizer=lars (momentum, no moments)")
    if optimizer != "lamb16":
        for name in ("lamb16_row_scales", "lamb16_moment_rounding"):
            _app.warn_without_effect(name, f"with --optimizer={optimizer} (only lamb16)")
    if FLAGS.decay_schedule == "cosine":
        for name in ("end_learning_rate", "poly_power"):
            _app.warn_without_effect(name, "with --decay_schedule=cosine (its floor: --cosine_alpha)")
    else:
        _app.warn_without_effect("cosine_alpha", f"with --decay_schedule={FLAGS.decay_schedule}")
    if strategy_name != "tpu":
        for name in ("tpu_name", "tpu_zone", "gcp_project"):
            _app.warn_without_effect(name, f"with --strategy={strategy_name} (only with tpu)")
    if keras.backend.backend() == "jax":
        _app.warn_without_effect(
            "jit_compile", "on the JAX backend, which always XLA-compiles the step"
        )
        _app.warn_without_effect(
            "num_cpu_devices",
            "on the JAX backend (CPU devices there: "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N)",
        )
    elif FLAGS.num_cpu_devices > 1 and strategy_name not in ("mirrored", "multi_worker"):
        _app.warn_without_effect(
            "num_cpu_devices", f"with --strategy={strategy_name} (one device: use mirrored)"
        )

