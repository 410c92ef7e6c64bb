"""A sweep's settings, checked: `make_config` builds the `SweepConfig` that
the rest of `lamb.mnist` works from.

`SETTINGS` is the one list of them: `make_config` takes them by name and
`lamb.mnist_compare` defines a flag for each.
"""

import dataclasses
import os
import tempfile
import warnings

from lamb import schedules
from lamb._checks import (
    check_choice,
    check_float,
    check_int,
    check_learning_rate,
    closest,
)
from lamb.data import mnist as mnist_data
from lamb.mnist.protocols import PROTOCOL_DEFAULTS, PROTOCOLS
from lamb.models import mnist as mnist_models
from lamb.optimizers import registry
from lamb.optimizers.registry import OPTIMIZERS, WITHOUT_WEIGHT_DECAY

LR_SCALING_RULES = ("none",) + schedules.SCALING_RULES


@dataclasses.dataclass(frozen=True)
class Setting:
    """A setting of a sweep: an argument of `make_config`, and the flag of
    `lamb.mnist_compare` of the same name."""

    name: str
    default: object  # `None` for most: the protocol's value (see `make_config`).
    help: str  # The flag's help.
    kind: str = "string"  # The flag's kind, as in absl's DEFINE_<kind>: enum, list, ...
    choices: tuple = ()  # An enum's values.
    environ: str = None  # The flag defaults to this environment variable instead.


SETTINGS = {
    setting.name: setting
    for setting in (
        Setting(
            "protocol",
            "modern",
            "Settings every flag below defaults to (see the module docstring).",
            "enum",
            PROTOCOLS,
        ),
        Setting(
            "optimizers",
            ("adam", "adamw", "lamb"),
            "Optimizers to compare: adam, adamw (BERT's AdamWeightDecay), lamb, lars, "
            "keras_adamw, keras_lamb (Keras' own), lamb16 (when the package has it).",
            "list",
        ),
        Setting("models", mnist_models.MODELS, "Models: mlp, cnn, birnn, bigru, bilstm.", "list"),
        Setting(
            "batch_sizes",
            (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
            "Batch sizes to train with.",
            "list",
        ),
        Setting(
            "epochs",
            None,
            "Epochs per run: one value for all models and/or model=value pairs, e.g. '10' or "
            "'10,cnn=3,bigru=3' (protocol default: modern 10, reference2019 100).",
        ),
        Setting(
            "learning_rate",
            None,
            "Learning rate at --base_batch_size: one value for all optimizers, and/or "
            "name=value pairs per optimizer, e.g. '0.001' or '0.001,lamb=0.01,lars=1.0'.",
        ),
        Setting(
            "weight_decay",
            None,
            "Weight-decay rate, as --learning_rate (one value and/or name=value); a "
            "single value applies to every optimizer but adam, which has none.",
        ),
        Setting(
            "lr_scaling",
            None,
            "How the learning rate grows with the batch size from --base_batch_size.",
            "enum",
            LR_SCALING_RULES,
        ),
        Setting(
            "base_batch_size", None, "Batch size the --learning_rate values belong to.", "integer"
        ),
        Setting("warmup_epochs", None, "Epochs of linear learning-rate warmup from 0.", "float"),
        Setting(
            "lr_decay_power",
            None,
            "Power of the polynomial decay to 0 over the run (1: linear, as BERT; 0: constant).",
            "float",
        ),
        Setting(
            "exclude_from_weight_decay",
            None,
            "Regular expressions (comma-separated, re.search on variable.path) of the variables "
            "that get no weight decay, or 'none' (protocol default: modern 'bias', "
            "reference2019 none).",
        ),
        Setting(
            "optimizer_options",
            None,
            "More constructor arguments of the optimizers, as optimizer.argument=value pairs, "
            "e.g. 'lamb.bias_correction=true,lamb.exclude_from_layer_adaptation=bias'. Values: "
            "true, false, numbers, none, [] (an empty list), or for exclude_* arguments one "
            "regular expression (join several with |). They add to the protocol's "
            "(reference2019: adam.epsilon=1e-08, lamb.bias_correction=false).",
        ),
        Setting(
            "train_examples",
            None,
            "Train on the first N training images (protocol default: modern 60000, "
            "reference2019 55000); smaller values make quick runs.",
            "integer",
        ),
        Setting(
            "test_examples", None, "Evaluate on the first N test images (default 10000).", "integer"
        ),
        Setting("seed", None, "Seed of initialization and data order (default 12345).", "integer"),
        Setting("output_dir", "results/mnist", "Where results, plots and run logs go."),
        Setting("data_dir", None, "tensorflow-datasets data directory (default: tfds' default)."),
        Setting(
            "mnist_manual_dir",
            None,
            "Directory with the four MNIST IDX .gz files, used instead of downloading "
            "(default: $MNIST_MANUAL_DIR).",
            environ="MNIST_MANUAL_DIR",
        ),
        Setting(
            "trust_ratio_every",
            0,
            "Log per-layer weight norm, update norm and trust ratio every N steps (0: off).",
            "integer",
        ),
        Setting(
            "tensorboard_dir",
            None,
            "Write TensorBoard logs here, a folder per run: loss and accuracy per epoch "
            "(train/, validation/) and, with --trust_ratio_every, the trust-ratio logs.",
        ),
    )
}


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


def make_config(protocol=SETTINGS["protocol"].default, *, argument_prefix="", **settings):
    """A checked `SweepConfig`: the protocol's settings, overridden where not `None`.

    `settings` are those of `SETTINGS` but `protocol`, by name; each one not
    given takes its `Setting.default`. List settings take sequences or
    comma-separated strings; `learning_rate` and `weight_decay` take a number,
    a dict, or a string like `"0.001,lamb=0.01"` (see the flags). Numbers must
    be finite and in range (NaN and infinity are refused). Raises `ValueError`
    naming the argument (= the flag: `argument_prefix="--"` writes it as one)
    and what is allowed, `TypeError` for a name that is not a setting.
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
        # Last: the one check that creates something (the folder), once all others passed.
        output_dir=_check_output_dir(name("output_dir"), given["output_dir"]),
    )


def _exclusions(name, value):
    """A tuple of regular expressions, or None (`'none'`: none)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    return tuple(_split(name, value))


def _optimizer_options(name, value, defaults, optimizers):
    """`{optimizer: {argument: value}}`: the protocol's, then `value`'s
    `optimizer.argument=value` pairs (a string) or `{optimizer: {...}}`."""
    options = {n: dict(defaults.get(n, {})) for n in optimizers}
    if value is None:
        return options
    if isinstance(value, dict):
        pairs = [(o, a, v) for o, arguments in value.items() for a, v in arguments.items()]
    else:
        pairs = []
        for item in _split(name, value):
            key, equals, text = item.partition("=")
            optimizer, dot, argument = key.strip().partition(".")
            if not (equals and dot and argument):
                raise ValueError(
                    f"`{name}` takes optimizer.argument=value pairs; received {item!r}."
                )
            pairs.append((optimizer, argument.strip(), _option_value(argument, text.strip())))
    for optimizer, argument, option in pairs:
        options[_named(name, optimizer, optimizers)][argument] = option
    return options


def _named(name, item, allowed, kind="optimizers"):
    """`item` (any case) as written in `allowed`, the sweep's `kind` (optimizers or
    models); else an error naming `name`."""
    chosen = {n.lower(): n for n in allowed}.get(str(item).strip().lower())
    if chosen is None:
        raise ValueError(
            f"`{name}` names {kind[:-1]} {_with_closest(item, allowed)}, which is not "
            f"in {kind}={list(allowed)}."
        )
    return chosen


def _option_value(argument, text):
    """An option's value from its text (see the `optimizer_options` setting)."""
    lower = text.lower()
    if lower in ("true", "false"):
        return lower == "true"
    if lower == "none":
        return None
    if text == "[]":
        return []
    if argument.startswith("exclude_"):
        return [text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split(name, value):
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    value = list(value)
    if not value:
        raise ValueError(f"`{name}` must not be empty.")
    return value


def _choices(name, value, allowed):
    """The names in `value` (any case) as they are written in `allowed`, once each."""
    by_lower = {item.lower(): item for item in allowed}
    chosen = tuple(by_lower.get(str(item).lower(), item) for item in _split(name, value))
    unknown = [item for item in chosen if item not in allowed]
    if unknown:
        described = ", ".join(_with_closest(item, allowed) for item in unknown)
        raise ValueError(
            f"`{name}` must be a comma-separated subset of {list(allowed)}; "
            f"received unknown {described}."
        )
    return tuple(dict.fromkeys(chosen))


def _with_closest(item, allowed):
    """`'lasr' (did you mean 'lars'?)`, or `'x'` if nothing is close."""
    choice = closest(item, allowed)
    return f"{item!r}" if choice is None else f"{item!r} (did you mean {choice!r}?)"


def _from_text(value, kind):
    """`kind(value)` for text that reads as a `kind` (int or float); anything else
    unchanged, for the checks to refuse with their message."""
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            pass
    return value


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


def _per_name(name, value, defaults, names, check, single_value_skips=(), kind="optimizers"):
    """Values per optimizer (or per model, `kind="models"`): the protocol's, then
    one value for all (but those in `single_value_skips`), then `name=value`
    pairs; each value passed through `check(label, value)`, label `name` or
    `name[optimizer]`."""
    values = {n: defaults[n] for n in names}
    if value is None:
        return values
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, str):
        items = (
            item.split("=", 1) if "=" in item else (None, item)
            for item in _split(name, value)
        )
    else:
        items = [(None, value)]
    for key, text in items:
        if key is not None:
            key = _named(name, key, names, kind)
        label = name if key is None else f"{name}[{key}]"
        number = check(label, text)
        if key is not None:
            values[key] = number
        else:
            for n in names:
                if n not in single_value_skips:
                    values[n] = number
    return values
