"""LAMB16's 8-bit moments on tiny BERT: a scale per row or one per tensor, beside LAMB.

    python benchmarks/lamb16_bert.py --text_dir=../shared/data/text/shakespeare \\
        --vocab_file=../shared/data/bert/vocab_uncased.txt

Trains tiny BERT three times on the same records, at the same learning rate,
with the same seed: LAMB, LAMB16 with a scale per row of each 8-bit moment
(the default) and LAMB16 with one scale per variable; the word embedding
(30,522 x 128) is the largest of LAMB16's 8-bit moments. The records, the
runs and their resumption are `bert_large_batch.py`'s (its flags apply:
--num_records, --epochs, one of --batch_sizes, --micro_batch_size,
--warmup_fraction, ...; --base_learning_rates gives LAMB's peak rate, used by
all three runs). Defaults: 40,960 records x 2 epochs at batch 256 = 320
steps, peak 4e-2 (the 2e-2 that did best at batch 64, x sqrt(256 / 64)),
about 20 minutes on the 2-core VM when quiet (55 with two other jobs).

Then a Markdown table: each run's final masked-LM loss (the mean of its last
--final_points logs) and its ratio to LAMB's; and, in the word embedding's
rows whose LAMB m is not all 0 (every row, as the masked-LM output layer
shares the embedding), the fraction of m entries that are 0 and of v entries at the format's floor
(the smallest subnormal, where LAMB16 keeps values that would round to 0):
for each LAMB16 run in its own final state, and for LAMB's final float32
moments encoded each way (`lamb.optimizers.float8.quantize`).
"""

import json
import os
import statistics
import sys

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import bert_demo_curves  # benchmarks/bert_demo_curves.py
import bert_large_batch  # benchmarks/bert_large_batch.py: the records, runs and their flags
from lamb import configs
from lamb.optimizers import float8

FLAGS = flags.FLAGS
FLAGS.set_default("work_dir", "results/lamb16_bert")
FLAGS.set_default("num_records", 40960)
FLAGS.set_default("epochs", 2)
FLAGS.set_default("batch_sizes", ["256"])
FLAGS.set_default("base_learning_rates", ["lamb=4e-2"])
FLAGS.set_default("output", "docs/lamb16_bert.png")

VARIANTS = (  # label, optimizer, run_pretraining flags
    ("LAMB", "lamb", {}),
    ("LAMB16, a scale per row", "lamb16", {"lamb16_row_scales": True}),
    ("LAMB16, a scale per tensor", "lamb16", {"lamb16_row_scales": False}),
)


def plan_runs(records, bert_config_file):
    """`(label, run_pretraining flags)` of the three runs."""
    if len(FLAGS.batch_sizes) != 1 or [n.partition("=")[0] for n in FLAGS.base_learning_rates] != ["lamb"]:
        raise app.UsageError("Give one --batch_sizes and --base_learning_rates=lamb=<peak rate>.")
    (_, lamb_args), = bert_large_batch.plan_runs(records, bert_config_file)
    runs = []
    for label, optimizer, extra in VARIANTS:
        args = dict(lamb_args, optimizer=optimizer, **extra)
        suffix = "" if not extra else ("-rows" if extra["lamb16_row_scales"] else "-tensor")
        args["output_dir"] = lamb_args["output_dir"].replace("lamb-", f"{optimizer}{suffix}-", 1)
        runs.append((label, args))
    return runs


def embedding_moments(output_dir, vocab_size, hidden_size):
    """The word embedding's m and v in the final checkpoint: the optimizer's
    two variables of its shape, in the order the optimizer made them."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(output_dir))
    shapes = reader.get_variable_to_shape_map()
    keys = sorted(
        (k for k in shapes if k.startswith("optimizer/") and shapes[k] == [vocab_size, hidden_size]),
        key=lambda k: int(k.split("/")[1]),
    )
    if len(keys) != 2:
        sys.exit(f"{output_dir}: expected the embedding's m and v, found {keys}.")
    return [reader.get_tensor(k) for k in keys]


def code_fractions(m_codes, v_codes, rows):
    """In `rows`: the fraction of m codes that are ±0, and of v codes at the
    smallest subnormal (code 1)."""
    return float(np.isin(m_codes[rows], (0, 128)).mean()), float((v_codes[rows] == 1).mean())


def encoded_fractions(m, v, rows, per_row):
    """`code_fractions` of float32 moments encoded as LAMB16 would store them."""
    m_codes, _ = float8.quantize(m, float8.E4M3FN, per_row=per_row)
    v_codes, _ = float8.quantize(v, float8.E5M2, keep_nonzero=True, per_row=per_row)
    return code_fractions(np.asarray(m_codes), np.asarray(v_codes), rows)


def main(argv):
    del argv
    if bool(FLAGS.text_dir) == bool(FLAGS.input_file):
        raise app.UsageError("Give --text_dir (with --vocab_file) or --input_file.")
    bert_config_file = os.path.abspath(
        configs.check_exists(FLAGS.bert_config_file, "bert_config_file")
    )
    with open(bert_config_file) as f:
        bert_config = json.load(f)
    runs = plan_runs(bert_large_batch.make_records(), bert_config_file)
    for label, args in runs:
        if bert_large_batch.finished(args, bert_config):
            print(f"{label}: finished in {args['output_dir']}, nothing to do.")
        else:
            print(f"{label}: training in {args['output_dir']}", flush=True)
            bert_large_batch.train(args)

    vocab = bert_config["vocab_size"]
    k = FLAGS.final_points
    losses, curves, moments = {}, {}, {}
    for label, args in runs:
        batch = args["train_batch_size"]
        scalars = bert_demo_curves.read_scalars(args["output_dir"], bert_demo_curves.TAGS)
        curves[label] = {t: [(s * batch, v) for s, v in scalars[t]] for t in bert_demo_curves.TAGS}
        losses[label] = statistics.fmean(v for _, v in scalars["masked_lm_loss"][-k:])
        moments[label] = embedding_moments(args["output_dir"], vocab, bert_config["hidden_size"])
    m, v = moments["LAMB"]
    if (v < 0).any() or not (m < 0).any():
        sys.exit("LAMB's embedding moments are not (m, v) in this order.")
    moving = (m != 0).any(axis=1)
    rows = [f"| LAMB | {losses['LAMB']:.3f} | 1 | - | - | "
            + " | ".join(f"{f:.2e}" for per_row in (True, False)
                         for f in encoded_fractions(m, v, moving, per_row)) + " |"]
    for label, _ in runs[1:]:
        m_codes, v_codes = moments[label]
        if m_codes.dtype != np.uint8 or (v_codes >= 128).any():
            sys.exit(f"{label}: the embedding's moments are not LAMB16's (m, v) codes.")
        own = code_fractions(m_codes, v_codes, moving)
        rows.append(f"| {label} | {losses[label]:.3f} | {losses[label] / losses['LAMB']:.4f} | "
                    f"{own[0]:.2e} | {own[1]:.2e} | - | - | - | - |")
    (_, args) = runs[0]
    title = (f"LAMB16's moment scales, tiny BERT ({bert_config['num_hidden_layers']} layers, hidden "
             f"{bert_config['hidden_size']}): batch {args['train_batch_size']}, "
             f"{args['num_train_steps']} steps, peak lr {args['learning_rate']:g}\n"
             f"the first {FLAGS.num_records:,} records x {FLAGS.epochs} epoch{'s' if FLAGS.epochs > 1 else ''}, "
             "seed 12345 in all runs")
    bert_demo_curves.plot_curves(curves, FLAGS.output, title, xlabel="examples seen")
    print(f"wrote {FLAGS.output}\n\n{title}\n")
    print(f"Word embedding ({vocab:,} x {bert_config['hidden_size']}), the {int(moving.sum()):,} "
          "rows whose LAMB m is not all 0:\n")
    print("| run | masked-LM loss | / LAMB's | m = 0 | v at floor | LAMB's m, v encoded per row: "
          "m = 0 | v at floor | per tensor: m = 0 | v at floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\nLoss: the mean of the last {k} logs. Fractions of the entries of those rows.")


if __name__ == "__main__":
    app.run(main)
