"""Training throughput of several compiled models, timed in alternating rounds.

Shared by `mnist_throughput.py` and `bert_throughput.py`.
"""

import statistics
import time


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
