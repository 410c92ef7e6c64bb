"""The runs of a sweep: one `RunSpec` per (model, batch size, optimizer), and
the optimizer and folder of each."""

import dataclasses
import hashlib
import json
import math
import os

import keras

from lamb import schedules
from lamb.optimizers import registry

RUNS_DIR = "runs"  # In the output folder: a folder per run.


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's result; its hash is the run id."""

    protocol: str
    optimizer: str
    model: str
    batch_size: int
    epochs: int
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    steps_per_epoch: int
    lr_decay_power: float
    exclude_from_weight_decay: tuple
    optimizer_options: dict
    model_variant: str
    train_examples: int
    test_examples: int
    seed: int
    backend: str = "tensorflow"  # Keras's; each draws other initial weights from a seed.

    @property
    def run_id(self):
        fields = dataclasses.asdict(self)
        if self.backend == "tensorflow":  # The ids from before other backends ran the sweep.
            del fields["backend"]
        canonical = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def run_name(self):
        return folder_name(self.model, self.optimizer, self.batch_size, self.run_id)


def plan_runs(config):
    """The sweep's `RunSpec`s: for each model, each batch size, each optimizer."""
    runs = []
    for model in config.models:
        for batch_size in config.batch_sizes:
            steps_per_epoch = config.train_examples // batch_size
            for optimizer in config.optimizers:
                base_rate = config.learning_rates[optimizer]
                runs.append(
                    RunSpec(
                        protocol=config.protocol,
                        optimizer=optimizer,
                        model=model,
                        batch_size=batch_size,
                        epochs=config.epochs[model],
                        learning_rate=(
                            base_rate
                            if config.lr_scaling == "none"
                            else schedules.scale_learning_rate(
                                base_rate, batch_size, config.base_batch_size, config.lr_scaling
                            )
                        ),
                        weight_decay=config.weight_decays[optimizer],
                        warmup_steps=math.ceil(config.warmup_epochs * steps_per_epoch),
                        steps_per_epoch=steps_per_epoch,
                        lr_decay_power=config.lr_decay_power,
                        exclude_from_weight_decay=config.exclude_from_weight_decay,
                        optimizer_options=config.optimizer_options[optimizer],
                        model_variant=config.model_variant,
                        train_examples=config.train_examples,
                        test_examples=config.test_examples,
                        seed=config.seed,
                        backend=keras.backend.backend(),
                    )
                )
    return runs


def build_optimizer(spec):
    """The run's optimizer, with BERT's warmup + polynomial decay unless constant."""
    total_steps = spec.epochs * spec.steps_per_epoch
    if spec.warmup_steps == 0 and spec.lr_decay_power == 0:
        learning_rate = spec.learning_rate
    else:
        learning_rate = schedules.WarmupPolynomialDecay(
            spec.learning_rate,
            decay_steps=total_steps,
            warmup_steps=min(spec.warmup_steps, total_steps),
            power=spec.lr_decay_power,
        )
    exclude = (
        None if spec.exclude_from_weight_decay is None else list(spec.exclude_from_weight_decay)
    )
    return registry.create(
        spec.optimizer, learning_rate, spec.weight_decay, exclude, **spec.optimizer_options
    )


def run_folder(config, spec):
    """The folder of a run's logs: `<output_dir>/runs/<run name>`."""
    return os.path.join(config.output_dir, RUNS_DIR, spec.run_name)


def folder_name(model, optimizer, batch_size, run_id):
    """A run's folder name (`RunSpec.run_name`): `<model>-<optimizer>-b<batch size>-<run id>`."""
    return f"{model}-{optimizer}-b{batch_size}-{run_id}"
