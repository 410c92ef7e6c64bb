"""The files of an output folder: their names, `results.csv` (written whole and
atomically, damaged rows skipped) and the per-epoch logs."""

import csv
import os
import warnings

from lamb._files import atomic_path
from lamb.mnist.plan import RUNS_DIR, folder_name

RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
ACCURACY_VS_BATCH_SIZE_PNG = "accuracy_vs_batch_size.png"
ACCURACY_PER_EPOCH_PNG = "accuracy_per_epoch.png"
EPOCH_LOG = "epochs.csv"
TRUST_RATIO_LOG = "trust_ratios.csv"
TRUST_RATIO_PNG = "trust_ratios.png"
RESULT_FIELDS = (
    "optimizer",
    "model",
    "batch_size",
    "epochs",
    "learning_rate",
    "test_accuracy",
    "test_loss",
    "train_seconds",
    "examples_per_second",
    "protocol",
    "weight_decay",
    "warmup_steps",
    "steps_per_epoch",
    "train_examples",
    "test_examples",
    "seed",
    "diverged_at_step",
    "run_id",
    "run_dir",
)
# The fields before diverged_at_step was added: such rows are read as not diverged.
RESULT_FIELDS_WITHOUT_DIVERGED = tuple(f for f in RESULT_FIELDS if f != "diverged_at_step")
EPOCH_FIELDS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "train_seconds",
)


def read_results(path):
    """The rows of a `results.csv` (numbers converted); `[]` if it does not exist.

    A damaged line (such as one cut short when an earlier version was killed
    while appending it) is skipped with a warning naming the file and line:
    its run counts as not done, and the next `write_results` leaves it out.
    Lines repeating the header are skipped too. A diverged run's row has
    `diverged_at_step` and `None` as test accuracy and loss; rows written
    before that field existed are read as not diverged.
    """
    if not os.path.exists(path):
        return []
    with open(path, newline="", errors="replace") as file:
        lines = file.read().splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        values = next(csv.reader([line]), [])
        if tuple(values) in (RESULT_FIELDS, RESULT_FIELDS_WITHOUT_DIVERGED):  # A header.
            continue
        try:
            rows.append(_result_row(values))
        except ValueError as error:
            warnings.warn(
                f"{path}, line {number}: damaged results row ({error}); skipped (its run "
                "counts as not done) and left out when the file is next written.",
                stacklevel=2,
            )
    return rows


def write_results(path, rows):
    """Writes `rows` as a `results.csv` atomically: a kill leaves the old file or the new one."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.DictWriter(file, RESULT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_epoch_log(path):
    """An `epochs.csv` (written by `training.EpochLog`) as `{field: list}` by epoch (a
    repeated epoch keeps its last row)."""
    by_epoch = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            by_epoch[int(row["epoch"])] = {k: float(v) for k, v in row.items() if k != "epoch"}
    epochs = sorted(by_epoch)
    fields = {"epoch": epochs}
    fields.update({k: [by_epoch[e][k] for e in epochs] for k in EPOCH_FIELDS[1:]})
    return fields


_INTEGER_RESULTS = (
    "batch_size",
    "epochs",
    "warmup_steps",
    "steps_per_epoch",
    "train_examples",
    "test_examples",
    "seed",
)
_NONE_IF_DIVERGED = ("test_accuracy", "test_loss")
_FLOAT_RESULTS = (
    "learning_rate",
    "test_accuracy",
    "test_loss",
    "train_seconds",
    "examples_per_second",
    "weight_decay",
)


def _result_row(values):
    """A `results.csv` line's values as a row, or `ValueError` saying what is damaged."""
    if len(values) == len(RESULT_FIELDS_WITHOUT_DIVERGED):
        row = dict(zip(RESULT_FIELDS_WITHOUT_DIVERGED, values), diverged_at_step="")
    elif len(values) == len(RESULT_FIELDS):
        row = dict(zip(RESULT_FIELDS, values))
    else:
        raise ValueError(f"{len(values)} fields instead of {len(RESULT_FIELDS)}")
    row["diverged_at_step"] = _number(row, "diverged_at_step", int, empty=True)
    diverged = row["diverged_at_step"] is not None
    for field in _INTEGER_RESULTS:
        row[field] = _number(row, field, int)
    for field in _FLOAT_RESULTS:
        row[field] = _number(row, field, float, empty=diverged and field in _NONE_IF_DIVERGED)
    # The last field: a line cut short within it still has every field.
    run_dir = os.path.join(
        RUNS_DIR, folder_name(row["model"], row["optimizer"], row["batch_size"], row["run_id"])
    )
    if row["run_dir"] != run_dir:
        raise ValueError(f"run_dir={row['run_dir']!r} instead of {run_dir!r}")
    return row


def _number(row, field, kind, empty=False):
    """`row[field]` as a `kind`; `None` for an empty field where `empty` allows it."""
    if empty and row[field] == "":
        return None
    try:
        return kind(row[field])
    except ValueError:
        raise ValueError(f"{field}={row[field]!r} is not a number") from None
