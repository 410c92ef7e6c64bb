"""One run: its data, its training from scratch, its per-epoch log and result row."""

import csv
import dataclasses
import json
import math
import os
import shutil
import time

import keras
import tensorflow as tf

from lamb import diagnostics
from lamb.data import mnist as mnist_data
from lamb.mnist.plan import build_optimizer, run_folder
from lamb.mnist.protocols import display
from lamb.mnist.results import (
    EPOCH_FIELDS,
    EPOCH_LOG,
    TRUST_RATIO_LOG,
    TRUST_RATIO_PNG,
    read_epoch_log,
)
from lamb.models import mnist as mnist_models

EVALUATION_BATCH_SIZE = 1000


def train_and_evaluate(spec, data, config, verbose=0, log=print):
    """Trains one run from scratch in a fresh run folder and returns its result row.

    Whatever an earlier, interrupted attempt left in the folder (and in its
    TensorBoard folder) is deleted first. A run whose loss diverges (see
    `DivergenceGuard`) is stopped there; its row has `diverged_at_step` and
    no test accuracy or loss, and `log` gets one line saying so.
    """
    run_dir = run_folder(config, spec)
    tensorboard_dir = (
        os.path.join(config.tensorboard_dir, spec.run_name) if config.tensorboard_dir else None
    )
    for folder in (run_dir, tensorboard_dir):
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "spec.json"), "w") as file:
        json.dump(dataclasses.asdict(spec), file, indent=1, sort_keys=True)

    distribution = keras.distribution.distribution()
    keras.backend.clear_session()  # Fresh layer names (dense, dense_1, ...) per run.
    keras.distribution.set_distribution(distribution)  # Which clear_session forgets.
    keras.utils.set_random_seed(spec.seed)
    model = mnist_models.build_model(spec.model, spec.model_variant)
    model.compile(
        optimizer=build_optimizer(spec),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    (train_images, train_labels), (test_images, test_labels) = data
    guard = DivergenceGuard()
    callbacks = [guard, EpochLog(os.path.join(run_dir, EPOCH_LOG))]
    if tensorboard_dir:  # Loss and accuracy per epoch, in train/ and validation/.
        callbacks.append(
            keras.callbacks.TensorBoard(tensorboard_dir, write_graph=False, profile_batch=0)
        )
    if config.trust_ratio_every:
        callbacks.append(
            diagnostics.TrustRatioLogger(
                config.trust_ratio_every,
                csv_path=os.path.join(run_dir, TRUST_RATIO_LOG),
                tensorboard_dir=tensorboard_dir,
            )
        )
    train_dataset = mnist_data.train_dataset(
        train_images[: spec.train_examples],
        train_labels[: spec.train_examples],
        spec.batch_size,
        spec.seed,
    )
    test_batch_size = evaluation_batch_size(spec.test_examples, config.batch_devices)
    test_dataset = mnist_data.eval_dataset(
        test_images[: spec.test_examples], test_labels[: spec.test_examples], test_batch_size
    )
    if config.batch_devices > 1:
        # Every batch is whole; said to tf.data (their size and number), for
        # Keras to split each between processes.
        train_dataset = train_dataset.rebatch(spec.batch_size, drop_remainder=True)
        test_dataset = test_dataset.rebatch(test_batch_size, drop_remainder=True).apply(
            tf.data.experimental.assert_cardinality(spec.test_examples // test_batch_size)
        )
    # Built from the data's shapes: else `fit` on JAX reads a first batch to
    # build and then starts the data over, and a second pass of the shuffled
    # stream has another order than TensorFlow's one pass.
    model._symbolic_build(data_batch=train_dataset.element_spec)
    model.fit(
        train_dataset,
        epochs=spec.epochs,
        steps_per_epoch=spec.steps_per_epoch,
        validation_data=test_dataset,
        callbacks=callbacks,
        shuffle=False,  # The dataset reshuffles itself.
        verbose=verbose,
    )
    if config.trust_ratio_every:
        diagnostics.plot_trust_ratios(
            os.path.join(run_dir, TRUST_RATIO_LOG),
            os.path.join(run_dir, TRUST_RATIO_PNG),
            title=f"{display(spec.optimizer)}, {display(spec.model)}, batch {spec.batch_size}",
        )
    epochs = read_epoch_log(os.path.join(run_dir, EPOCH_LOG))
    train_seconds = sum(epochs["train_seconds"])
    diverged = guard.diverged_at_step is not None
    if diverged:
        log(
            f"  diverged at step {guard.diverged_at_step} of {spec.epochs * spec.steps_per_epoch} "
            f"(loss {guard.loss:.3g}; last normal loss {_text(guard.last_normal_loss)}): "
            f"stopped and marked diverged; the sweep goes on. A lower --learning_rate (here "
            f"{spec.learning_rate:.3g}) may help."
        )
    return {
        "optimizer": spec.optimizer,
        "model": spec.model,
        "batch_size": spec.batch_size,
        "epochs": spec.epochs,
        "learning_rate": spec.learning_rate,
        "test_accuracy": None if diverged else epochs["test_accuracy"][-1],
        "test_loss": None if diverged else epochs["test_loss"][-1],
        "train_seconds": round(train_seconds, 3),
        "examples_per_second": round(guard.steps * spec.batch_size / train_seconds, 1),
        "protocol": spec.protocol,
        "weight_decay": spec.weight_decay,
        "warmup_steps": spec.warmup_steps,
        "steps_per_epoch": spec.steps_per_epoch,
        "train_examples": spec.train_examples,
        "test_examples": spec.test_examples,
        "seed": spec.seed,
        "diverged_at_step": guard.diverged_at_step,
        "run_id": spec.run_id,
        "run_dir": os.path.relpath(run_dir, config.output_dir),
    }


class DivergenceGuard(keras.callbacks.Callback):
    """Stops a run whose loss diverged: non-finite, or above `EXPLOSION` times
    its first step's loss (at least 1), for `patience` steps in a row, or at
    the run's last step.

    `diverged_at_step` is then the first of those steps (1-based), else
    `None`; `steps` counts the steps trained; `loss` and `last_normal_loss`
    are the loss (Keras' running mean over the epoch) at that step and at the
    step before.
    """

    EXPLOSION = 1000.0

    def __init__(self, patience=3):
        super().__init__()
        self.patience = patience

    def on_train_begin(self, logs=None):
        self.steps = 0
        self.limit = None
        self.bad_steps = 0
        self.diverged_at_step = None
        self.loss = None
        self.last_normal_loss = None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        loss = float(logs["loss"])
        if self.limit is None and math.isfinite(loss):
            self.limit = self.EXPLOSION * max(loss, 1.0)
        if math.isfinite(loss) and loss <= self.limit:
            self.bad_steps = 0
            self.last_normal_loss = loss
            return
        self.bad_steps += 1
        if self.bad_steps == 1:
            self.loss = loss
        if self.bad_steps >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.bad_steps:
            self.diverged_at_step = self.steps - self.bad_steps + 1


class EpochLog(keras.callbacks.Callback):
    """Appends one `EPOCH_FIELDS` row per epoch to a CSV file.

    `train_seconds` is the epoch's training time, without its evaluation.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._epoch_start = None
        self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        if self._epoch_start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._epoch_start

    def on_epoch_end(self, epoch, logs=None):
        if self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._epoch_start
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            "train_loss": logs.get("loss"),
            "train_accuracy": logs.get("accuracy"),
            "test_loss": logs.get("val_loss"),
            "test_accuracy": logs.get("val_accuracy"),
            "train_seconds": round(self._train_seconds, 4),
        }
        is_new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as file:
            writer = csv.DictWriter(file, EPOCH_FIELDS)
            if is_new:
                writer.writeheader()
            writer.writerow({k: _plain(v) for k, v in row.items()})


def evaluation_batch_size(test_examples, batch_devices):
    """`EVALUATION_BATCH_SIZE` on one device. Split over `batch_devices`, the
    largest divisor of `test_examples` up to it (or up to `batch_devices`, if
    more) that they divide: every batch is whole, for several processes each
    to take their part of every batch."""
    if batch_devices == 1:
        return EVALUATION_BATCH_SIZE
    largest = max(batch_devices, min(test_examples, EVALUATION_BATCH_SIZE))
    return max(
        size
        for size in range(batch_devices, largest + 1, batch_devices)
        if test_examples % size == 0
    )


def load_data(config, log=print):
    """The sweep's `((train images, labels), (test images, labels))`: the first
    `train_examples` and `test_examples` of each split; `log` gets a line
    saying which data they come from."""
    kwargs = {"data_dir": config.data_dir, "manual_dir": config.mnist_manual_dir}
    mnist_data.prepare_mnist(**kwargs, log=log)
    return (
        mnist_data.load_mnist("train", config.train_examples, **kwargs),
        mnist_data.load_mnist("test", config.test_examples, **kwargs),
    )


def _text(number):
    return "none" if number is None else f"{number:.3g}"


def _plain(value):
    """Floats as plain Python numbers for CSV (not NumPy scalars)."""
    return float(value) if value is not None and not isinstance(value, int) else value
