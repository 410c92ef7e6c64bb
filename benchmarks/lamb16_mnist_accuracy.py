"""LAMB16's MNIST test accuracy against LAMB's, seed by seed.

    python benchmarks/lamb16_mnist_accuracy.py --models=mlp,cnn --seeds=1,2,3 \\
        --mnist_manual_dir=../shared/data/mnist

Trains each model (`lamb.models.mnist`, Keras' default initialization) with
LAMB, LAMB16 and LAMB16 with the learning-rate-adaptive trust (or any of
`lamb16_mnist_setup.OPTIMIZERS`, such as LAMB16 with either moment rounding), at one batch
size and a constant learning rate (defaults: 1024, 0.02, weight decay 0.01
except on biases, 10 epochs, XLA-compiled steps; `--decay` for BERT's warmup
and linear decay instead), on all 60,000 training
images, and prints the test accuracy (10,000 images) after the last epoch
per seed, the mean and standard deviation over seeds, and each LAMB16 run's
difference from the LAMB run of the same seed (same initialization and data
order). Rows are appended to `--output_csv` as runs finish; runs already in it
are not repeated.
"""

import csv
import os
import statistics
import time

from absl import app, flags
import keras

from lamb.models import mnist as mnist_models
from lamb16_mnist_setup import OPTIMIZERS, load_data, make_optimizer

FLAGS = flags.FLAGS
flags.DEFINE_list("models", "mlp,cnn", "Models of `lamb.models.mnist`.")
flags.DEFINE_list("seeds", "1,2,3", "Seeds of initialization and data order.")
flags.DEFINE_list(
    "optimizers", "lamb,lamb16,lamb16_adaptive", f"Of: {', '.join(OPTIMIZERS)}."
)
flags.DEFINE_integer("batch_size", 1024, "Batch size.")
flags.DEFINE_float("learning_rate", 0.02, "Learning rate (peak rate with --decay).")
flags.DEFINE_float("weight_decay", 0.01, "Weight decay (not on biases).")
flags.DEFINE_integer("epochs", 10, "Epochs.")
flags.DEFINE_bool(
    "decay", False,
    "Warm up linearly over the first epoch, then decay linearly to 0 (BERT's "
    "schedule) instead of a constant learning rate.",
)
flags.DEFINE_bool(
    "jit_compile", True,
    "XLA-compile the train step (on CPU, TensorFlow's own convolutions are faster for the CNN).",
)
flags.DEFINE_string(
    "mnist_manual_dir", os.environ.get("MNIST_MANUAL_DIR"),
    "Directory with the MNIST IDX .gz files (default $MNIST_MANUAL_DIR; download if unset).",
)
flags.DEFINE_string("output_csv", "results/lamb16_mnist_accuracy.csv", "Per-run results.")

FIELDS = ("model", "optimizer", "seed", "batch_size", "learning_rate", "decay", "weight_decay",
          "epochs", "test_accuracy", "train_seconds")


def train_and_evaluate(model_name, optimizer_name, seed, data):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = mnist_models.build_model(model_name)
    optimizer = make_optimizer(
        optimizer_name, FLAGS.learning_rate, FLAGS.weight_decay, FLAGS.decay, FLAGS.epochs,
        len(x_train), FLAGS.batch_size,
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=FLAGS.jit_compile,
    )
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, verbose=0)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
    return accuracy, seconds


def read_results(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def settings_match(row):
    return (
        int(row["batch_size"]) == FLAGS.batch_size
        and float(row["learning_rate"]) == FLAGS.learning_rate
        and row["decay"] == str(FLAGS.decay)
        and float(row["weight_decay"]) == FLAGS.weight_decay
        and int(row["epochs"]) == FLAGS.epochs
    )


def markdown_table(rows):
    """Accuracy (%) per model and optimizer: per seed, mean ± std, Δ vs LAMB."""
    accuracy = {
        (r["model"], r["optimizer"], int(r["seed"])): 100 * float(r["test_accuracy"])
        for r in rows
    }
    seeds = [int(s) for s in FLAGS.seeds]
    lines = [
        "| model | optimizer | " + " | ".join(f"seed {s}" for s in seeds)
        + " | mean ± std | mean Δ vs LAMB (pp) |",
        "|" + "---|" * (len(seeds) + 4),
    ]
    for model in FLAGS.models:
        for name in FLAGS.optimizers:
            values = [accuracy.get((model, name, s)) for s in seeds]
            done = [v for v in values if v is not None]
            deltas = [
                v - accuracy[(model, "lamb", s)]
                for v, s in zip(values, seeds)
                if v is not None and (model, "lamb", s) in accuracy
            ]
            spread = f" ± {statistics.stdev(done):.2f}" if len(done) > 1 else ""
            lines.append(
                f"| {model} | {name} | "
                + " | ".join("–" if v is None else f"{v:.2f}" for v in values)
                + (f" | {statistics.mean(done):.2f}{spread}" if done else " | –")
                + (f" | {statistics.mean(deltas):+.2f} |" if deltas and name != "lamb" else " | |")
            )
    return "\n".join(lines)


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.optimizers) - set(OPTIMIZERS))
    if unknown:
        raise app.UsageError(
            f"`--optimizers` must be a comma-separated subset of {list(OPTIMIZERS)}; "
            f"received unknown {unknown}."
        )
    data = load_data(FLAGS.mnist_manual_dir)
    rows = [r for r in read_results(FLAGS.output_csv) if settings_match(r)]
    os.makedirs(os.path.dirname(FLAGS.output_csv) or ".", exist_ok=True)
    for model_name in FLAGS.models:
        for seed in (int(s) for s in FLAGS.seeds):
            for optimizer_name in FLAGS.optimizers:
                key = (model_name, optimizer_name, str(seed))
                if any((r["model"], r["optimizer"], r["seed"]) == key for r in rows):
                    continue
                accuracy, seconds = train_and_evaluate(model_name, optimizer_name, seed, data)
                row = dict(
                    model=model_name, optimizer=optimizer_name, seed=seed,
                    batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, decay=FLAGS.decay,
                    weight_decay=FLAGS.weight_decay, epochs=FLAGS.epochs,
                    test_accuracy=f"{accuracy:.4f}", train_seconds=f"{seconds:.0f}",
                )
                print(f"{model_name} {optimizer_name} seed {seed}: {100 * accuracy:.2f}% ({seconds:.0f} s)", flush=True)
                new_file = not os.path.exists(FLAGS.output_csv)
                with open(FLAGS.output_csv, "a", newline="") as file:
                    writer = csv.DictWriter(file, FIELDS)
                    if new_file:
                        writer.writeheader()
                    writer.writerow(row)
                rows.append({k: str(v) for k, v in row.items()})
    print(markdown_table(rows))


if __name__ == "__main__":
    app.run(main)
