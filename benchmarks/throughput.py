"""What the benchmarks share: the optimizers as they compare them, training
throughput of several compiled models timed in alternating rounds, and a
synthetic BERT batch.
"""

import statistics
import time

import numpy as np

from lamb.optimizers import registry

BERT_EXCLUDE = ("LayerNorm", "layer_norm", "bias")


def make_optimizer(name, exclude_from_weight_decay=BERT_EXCLUDE, **options):
    """Optimizer `name` of `lamb.optimizers.registry` as the benchmarks compare
    them: learning rate 1e-3 and weight decay 0.01 (LARS: 1.0 and 1e-4; none
    for adam and keras_lamb), the listed variables excluded from decay, and
    further constructor keywords `options`."""
    if name == "lars":
        learning_rate, weight_decay = 1.0, 1e-4
    else:
        learning_rate, weight_decay = 1e-3, 0.0 if name in ("adam", "keras_lamb") else 0.01
    return registry.create(
        name, learning_rate, weight_decay, list(exclude_from_weight_decay), **options
    )


def examples_per_second(models, x, y, batch_size, steps, rounds):
    """`{name: [examples per second of each round]}` for `{name: compiled model}`.

    Each model first trains one step untimed (trace and compile); then each
    round times `steps` steps of every model in turn on the batch `(x, y)`,
    so that load on the machine affects all models alike.
    """
    for model in models.values():
        model.train_on_batch(x, y)
    rates = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            rates[name].append(steps * batch_size / (time.perf_counter() - start))
    return rates


def print_rates(rates, reference):
    """Prints median, min and max examples/s per model and its median's ratio to `reference`'s."""
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"{'optimizer':<18} {'examples/s':>11} {'min':>8} {'max':>8} {'ratio to ' + reference:>22}")
    for name, values in rates.items():
        print(
            f"{name:<18} {medians[name]:>11.1f} {min(values):>8.1f} {max(values):>8.1f} "
            f"{medians[name] / medians[reference]:>22.3f}"
        )


def synthetic_batch(config, batch_size, seq_length, predictions, seed=0):
    """A batch in BERT's pre-training format with random tokens."""
    rng = np.random.default_rng(seed)
    inputs = {
        "input_ids": rng.integers(0, config["vocab_size"], (batch_size, seq_length), dtype="int32"),
        "input_mask": np.ones((batch_size, seq_length), dtype="int32"),
        "segment_ids": np.repeat(
            [[0] * (seq_length // 2) + [1] * (seq_length - seq_length // 2)], batch_size, axis=0
        ).astype("int32"),
        "masked_lm_positions": np.sort(
            rng.permuted(np.tile(np.arange(1, seq_length), (batch_size, 1)), axis=1)[:, :predictions],
            axis=1,
        ).astype("int32"),
    }
    labels = {
        "masked_lm_ids": rng.integers(0, config["vocab_size"], (batch_size, predictions), dtype="int32"),
        "masked_lm_weights": np.ones((batch_size, predictions), dtype="float32"),
        "next_sentence_labels": rng.integers(0, 2, (batch_size,), dtype="int32"),
    }
    return inputs, labels
