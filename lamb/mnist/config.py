"""A sweep's settings, checked: `make_config` builds the `SweepConfig` that
the rest of `lamb.mnist` works from, from the settings of `settings.SETTINGS`.
"""

import dataclasses
import os
import tempfile
import warnings

from lamb._checks import (
    check_choice,
    check_float,
    check_int,
    check_learning_rate,
)
from lamb.data import mnist as mnist_data
from lamb.mnist.parsing import (
    _choices,
    _exclusions,
    _from_text,
    _optimizer_options,
    _per_name,
    _split,
)
from lamb.mnist.protocols import PROTOCOL_DEFAULTS, PROTOCOLS
from lamb.mnist.settings import LR_SCALING_RULES, SETTINGS
from lamb.models import mnist as mnist_models
from lamb.optimizers import registry
from lamb.optimizers.registry import OPTIMIZERS, WITHOUT_WEIGHT_DECAY


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A fully resolved sweep; build it with `make_config`."""

    protocol: str
    optimizers: tuple
    models: tuple
    batch_sizes: tuple
    epochs: dict  # {model: epochs}
    learning_rates: dict
    weight_decays: dict
    lr_scaling: str
    base_batch_size: int
    warmup_epochs: float
    lr_decay_power: float
    exclude_from_weight_decay: tuple
    optimizer_options: dict
    model_variant: str
    train_examples: int
    test_examples: int
    seed: int
    output_dir: str
    data_dir: str = None
    mnist_manual_dir: str = None
    trust_ratio_every: int = 0
    tensorboard_dir: str = None
    batch_devices: int = 1  # The devices each batch is split over (keras.distribution).


def make_config(
    protocol=SETTINGS["protocol"].default, *, argument_prefix="", batch_devices=1, **settings
):
    """A checked `SweepConfig`: the protocol's settings, overridden where not `None`.

    `settings` are those of `SETTINGS` but `protocol`, by name; each one not
    given takes its `Setting.default`. List settings take sequences or
    comma-separated strings; `learning_rate` and `weight_decay` take a number,
    a dict, or a string like `"0.001,lamb=0.01"` (see the flags). Numbers must
    be finite and in range (NaN and infinity are refused). Raises `ValueError`
    naming the argument (= the flag: `argument_prefix="--"` writes it as one)
    and what is allowed, `TypeError` for a name that is not a setting.
    `batch_devices` is the number of devices each batch is split over (the
    batch axis of a `keras.distribution`); every batch size and the number of
    test images must be multiples of it.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise TypeError(f"make_config() got unknown settings {unknown}; they are {list(SETTINGS)}.")
    given = {name: setting.default for name, setting in SETTINGS.items()}
    given.update(settings)

    def name(argument):
        return argument_prefix + argument

    def protocol_or(setting):
        """The setting's value, or the protocol's where it is `None`."""
        return defaults[setting] if given[setting] is None else given[setting]

    protocol = check_choice(name("protocol"), protocol, PROTOCOLS, ignore_case=True)
    defaults = PROTOCOL_DEFAULTS[protocol]
    optimizers = _choices(name("optimizers"), given["optimizers"], tuple(OPTIMIZERS))
    models = _choices(name("models"), given["models"], mnist_models.MODELS)
    batch_sizes = tuple(
        dict.fromkeys(
            check_int(name("batch_sizes"), _from_text(b, int), low=1)
            for b in _split(name("batch_sizes"), given["batch_sizes"])
        )
    )
    train_examples, test_examples = (
        check_int(
            name(f"{split}_examples"),
            protocol_or(f"{split}_examples"),
            low=1,
            high=mnist_data.SPLIT_SIZES[split],
        )
        for split in ("train", "test")
    )
    too_large = [b for b in batch_sizes if b > train_examples]
    if too_large:
        raise ValueError(
            f"`{name('batch_sizes')}` must not exceed {name('train_examples')}={train_examples}; "
            f"received {too_large}."
        )
    batch_devices = check_int("batch_devices", batch_devices, low=1)
    for argument, values in (("batch_sizes", batch_sizes), ("test_examples", (test_examples,))):
        _check_multiples(name(argument), values, batch_devices)
    epochs = _per_name(
        name("epochs"),
        given["epochs"],
        dict.fromkeys(models, defaults["epochs"]),
        models,
        check=lambda label, value: check_int(label, _from_text(value, int), low=1),
        kind="models",
    )
    learning_rates = _per_name(
        name("learning_rate"),
        given["learning_rate"],
        defaults["learning_rates"],
        optimizers,
        check=lambda label, value: check_learning_rate(_from_text(value, float), label),
    )
    weight_decays = _per_name(
        name("weight_decay"),
        given["weight_decay"],
        defaults["weight_decays"],
        optimizers,
        check=lambda label, value: check_float(label, _from_text(value, float), low=0.0),
        single_value_skips=WITHOUT_WEIGHT_DECAY,
    )
    for optimizer in WITHOUT_WEIGHT_DECAY:
        if optimizer in optimizers and weight_decays[optimizer]:
            raise ValueError(
                f"`{name('weight_decay')}` for {optimizer} must be 0 ({optimizer} has no weight "
                f"decay); received {optimizer}={weight_decays[optimizer]}."
            )
    exclude_from_weight_decay = _exclusions(
        name("exclude_from_weight_decay"), protocol_or("exclude_from_weight_decay")
    )
    warmup_epochs = check_float(name("warmup_epochs"), protocol_or("warmup_epochs"), low=0.0)
    _warn_about_long_warmup(name("warmup_epochs"), warmup_epochs, name("epochs"), epochs)
    optimizer_options = _optimizer_options(
        name("optimizer_options"),
        given["optimizer_options"],
        defaults["optimizer_options"],
        optimizers,
    )
    for optimizer in optimizers:  # Every option checked by the optimizer itself, now.
        try:
            registry.create(
                optimizer, 1e-3, weight_decays[optimizer], exclude_from_weight_decay,
                **optimizer_options[optimizer],
            )
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"`{name('optimizer_options')}` for {optimizer} {optimizer_options[optimizer]}: "
                f"{error}"
            ) from None
    return SweepConfig(
        protocol=protocol,
        optimizers=optimizers,
        models=models,
        batch_sizes=batch_sizes,
        epochs=epochs,
        learning_rates=learning_rates,
        weight_decays=weight_decays,
        lr_scaling=check_choice(
            name("lr_scaling"), protocol_or("lr_scaling"), LR_SCALING_RULES, ignore_case=True
        ),
        base_batch_size=check_int(name("base_batch_size"), protocol_or("base_batch_size"), low=1),
        warmup_epochs=warmup_epochs,
        lr_decay_power=check_float(name("lr_decay_power"), protocol_or("lr_decay_power"), low=0.0),
        exclude_from_weight_decay=exclude_from_weight_decay,
        optimizer_options=optimizer_options,
        model_variant=defaults["model_variant"],
        train_examples=train_examples,
        test_examples=test_examples,
        # The seed reaches NumPy's global generator, which takes [0, 2**32 - 1].
        seed=check_int(name("seed"), protocol_or("seed"), low=0, high=2**32 - 1),
        data_dir=given["data_dir"],
        mnist_manual_dir=given["mnist_manual_dir"],
        trust_ratio_every=check_int(name("trust_ratio_every"), given["trust_ratio_every"], low=0),
        tensorboard_dir=given["tensorboard_dir"],
        batch_devices=batch_devices,
        # Last: the one check that creates something (the folder), once all others passed.
        output_dir=_check_output_dir(name("output_dir"), given["output_dir"]),
    )


def _check_multiples(name, values, batch_devices):
    """Each of `values` a multiple of `batch_devices`, else `ValueError` naming `name`."""
    uneven = [value for value in values if value % batch_devices]
    if uneven:
        shown = uneven[0] if len(uneven) == 1 else uneven
        raise ValueError(
            f"`{name}` must be divisible by {batch_devices}, the number of devices each batch "
            f"is split over; received {shown}."
        )


def _check_output_dir(name, output_dir):
    """`output_dir`, created if need be, once a file could be written in it."""
    if not isinstance(output_dir, (str, os.PathLike)) or not str(output_dir):
        raise ValueError(f"`{name}` must be a folder path; received {name}={output_dir!r}.")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"`{name}` must be a folder, not a file; received {name}={output_dir!r}.")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise ValueError(
            f"`{name}` must be a folder that can be written: {error.strerror}; "
            f"received {name}={output_dir!r}."
        ) from None
    return output_dir


def _warn_about_long_warmup(name, warmup_epochs, epochs_name, epochs):
    """A warning for each model whose runs are shorter than their warmup."""
    for model, model_epochs in epochs.items():
        if warmup_epochs > model_epochs:
            warnings.warn(
                f"`{name}={warmup_epochs:g}` is longer than `{epochs_name}={model_epochs}` for "
                f"{model}: its learning rate rises for the whole run (the warmup is cut at the "
                "run's end) and never decays.",
                stacklevel=3,
            )
