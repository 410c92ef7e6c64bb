"""Does LAMB keep BERT's held-out accuracy at large batches where AdamW falls behind?

    python benchmarks/bert_large_batch.py --text_dir=../shared/data/text/shakespeare \\
        --vocab_file=../shared/data/bert/vocab_uncased.txt

Tiny BERT pre-trained on a CPU, AdamW (BERT's) against LAMB, every run a
`lamb.run_pretraining` process in `<work_dir>/<run name>`, in four stages:

1. sweep: each optimizer's peak learning rate at the smallest batch, each of
   --sweep_learning_rates trained on --sweep_examples (and one more step beyond
   the smallest or largest while it is the best); the base rate is the one
   with the best final held-out masked-LM accuracy (or --base_learning_rates).
2. grid: every optimizer at every --batch_sizes for the same --epochs over the
   first --num_records records, peak rate base x sqrt(batch / smallest) (the
   paper's square-root rule); smallest and largest batch first.
3. retune: at the largest batch, the square-root rate times each of
   --retune_factors for every optimizer, so that a bad rate is ruled out.
4. two_phase: the paper's mixed-batch training for LAMB at small scale: the
   first --phase1_share of the examples at sequence --phase1_seq_length and
   twice the largest batch, then the rest at the full sequence and the largest
   batch from phase 1's weights, the rate warmed up again; against the grid's
   one-phase run at the largest batch. Each phase's peak rate is its batch's
   square-root rate times each of --two_phase_factors (a pair of runs each).

Warmup follows the paper's share: --largest_warmup_fraction of the steps at
the largest batch, in proportion to the batch below it (so every run warms up
over the same number of steps), then linear decay to 0. Batches above
--micro_batch_size accumulate micro-batches. Every run is evaluated on the
same held-out records (the last --num_eval_texts files of --text_dir, other
plays, less the documents a training file also holds) every
--eval_every_examples examples and at its end.

A run that diverges (`lamb.run_pretraining --divergence_steps`) is a result: the
table says where, the batch figure draws it as x, and the driver goes on.
Killed, the same command resumes: finished runs are skipped, a run in progress
continues from its checkpoints, and records are made once. Then it writes
`<output>_curves.png` (held-out masked-LM accuracy and loss against examples
seen, one line per optimizer and batch), `<output>_batch.png` (final held-out
accuracy against batch size) and Markdown tables to standard output.

Sizing (2-core VM, tiny BERT, sequence 32, XLA): about 300 examples/s at
batch 64 when the machine is quiet, 100 to 150 when other jobs share it,
less at batch 16. The defaults: 65,536 records x 4 epochs = 262,144 examples
per run, 16,384 steps at batch 16 and 1,024 at 256; 6 grid runs, 6 sweep runs
of 32,768 examples, 4 retune runs and 2 phases: about 3.5 M examples, 3 to 4
hours when quiet.
"""

import collections
import json
import math
import os
import signal
import subprocess
import sys

from absl import app
from absl import flags
import tensorflow as tf

import bert_demo_curves  # benchmarks/bert_demo_curves.py
from lamb import configs
from lamb._files import atomic_path
from lamb.mnist import reports
from lamb.mnist.protocols import display
from lamb.optimizers import registry

FLAGS = flags.FLAGS
STAGES = ("sweep", "grid", "retune", "two_phase")

flags.DEFINE_string("work_dir", "results/bert_large_batch", "Records and runs (one per data set).")
flags.DEFINE_string(
    "text_dir", None,
    "A folder of .txt files (a sentence a line, a blank line between documents) to make "
    "the records from, with --vocab_file.",
)
flags.DEFINE_string("vocab_file", None, "The WordPiece vocabulary for --text_dir.")
flags.DEFINE_integer(
    "num_eval_texts", 2,
    "Hold out the last this many .txt files of --text_dir (by name) for the held-out records.",
)
flags.DEFINE_integer("eval_batch_size", 256, "Examples per evaluation batch.")
flags.DEFINE_integer("max_eval_steps", 16, "Batches per evaluation (the first records).")
flags.DEFINE_string("bert_config_file", "bert_config_tiny.json", "The model.")
flags.DEFINE_integer("max_seq_length", 32, "Sequence length of the records.")
flags.DEFINE_integer("max_predictions_per_seq", 5, "Masked-LM predictions per record.")
flags.DEFINE_integer("num_records", 65536, "Train on the first this many records.")
flags.DEFINE_integer("epochs", 4, "Passes over the records in every grid run.")
flags.DEFINE_list(
    "batch_sizes", ["16", "64", "256"],
    "Global batch sizes; the smallest is where the rates are tuned.",
)
flags.DEFINE_list("optimizers", ["adamw", "lamb"], "The optimizers to compare.")
flags.DEFINE_integer(
    "micro_batch_size", 256,
    "Larger batches accumulate gradients over micro-batches of this size.",
)
flags.DEFINE_list(
    "sweep_learning_rates", ["adamw=3e-4:1e-3:3e-3", "lamb=3e-3:1e-2:3e-2"],
    "optimizer=rate:rate:... tried at the smallest batch.",
)
flags.DEFINE_integer("sweep_examples", 32768, "Examples per sweep run.")
flags.DEFINE_integer(
    "sweep_extensions", 2,
    "Where the best rate is the smallest or largest tried, try one more beyond it, up to "
    "this many per optimizer.",
)
flags.DEFINE_list(
    "base_learning_rates", [],
    "optimizer=rate: the peak rates at the smallest batch, instead of the sweep's.",
)
flags.DEFINE_list(
    "retune_factors", ["0.5", "2"],
    "At the largest batch, also the square-root rate times each of these.",
)
flags.DEFINE_float(
    "largest_warmup_fraction", 0.2,
    "Warmup share of the steps at the largest batch; smaller batches in proportion.",
)
flags.DEFINE_bool("two_phase", True, "Run stage 4 (LAMB, if it is one of --optimizers).")
flags.DEFINE_integer("phase1_seq_length", 16, "Phase 1's sequence length.")
flags.DEFINE_integer("phase1_predictions", 3, "Phase 1's masked-LM predictions per record.")
flags.DEFINE_float("phase1_share", 0.9, "Phase 1's share of the examples.")
flags.DEFINE_float("phase2_warmup_fraction", 0.1, "Phase 2's re-warmup share of its steps.")
flags.DEFINE_list(
    "two_phase_factors", ["1", "0.5"],
    "The two-phase runs' peak rates: each phase's square-root rate times each of these, a "
    "pair of runs per factor (0.5: at the square-root rates, phase 1 stayed on the plateau).",
)
flags.DEFINE_integer(
    "eval_every_examples", 16384,
    "Evaluate (and save a checkpoint) about every this many examples.",
)
flags.DEFINE_bool("jit_compile", True, "XLA-compile the training steps.")
flags.DEFINE_integer(
    "divergence_steps", 100,
    "Every run's --divergence_steps: it stops, diverged, once its loss has been bad this long.",
)
flags.DEFINE_bool(
    "report_only", False, "Train nothing: the figures and table of the runs finished so far."
)
flags.DEFINE_string(
    "output", "docs/bert_large_batch",
    "Writes <output>_curves.png and <output>_batch.png.",
)

Run = collections.namedtuple("Run", "stage optimizer batch lr args")


def parse_rates(specs, flag):
    """`["name=a:b", ...]` -> `{name: [a, b]}` for the optimizers of --optimizers."""
    rates = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        if name not in registry.OPTIMIZERS:
            raise app.UsageError(
                f"--{flag}: {name!r} is none of {', '.join(registry.OPTIMIZERS)}."
            )
        try:
            rates[name] = [float(v) for v in values.split(":")]
        except ValueError:
            raise app.UsageError(f"--{flag}: {spec!r} is no optimizer=rate[:rate...].") from None
    return rates


def batch_sizes():
    return sorted(int(b) for b in FLAGS.batch_sizes)


def warmup_fraction(batch):
    return FLAGS.largest_warmup_fraction * batch / batch_sizes()[-1]


def make_run(stage, optimizer, batch, lr, examples, files, seq_length=None, predictions=None,
             warmup=None, name=None, **extra):
    """The `lamb.run_pretraining` flags of one run: `examples` at `batch`."""
    seq_length = seq_length or FLAGS.max_seq_length
    if examples % batch:
        raise app.UsageError(f"{examples} examples are no whole number of batches of {batch}.")
    if batch > FLAGS.micro_batch_size and batch % FLAGS.micro_batch_size:
        raise app.UsageError(
            f"Batch {batch} is no multiple of --micro_batch_size={FLAGS.micro_batch_size}."
        )
    steps = examples // batch
    largest = batch_sizes()[-1]
    log_steps = max(1, round(largest / batch))
    eval_steps = log_steps * max(1, round(FLAGS.eval_every_examples / (batch * log_steps)))
    while steps % eval_steps:  # The last step is evaluated.
        eval_steps -= 1
    name = name or f"{optimizer}-s{seq_length}-b{batch}-lr{lr:.3g}-n{examples}"
    args = {
        "bert_config_file": files["bert_config"],
        "input_file": files[f"train{seq_length}"],
        "output_dir": os.path.join(os.path.abspath(FLAGS.work_dir), name),
        "max_seq_length": seq_length,
        "max_predictions_per_seq": predictions or FLAGS.max_predictions_per_seq,
        "optimizer": optimizer,
        "train_batch_size": batch,
        "gradient_accumulation_steps": max(1, batch // FLAGS.micro_batch_size),
        "learning_rate": lr,
        "num_train_steps": steps,
        "num_warmup_steps": round((warmup_fraction(batch) if warmup is None else warmup) * steps),
        "iterations_per_loop": log_steps,
        "save_checkpoints_steps": eval_steps,
        "keep_checkpoint_max": 2,
        "jit_compile": FLAGS.jit_compile,
        "divergence_steps": FLAGS.divergence_steps,
        "do_eval": True,
        "eval_input_file": files[f"eval{seq_length}"],
        "eval_batch_size": FLAGS.eval_batch_size,
        "max_eval_steps": FLAGS.max_eval_steps,
        "eval_every_steps": eval_steps,
        **extra,
    }
    return Run(stage, optimizer, batch, lr, args)


def grid_examples():
    return FLAGS.epochs * FLAGS.num_records


def plan_sweep(files):
    smallest = batch_sizes()[0]
    return [
        make_run("sweep", optimizer, smallest, lr, FLAGS.sweep_examples, files)
        for optimizer, rates in parse_rates(FLAGS.sweep_learning_rates,
                                            "sweep_learning_rates").items()
        if optimizer in FLAGS.optimizers
        for lr in rates
    ]


def best_rates(sweep):
    """`{optimizer: the sweep rate with the best final held-out masked-LM
    accuracy}`; a diverged run (or one without a finite accuracy) is the worst."""
    best = {}
    for run in sweep:
        accuracy = final_accuracy(run)
        if accuracy is None:
            accuracy = -math.inf
        if run.optimizer not in best or accuracy > best[run.optimizer][0]:
            best[run.optimizer] = (accuracy, run.lr)
    return {optimizer: lr for optimizer, (_, lr) in best.items()}


def extend_sweep(sweep, files):
    """The runs to add where an optimizer's best rate is its smallest or largest
    tried: one more step beyond it (the ratio to its neighbour), at most
    --sweep_extensions beyond each optimizer's --sweep_learning_rates."""
    planned = parse_rates(FLAGS.sweep_learning_rates, "sweep_learning_rates")
    extra = []
    for optimizer, best in best_rates(sweep).items():
        rates = sorted(r.lr for r in sweep if r.optimizer == optimizer)
        if len(rates) < 2 or len(rates) - len(planned[optimizer]) >= FLAGS.sweep_extensions:
            continue
        if best == rates[0]:
            lr = rates[0] * rates[0] / rates[1]
        elif best == rates[-1]:
            lr = rates[-1] * rates[-1] / rates[-2]
        else:
            continue
        extra.append(make_run("sweep", optimizer, batch_sizes()[0], lr, FLAGS.sweep_examples,
                              files))
    return extra


def run_sweep(files, bert_config):
    """The sweep's runs, extended while a best rate is at its edge; trained
    unless --report_only. Returns them and whether they are all finished."""
    sweep, pending = [], plan_sweep(files)
    while pending:
        sweep += pending
        if not FLAGS.report_only:
            train(pending, bert_config)
        if not all(finished(r, bert_config) for r in pending):
            return sweep, False
        pending = extend_sweep(sweep, files)
    return sweep, True


def plan_grid(files, base):
    batches = batch_sizes()
    order = [batches[0], batches[-1]] + batches[1:-1]  # The ends first: the answer soonest.
    return [
        make_run("grid", optimizer, batch, base[optimizer] * math.sqrt(batch / batches[0]),
                 grid_examples(), files)
        for batch in order
        for optimizer in FLAGS.optimizers
    ]


def plan_retune(files, base):
    batches = batch_sizes()
    scaled = {o: base[o] * math.sqrt(batches[-1] / batches[0]) for o in FLAGS.optimizers}
    return [
        make_run("retune", optimizer, batches[-1], scaled[optimizer] * float(factor),
                 grid_examples(), files)
        for optimizer in FLAGS.optimizers
        for factor in FLAGS.retune_factors
    ]


def plan_two_phase(files, base):
    """Phase 1 and phase 2 of LAMB's mixed-batch run (phase 2 starts from phase
    1's weights), for each of --two_phase_factors."""
    batches = batch_sizes()
    batch1, batch2 = 2 * batches[-1], batches[-1]
    examples1 = math.floor(FLAGS.phase1_share * grid_examples() / batch1) * batch1
    examples2 = grid_examples() - examples1
    examples2 -= examples2 % batch2
    if not examples1 or not examples2:
        raise app.UsageError(
            f"--phase1_share={FLAGS.phase1_share} of {grid_examples()} examples leaves a phase "
            f"without a whole batch ({batch1} in phase 1, {batch2} in phase 2)."
        )
    runs = []
    for factor in map(float, FLAGS.two_phase_factors):
        lr1, lr2 = (factor * base["lamb"] * math.sqrt(b / batches[0]) for b in (batch1, batch2))
        phase1 = make_run(
            "phase 1", "lamb", batch1, lr1, examples1, files, seq_length=FLAGS.phase1_seq_length,
            predictions=FLAGS.phase1_predictions, warmup=FLAGS.largest_warmup_fraction,
        )
        phase2 = make_run(
            "phase 2", "lamb", batch2, lr2, examples2, files, warmup=FLAGS.phase2_warmup_fraction,
            name=os.path.basename(phase1.args["output_dir"]) + f"-then-b{batch2}-lr{lr2:.3g}",
            init_checkpoint=phase1.args["output_dir"],
        )
        runs += [phase1, phase2]
    return runs


def split_texts():
    """The .txt files of --text_dir for training, and for evaluation the last
    --num_eval_texts (by name) without their documents (blocks between blank
    lines) that a training file also holds, written to `<work_dir>/held_out/`
    once, so that no held-out document is trained on."""
    texts = sorted(tf.io.gfile.glob(os.path.join(FLAGS.text_dir, "*.txt")))
    if not 0 < FLAGS.num_eval_texts < len(texts):
        raise app.UsageError(f"--text_dir holds {len(texts)} .txt files; --num_eval_texts="
                             f"{FLAGS.num_eval_texts} must leave some to train on and hold "
                             "at least one out.")
    split = len(texts) - FLAGS.num_eval_texts
    folder = os.path.join(FLAGS.work_dir, "held_out")
    held_out = [os.path.abspath(os.path.join(folder, os.path.basename(p))) for p in texts[split:]]
    if not all(os.path.exists(path) for path in held_out):
        trained = {normalized(d) for path in texts[:split] for d in documents(path)}
        os.makedirs(folder, exist_ok=True)
        for source, path in zip(texts[split:], held_out):
            kept = [d for d in documents(source) if normalized(d) not in trained]
            print(f"{source}: {len(kept)} documents held out, "
                  f"{len(documents(source)) - len(kept)} left out as a training file also "
                  "holds them.")
            if not kept:
                raise app.UsageError(f"{source}: every document is also in a training file.")
            with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as f:
                f.write("\n\n".join(kept) + "\n")
    return texts[:split], held_out


def documents(path):
    """The documents of a text file: its blocks between blank lines, as written."""
    with open(path, encoding="utf-8") as f:
        blocks = f.read().split("\n\n")
    return [block.strip("\n") for block in blocks if block.strip()]


def normalized(document):
    return " ".join(document.split())


def create_records(texts, name, seq_length, predictions):
    """`<work_dir>/<name>` made from `texts` by lamb.create_pretraining_data (once)."""
    path = os.path.abspath(os.path.join(FLAGS.work_dir, name))
    if not os.path.exists(path):
        with atomic_path(path) as temporary:
            run([sys.executable, "-m", "lamb.create_pretraining_data",
                 f"--input_file={','.join(texts)}",
                 f"--vocab_file={FLAGS.vocab_file}", f"--output_file={temporary}",
                 f"--max_seq_length={seq_length}",
                 f"--max_predictions_per_seq={predictions}",
                 "--dupe_factor=1"], "lamb.create_pretraining_data")
    return path


def first_records(source, count):
    """The path of a file of the first `count` records of `source` (written once)."""
    stem = os.path.splitext(os.path.basename(source))[0]
    subset = os.path.abspath(os.path.join(FLAGS.work_dir, f"{stem}-{count}.tfrecord"))
    if os.path.exists(subset):
        return subset
    written = 0
    with atomic_path(subset) as temporary, tf.io.TFRecordWriter(temporary) as writer:
        for record in tf.data.TFRecordDataset(source).take(count):
            writer.write(record.numpy())
            written += 1
        if written < count:
            raise app.UsageError(f"--num_records={count}, but {source} holds {written}.")
    return subset


def make_records(bert_config_file):
    """`{"train<seq>": path, "eval<seq>": path, "bert_config": path}` for the
    full sequence length and, with --two_phase, phase 1's."""
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    train_texts, eval_texts = split_texts()
    lengths = {FLAGS.max_seq_length: FLAGS.max_predictions_per_seq}
    if FLAGS.two_phase and "lamb" in FLAGS.optimizers:
        lengths[FLAGS.phase1_seq_length] = FLAGS.phase1_predictions
    files = {"bert_config": bert_config_file}
    for seq, predictions in lengths.items():
        train = create_records(train_texts, f"train-{seq}.tfrecord", seq, predictions)
        files[f"train{seq}"] = first_records(train, FLAGS.num_records)
        files[f"eval{seq}"] = create_records(eval_texts, f"eval-{seq}.tfrecord", seq, predictions)
    return files


def run(command, name):
    if subprocess.run(command).returncode:
        sys.exit(f"{name} failed (its messages are above); the same command resumes.")


def finished(run_, bert_config):
    """Whether the run has trained to its last step, or diverged, with these
    flags, data and model."""
    args = run_.args
    try:
        with open(os.path.join(args["output_dir"], "metrics.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(args["output_dir"], "flags.json")) as f:
            record = json.load(f)
    except FileNotFoundError:
        return False
    return ((metrics["global_step"] == args["num_train_steps"] or "diverged_at_step" in metrics)
            and record["input_files"] == [args["input_file"]]
            and record["bert_config"] == bert_config
            and all(record[k] == v for k, v in args.items() if k in record))


def train(runs, bert_config):
    """Trains the unfinished `runs` in order; a run that diverges is a result
    (its metrics.json says where), and a run that starts from a diverged run's
    weights is not trained."""
    for run_ in runs:
        label = f"{run_.stage}: {display(run_.optimizer)}, batch {run_.batch}, lr {run_.lr:.3g}"
        if finished(run_, bert_config):
            print(f"{label}: finished in {run_.args['output_dir']}, nothing to do.")
            continue
        start = next((r for r in runs if r.args["output_dir"] == run_.args.get("init_checkpoint")),
                     None)
        if start is not None and finished(start, bert_config) and final_accuracy(start) is None:
            print(f"{label}: not trained, as the run it starts from diverged.")
            continue
        print(f"{label}: training in {run_.args['output_dir']}", flush=True)
        command = [sys.executable, "-m", "lamb.run_pretraining"] + [
            (f"--{'' if v else 'no'}{k}" if isinstance(v, bool) else f"--{k}={v}")
            for k, v in run_.args.items()
        ]
        if subprocess.run(command).returncode:
            if finished(run_, bert_config):  # Diverged: a result, the grid goes on.
                print(f"{label}: diverged at step {held_out(run_)['diverged_at_step']}.")
                continue
            sys.exit(f"lamb.run_pretraining --output_dir={run_.args['output_dir']} failed (its "
                     "messages are above); the same command resumes.")


def held_out(run_):
    """The run's metrics.json: its last evaluation as `eval_<metric>`."""
    with open(os.path.join(run_.args["output_dir"], "metrics.json")) as f:
        return json.load(f)


def final_accuracy(run_):
    """The held-out masked-LM accuracy of the run's end; None if it diverged."""
    metrics = held_out(run_)
    return None if "diverged_at_step" in metrics else metrics["eval_masked_lm_accuracy"]


def train_minutes(run_):
    """Time in the training loop, from the logged examples/s (compilation
    included; start-up and the steps a kill lost not)."""
    scalars = bert_demo_curves.read_scalars(run_.args["output_dir"], ("examples_per_second",))
    seconds, previous = 0.0, 0
    for step, rate in scalars["examples_per_second"]:
        seconds += (step - previous) * run_.batch / rate
        previous = step
    return seconds / 60


def settings_title(bert_config, base):
    batches = batch_sizes()
    rates = ", ".join(f"{display(n)} {lr:g}" for n, lr in base.items())
    return (
        f"BERT {os.path.basename(FLAGS.bert_config_file)} ({bert_config['num_hidden_layers']} "
        f"layers, hidden {bert_config['hidden_size']}), sequence {FLAGS.max_seq_length}, "
        f"{FLAGS.max_predictions_per_seq} predictions; {FLAGS.num_records:,} records of "
        f"{os.path.basename(os.path.normpath(FLAGS.text_dir))} x {FLAGS.epochs} epochs = "
        f"{grid_examples():,} examples per run\npeak lr = base x sqrt(batch / {batches[0]}), "
        f"base (best of the sweep at batch {batches[0]}): {rates}; warmup "
        f"{FLAGS.largest_warmup_fraction:.0%} of the steps at batch {batches[-1]}, in "
        "proportion below; linear decay to 0"
    )


def label(run_):
    if run_.stage.startswith("phase"):
        return (f"LAMB two-phase, {run_.stage}: sequence {run_.args['max_seq_length']}, "
                f"lr {run_.lr:.3g}")
    return f"{display(run_.optimizer)}, batch {run_.batch}" + (
        f", lr {run_.lr:.3g}" if run_.stage == "retune" else "")


def plot_curves(runs, title):
    """Held-out masked-LM loss and accuracy against examples seen."""
    curves = {}
    for run_ in runs:
        scalars = bert_demo_curves.read_scalars(run_.args["output_dir"], folder="eval")
        offset = 0
        if run_.stage == "phase 2":
            offset = grid_examples() - run_.args["num_train_steps"] * run_.batch
        curves[label(run_)] = {
            tag: [(offset + step * run_.batch, value) for step, value in points]
            for tag, points in scalars.items()
        }
    path = FLAGS.output + "_curves.png"
    bert_demo_curves.plot_curves(curves, path, title, xlabel="examples seen",
                                 ylabel_prefix="held-out ")
    return path


def plot_batch(grid, retune, two_phase, title):
    """Final held-out masked-LM accuracy against batch size, one line per optimizer."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.6), layout="constrained")
    axes = figure.subplots()
    names = list(FLAGS.optimizers) + ["lamb two-phase"]
    diverged = []
    for optimizer in FLAGS.optimizers:
        style = reports.line_style(names, optimizer)
        points = sorted((r.batch, final_accuracy(r)) for r in grid if r.optimizer == optimizer)
        diverged += [(batch, style["color"]) for batch, accuracy in points if accuracy is None]
        points = [point for point in points if point[1] is not None]
        if points:
            axes.plot(*zip(*points), label=f"{display(optimizer)}, sqrt-scaled lr", **style)
        tuned = [(r.batch, final_accuracy(r)) for r in retune if r.optimizer == optimizer]
        diverged += [(batch, style["color"]) for batch, accuracy in tuned if accuracy is None]
        tuned = [point for point in tuned if point[1] is not None]
        if tuned:
            axes.plot(*zip(*tuned), linestyle="none", marker="^", color=style["color"],
                      markersize=7, label=f"{display(optimizer)}, other lr at the largest batch")
    phase2 = [r for r in two_phase if r.stage == "phase 2"]
    for index, run_ in enumerate(phase2):
        accuracy = final_accuracy(run_)
        if accuracy is None:
            diverged.append((run_.batch, "C2"))
        else:
            axes.plot([run_.batch], [accuracy], linestyle="none", marker="*", markersize=11,
                      color="C2", label=None if index else "LAMB two-phase (phase 2 at this batch)")
    for index, (batch, color) in enumerate(diverged):
        axes.plot([batch], [0], linestyle="none", marker="x", markersize=9, color=color,
                  label=None if index else "diverged (drawn at 0)")
    axes.set_xscale("log", base=2)
    axes.set_xticks(batch_sizes(), [str(b) for b in batch_sizes()])
    axes.set(xlabel="global batch size", ylabel="final held-out masked-LM accuracy")
    axes.grid(True, alpha=0.3)
    reports.finish_figure(figure, [axes], title)
    path = FLAGS.output + "_batch.png"
    reports.save_figure(figure, path, title)
    return path


def table(runs):
    rows = ["| stage | optimizer | batch (micro-batches) | steps | warmup | peak lr | "
            "held-out MLM accuracy | held-out MLM loss | train MLM loss | train time (min) |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run_ in runs:
        metrics, args = held_out(run_), run_.args
        accumulation = args["gradient_accumulation_steps"]
        if "diverged_at_step" in metrics:
            evaluation = f"diverged at step {metrics['diverged_at_step']} | |"
        else:
            evaluation = (f"{metrics['eval_masked_lm_accuracy']:.4f} | "
                          f"{metrics['eval_masked_lm_loss']:.3f} |")
        train_loss = metrics["masked_lm_loss"]
        rows.append(
            f"| {run_.stage} | {display(run_.optimizer)} | {run_.batch} ({accumulation} x "
            f"{run_.batch // accumulation}) | {args['num_train_steps']} | "
            f"{args['num_warmup_steps']} | {run_.lr:.3g} | {evaluation} "
            f"{'-' if train_loss is None else format(train_loss, '.3f')} | "
            f"{train_minutes(run_):.1f} |"
        )
    return "\n".join(rows)


def main(argv):
    del argv
    # Killed (SIGTERM or Ctrl-C), the driver takes its running process with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("Terminated; the same command resumes."))
    if not (FLAGS.text_dir and FLAGS.vocab_file):
        raise app.UsageError("Give --text_dir and --vocab_file.")
    unknown = [o for o in FLAGS.optimizers if o not in registry.OPTIMIZERS]
    if unknown:
        raise app.UsageError(f"--optimizers: {unknown} not in {', '.join(registry.OPTIMIZERS)}.")
    bert_config_file = os.path.abspath(
        configs.check_exists(FLAGS.bert_config_file, "bert_config_file")
    )
    with open(bert_config_file) as f:
        bert_config = json.load(f)
    files = make_records(bert_config_file)
    base = parse_rates(FLAGS.base_learning_rates, "base_learning_rates")
    sweep, swept = ([], True) if base else run_sweep(files, bert_config)
    runs = sweep
    if swept:
        base = {o: rates[0] for o, rates in base.items()} or best_rates(sweep)
        missing = [o for o in FLAGS.optimizers if o not in base]
        if missing:
            raise app.UsageError(f"No learning rate for {missing}: add them to "
                                 "--sweep_learning_rates or --base_learning_rates.")
        grid, retune = plan_grid(files, base), plan_retune(files, base)
        two_phase = plan_two_phase(files, base) if (
            FLAGS.two_phase and "lamb" in FLAGS.optimizers) else []
        if not FLAGS.report_only:
            train(grid + retune + two_phase, bert_config)
        runs = sweep + grid + retune + two_phase
    report(runs, bert_config, base)


def report(runs, bert_config, base):
    """The figures and the table of the finished `runs` (all, unless --report_only)."""
    done = [r for r in runs if finished(r, bert_config)]
    if len(done) < len(runs):
        print(f"{len(runs) - len(done)} of {len(runs)} planned runs are not finished; "
              "reporting the others.")
    grid = [r for r in done if r.stage == "grid"]
    if grid:
        title = settings_title(bert_config, base)
        print(f"\n{title}\n")
        two_phase = [r for r in done if r.stage.startswith("phase")]
        print(f"wrote {plot_curves(grid + two_phase, title)}")
        retune = [r for r in done if r.stage == "retune"]
        print(f"wrote {plot_batch(grid, retune, two_phase, title)}\n")
    print(table(done))
    print(f"\nHeld-out: the last evaluation, {FLAGS.max_eval_steps} x {FLAGS.eval_batch_size} "
          "records of the held-out plays. Train MLM loss: the last log's. Train time: the "
          "training loop's, from the logged examples/s.")

if __name__ == "__main__":
    app.run(main)
