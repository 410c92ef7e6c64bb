"""Large-batch BERT pre-training on a CPU: AdamW and LAMB at a small and two large batches.

    python benchmarks/bert_large_batch.py --text_dir=../shared/data/text/shakespeare \\
        --vocab_file=../shared/data/bert/vocab_uncased.txt

Makes pre-training records of the text (`lamb.create_pretraining_data`,
sequence 32, 5 predictions, dupe factor 1; or takes --input_file), writes
their first --num_records to `<work_dir>/train-<seq>-<N>.tfrecord`; the last
--num_eval_texts files of --text_dir (different plays) are held out and made
into evaluation records, after a check that no document of theirs is also in
the training files. Then it trains
tiny BERT on them for --epochs with each optimizer of --base_learning_rates at
each of --batch_sizes: one `lamb.run_pretraining` process per run, in
`<work_dir>/<optimizer>-b<batch>-lr<peak lr>`. Every run sees the same
examples: steps = epochs x records / batch. The peak learning rate follows
the square-root rule from the smallest batch B0, lr(B) = base x sqrt(B / B0);
warmup over --warmup_fraction of the steps, then linear decay to 0. Batches
above --micro_batch_size accumulate gradients over micro-batches. A run logs
once per largest batch's worth of examples (so every point of every curve
averages as many examples) and saves a checkpoint about every
--save_every_examples. Killed, the same command resumes (run_pretraining
continues from its checkpoints; finished runs are skipped). Then the masked-LM
loss and accuracy against the examples seen go to --output, and a Markdown
table to standard output.

Defaults: 65,536 records x 3 epochs = 196,608 examples per run (3,072 steps
at batch 64, 384 at 512, 96 at 2,048), about 70 minutes for the six runs on the
2-core VM when it is quiet (the two at batch 512 trained in 8.4 and 8.7 min).
Measured speeds (lamb, tiny BERT, sequence 32, the train step timed in
rounds alternating between the settings, while other jobs held 1.5 of the 2
cores, scaled by 3.1 = 68.4 / 22.2, the quiet README rate / this one of
sequence 128, batch 64, XLA, measured in the same rounds), examples/s:
micro-batch 64: 290 XLA, 275 without; 256: 360 and 370; 512: 310 and 320;
2,048 as 8 x 256: 300 and 310 (rounds spread by about 20%). So: micro-batches
of 256, and XLA (a little faster at 64, even at 256, about 20 s more start-up
per process). Training: 196,608 x 2 x (1/285 + 1/300) s = 45 min; start-ups
(imports, checks, compilation) about 1 min per run. A checkpoint (53 MB, the
last 2 kept) every 16,384 examples, about a minute of training.
Base learning rates at batch 64, each the best of a short check at that
batch (16,384 records x 2 epochs = 512 steps, warmup 10%, masked-LM loss
of the last 5 logs): AdamW 1e-3 (6.318; 3e-3: 6.323), LAMB 2e-2 (5.614;
5e-3: 6.090, 5e-2: 6.482). LAMB's per-layer step, lr x |w| / |update|, is
small for tiny BERT's small weights, so it takes a larger rate.
"""

import json
import math
import os
import signal
import statistics
import subprocess
import sys

from absl import app
from absl import flags
import tensorflow as tf

import bert_demo_curves  # benchmarks/bert_demo_curves.py
from lamb import configs
from lamb._files import atomic_path
from lamb.mnist.protocols import display
from lamb.optimizers import registry

FLAGS = flags.FLAGS

flags.DEFINE_string("work_dir", "results/bert_large_batch", "Records and runs (one per data set).")
flags.DEFINE_string(
    "text_dir", None,
    "A folder of .txt files (a sentence a line, a blank line between documents) to make "
    "the records from, with --vocab_file.",
)
flags.DEFINE_string("vocab_file", None, "The WordPiece vocabulary for --text_dir.")
flags.DEFINE_string(
    "input_file", None, "Existing pre-training records (glob or comma-separated), not --text_dir."
)
flags.DEFINE_integer(
    "num_eval_texts", 2,
    "Hold out the last this many .txt files of --text_dir (by name) for held-out "
    "evaluation records; 0: no evaluation.",
)
flags.DEFINE_string(
    "eval_input_file", None, "With --input_file: held-out records to evaluate on (optional)."
)
flags.DEFINE_integer("eval_batch_size", 256, "Examples per evaluation batch.")
flags.DEFINE_integer("max_eval_steps", 8, "Batches per evaluation (the first records).")
flags.DEFINE_string("bert_config_file", "bert_config_tiny.json", "The model.")
flags.DEFINE_integer("max_seq_length", 32, "Sequence length of the records.")
flags.DEFINE_integer("max_predictions_per_seq", 5, "Masked-LM predictions per record.")
flags.DEFINE_integer("num_records", 65536, "Train on the first this many records.")
flags.DEFINE_integer("epochs", 3, "Passes over the records in every run.")
flags.DEFINE_list(
    "batch_sizes", ["64", "512", "2048"],
    "Global batch sizes; the smallest is the learning rates' base.",
)
flags.DEFINE_integer(
    "micro_batch_size", 256,
    "Larger batches accumulate gradients over micro-batches of this size.",
)
flags.DEFINE_list(
    "base_learning_rates", ["adamw=1e-3", "lamb=2e-2"],
    "optimizer=peak learning rate at the smallest batch, for each optimizer to run.",
)
flags.DEFINE_float("warmup_fraction", 0.1, "Linear warmup over this fraction of the steps.")
flags.DEFINE_integer("save_every_examples", 16384, "A checkpoint about every this many examples.")
flags.DEFINE_bool("jit_compile", True, "XLA-compile the training steps.")
flags.DEFINE_integer("final_points", 5, "Table: the mean of each run's last this many logs.")
flags.DEFINE_string("output", "docs/bert_large_batch.png", "The PNG to write.")


def plan_runs(input_file, eval_input_file, bert_config_file):
    """The runs: `(label, run_pretraining flags)` for each optimizer and batch."""
    batches = sorted(int(b) for b in FLAGS.batch_sizes)
    examples = FLAGS.epochs * FLAGS.num_records
    runs = []
    for optimizer, base in base_learning_rates().items():
        for batch in batches:
            if examples % batch:
                raise app.UsageError(
                    f"--epochs x --num_records = {examples} is no multiple of batch {batch}."
                )
            if batch > FLAGS.micro_batch_size and batch % FLAGS.micro_batch_size:
                raise app.UsageError(
                    f"Batch {batch} is no multiple of --micro_batch_size={FLAGS.micro_batch_size}."
                )
            steps = examples // batch
            lr = base * math.sqrt(batch / batches[0])
            log_steps = max(1, round(batches[-1] / batch))
            save_steps = log_steps * max(1, round(FLAGS.save_every_examples / (batch * log_steps)))
            runs.append((f"{display(optimizer)}, batch {batch}", {
                "bert_config_file": bert_config_file,
                "input_file": input_file,
                "output_dir": os.path.join(FLAGS.work_dir, f"{optimizer}-b{batch}-lr{lr:.3g}"),
                "max_seq_length": FLAGS.max_seq_length,
                "max_predictions_per_seq": FLAGS.max_predictions_per_seq,
                "optimizer": optimizer,
                "train_batch_size": batch,
                "gradient_accumulation_steps": max(1, batch // FLAGS.micro_batch_size),
                "learning_rate": lr,
                "num_train_steps": steps,
                "num_warmup_steps": round(FLAGS.warmup_fraction * steps),
                "iterations_per_loop": log_steps,
                "save_checkpoints_steps": save_steps,
                "keep_checkpoint_max": 2,
                "jit_compile": FLAGS.jit_compile,
            }))
            if eval_input_file:
                runs[-1][1].update(do_eval=True, eval_input_file=eval_input_file,
                                   eval_batch_size=FLAGS.eval_batch_size,
                                   max_eval_steps=FLAGS.max_eval_steps,
                                   eval_every_steps=save_steps)
    return runs


def base_learning_rates():
    """`{optimizer: base learning rate}` from --base_learning_rates."""
    rates = {}
    for spec in FLAGS.base_learning_rates:
        name, _, value = spec.partition("=")
        if name not in registry.OPTIMIZERS:
            raise app.UsageError(f"--base_learning_rates: {name!r} is none of "
                                 f"{', '.join(registry.OPTIMIZERS)}.")
        try:
            rates[name] = float(value)
        except ValueError:
            raise app.UsageError(f"--base_learning_rates: {spec!r} is no optimizer=rate.") from None
    return rates


def split_texts():
    """The .txt files of --text_dir for training and the last --num_eval_texts
    (by name) for evaluation; raises UsageError if a document (a block between
    blank lines) of an evaluation file is also in a training file."""
    texts = sorted(tf.io.gfile.glob(os.path.join(FLAGS.text_dir, "*.txt")))
    if len(texts) <= FLAGS.num_eval_texts:
        raise app.UsageError(f"--text_dir holds {len(texts)} .txt files; --num_eval_texts="
                             f"{FLAGS.num_eval_texts} leaves none to train on.")
    split = len(texts) - FLAGS.num_eval_texts
    train_documents = {d for path in texts[:split] for d in documents(path)}
    for path in texts[split:]:
        for document in documents(path):
            if document in train_documents:
                raise app.UsageError(
                    f"{path}: the document starting {document[:60]!r} is also in a training "
                    "file; held-out records must come from other documents."
                )
    return texts[:split], texts[split:]


def documents(path):
    """The documents of a text file (blocks between blank lines), whitespace normalized."""
    with open(path, encoding="utf-8") as f:
        blocks = f.read().split("\n\n")
    return [" ".join(block.split()) for block in blocks if block.strip()]


def create_records(texts, name):
    """`<work_dir>/<name>` made from `texts` by lamb.create_pretraining_data (once)."""
    path = os.path.abspath(os.path.join(FLAGS.work_dir, name))
    if not os.path.exists(path):
        with atomic_path(path) as temporary:
            run([sys.executable, "-m", "lamb.create_pretraining_data",
                 f"--input_file={','.join(texts)}",
                 f"--vocab_file={FLAGS.vocab_file}", f"--output_file={temporary}",
                 f"--max_seq_length={FLAGS.max_seq_length}",
                 f"--max_predictions_per_seq={FLAGS.max_predictions_per_seq}",
                 "--dupe_factor=1"], "lamb.create_pretraining_data")
    return path


def make_records():
    """The paths of the first --num_records training records (written once)
    and of the held-out records (None without)."""
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    source, eval_records = FLAGS.input_file, FLAGS.eval_input_file
    if FLAGS.text_dir:
        train_texts, eval_texts = split_texts() if FLAGS.num_eval_texts else (
            sorted(tf.io.gfile.glob(os.path.join(FLAGS.text_dir, "*.txt"))), [])
        source = create_records(train_texts, f"train-{FLAGS.max_seq_length}.tfrecord")
        if eval_texts:
            eval_records = create_records(eval_texts, f"eval-{FLAGS.max_seq_length}.tfrecord")
    # Named after its source: records of all the texts are never taken for the training ones.
    stem = "records" if FLAGS.input_file else os.path.splitext(os.path.basename(source))[0]
    subset = os.path.abspath(os.path.join(FLAGS.work_dir, f"{stem}-{FLAGS.num_records}.tfrecord"))
    if os.path.exists(subset):
        return subset, eval_records
    files = sorted(f for glob in source.split(",") for f in tf.io.gfile.glob(glob))
    count = 0
    with atomic_path(subset) as temporary, tf.io.TFRecordWriter(temporary) as writer:
        for record in tf.data.TFRecordDataset(files).take(FLAGS.num_records):
            writer.write(record.numpy())
            count += 1
        if count < FLAGS.num_records:
            raise app.UsageError(f"--num_records={FLAGS.num_records}, but {source} holds {count}.")
    return subset, eval_records


def run(command, name):
    if subprocess.run(command).returncode:
        sys.exit(f"{name} failed (its messages are above); the same command resumes.")


def finished(args, bert_config):
    """Whether the run has trained to its last step with these flags, data and model."""
    try:
        with open(os.path.join(args["output_dir"], "metrics.json")) as f:
            step = json.load(f)["global_step"]
        with open(os.path.join(args["output_dir"], "flags.json")) as f:
            record = json.load(f)
    except FileNotFoundError:
        return False
    return (step == args["num_train_steps"] and record["input_files"] == [args["input_file"]]
            and record["bert_config"] == bert_config
            and all(record[k] == v for k, v in args.items() if k in record))


def train(args):
    command = [sys.executable, "-m", "lamb.run_pretraining"] + [
        (f"--{'' if v else 'no'}{k}" if isinstance(v, bool) else f"--{k}={v}")
        for k, v in args.items()
    ]
    run(command, f"lamb.run_pretraining --output_dir={args['output_dir']}")


def held_out_accuracy(output_dir):
    """The last evaluation's masked-LM accuracy in the run's metrics.json, or None."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return json.load(f).get("eval_masked_lm_accuracy")


def train_minutes(scalars, batch):
    """Time in the training loop, from the logged examples/s (compilation
    included; start-up and the steps a kill lost not)."""
    seconds, previous = 0.0, 0
    for step, rate in scalars["examples_per_second"]:
        seconds += (step - previous) * batch / rate
        previous = step
    return seconds / 60


def figure_title(bert_config_file, config, runs):
    source = os.path.basename(os.path.normpath(FLAGS.text_dir or FLAGS.input_file))
    small = min(args["train_batch_size"] for _, args in runs)
    rates = ", ".join(f"{display(n)} {lr:g}" for n, lr in base_learning_rates().items())
    return (
        f"BERT {os.path.basename(bert_config_file)} ({config['num_hidden_layers']} layers, hidden "
        f"{config['hidden_size']}), sequence {FLAGS.max_seq_length}, "
        f"{FLAGS.max_predictions_per_seq} predictions\nthe first {FLAGS.num_records:,} records "
        f"of {source} x {FLAGS.epochs} epoch{'s' if FLAGS.epochs > 1 else ''}: "
        f"{FLAGS.num_records * FLAGS.epochs:,} examples per run\n"
        f"peak lr = base x sqrt(batch / {small}), base: {rates}; warmup "
        f"{FLAGS.warmup_fraction:.0%} of the steps, then linear decay to 0"
    )


def main(argv):
    del argv
    # Killed (SIGTERM or Ctrl-C), the driver takes its running process with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("Terminated; the same command resumes."))
    if bool(FLAGS.text_dir) == bool(FLAGS.input_file):
        raise app.UsageError("Give --text_dir (with --vocab_file) or --input_file.")
    if FLAGS.text_dir and not FLAGS.vocab_file:
        raise app.UsageError("--text_dir needs --vocab_file.")
    bert_config_file = os.path.abspath(
        configs.check_exists(FLAGS.bert_config_file, "bert_config_file")
    )
    with open(bert_config_file) as f:
        bert_config = json.load(f)
    runs = plan_runs(*make_records(), bert_config_file)
    for label, args in runs:
        if finished(args, bert_config):
            print(f"{label}: finished in {args['output_dir']}, nothing to do.")
        else:
            print(f"{label}: training in {args['output_dir']}", flush=True)
            train(args)
    curves, rows = {}, []
    tags = bert_demo_curves.TAGS + ("examples_per_second",)
    k = FLAGS.final_points
    for label, args in runs:
        batch = args["train_batch_size"]
        scalars = bert_demo_curves.read_scalars(args["output_dir"], tags)
        curves[label] = {t: [(s * batch, v) for s, v in scalars[t]] for t in bert_demo_curves.TAGS}
        loss, accuracy = (
            statistics.fmean(v for _, v in scalars[t][-k:]) for t in bert_demo_curves.TAGS
        )
        held_out = held_out_accuracy(args["output_dir"])
        rows.append(
            f"| {label} | {batch} ({args['gradient_accumulation_steps']} x "
            f"{batch // args['gradient_accumulation_steps']}) | {args['num_train_steps']} | "
            f"{args['learning_rate']:.3g} | {loss:.3f} | {accuracy:.4f} | "
            f"{'-' if held_out is None else f'{held_out:.4f}'} | "
            f"{train_minutes(scalars, batch):.1f} |"
        )
    title = figure_title(bert_config_file, bert_config, runs)
    bert_demo_curves.plot_curves(curves, FLAGS.output, title, xlabel="examples seen")
    largest = max(args["train_batch_size"] for _, args in runs)
    print(f"wrote {FLAGS.output}\n\n{title}\n")
    print("| run | global batch (micro-batches) | steps | peak lr | masked-LM loss | "
          "masked-LM accuracy | held-out masked-LM accuracy | train time (min) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\nLoss and accuracy: the mean of the last {k} logs, each the mean over "
          f"{largest:,} examples. Train time: the training loop's, from the logged examples/s.")


if __name__ == "__main__":
    app.run(main)
