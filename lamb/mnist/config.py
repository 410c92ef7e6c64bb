"""A sweep's settings, checked: `make_config` builds the `SweepConfig` that
the rest of `lamb.mnist` works from."""

import dataclasses
import os

from lamb._checks import check_choice, check_float, check_int, check_learning_rate
from lamb.data import mnist as mnist_data
from lamb.mnist.protocols import PROTOCOL_DEFAULTS, PROTOCOLS
from lamb.models import mnist as mnist_models
from lamb.optimizers.registry import OPTIMIZERS, WITHOUT_WEIGHT_DECAY

LR_SCALING_RULES = ("none", "sqrt", "linear")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A fully resolved sweep; build it with `make_config`."""

    protocol: str
    optimizers: tuple
    models: tuple
    batch_sizes: tuple
    epochs: int
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


def make_config(
    protocol="modern",
    *,
    optimizers=("adam", "adamw", "lamb"),
    models=mnist_models.MODELS,
    batch_sizes=(64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
    output_dir="results/mnist",
    epochs=None,
    learning_rate=None,
    weight_decay=None,
    lr_scaling=None,
    base_batch_size=None,
    warmup_epochs=None,
    lr_decay_power=None,
    train_examples=None,
    test_examples=None,
    seed=None,
    data_dir=None,
    mnist_manual_dir=None,
    trust_ratio_every=0,
    tensorboard_dir=None,
    argument_prefix="",
):
    """A checked `SweepConfig`: the protocol's settings, overridden where not `None`.

    List arguments take sequences or comma-separated strings; `learning_rate`
    and `weight_decay` take a number, a dict, or a string like
    `"0.001,lamb=0.01"` (see the flags). Numbers must be finite and in range
    (NaN and infinity are refused). Raises `ValueError` naming the argument
    (= the flag: `argument_prefix="--"` writes it as one) and what is allowed.
    """

    def name(argument):
        return argument_prefix + argument

    protocol = check_choice(name("protocol"), protocol, PROTOCOLS)
    defaults = PROTOCOL_DEFAULTS[protocol]
    optimizers = _choices(name("optimizers"), optimizers, tuple(OPTIMIZERS))
    models = _choices(name("models"), models, mnist_models.MODELS)
    batch_sizes = tuple(
        dict.fromkeys(
            check_int(name("batch_sizes"), _from_text(b, int), low=1)
            for b in _split(name("batch_sizes"), batch_sizes)
        )
    )
    train_examples, test_examples = (
        check_int(
            name(f"{split}_examples"),
            _override(defaults, f"{split}_examples", value),
            low=1,
            high=mnist_data.SPLIT_SIZES[split],
        )
        for split, value in (("train", train_examples), ("test", test_examples))
    )
    too_large = [b for b in batch_sizes if b > train_examples]
    if too_large:
        raise ValueError(
            f"`{name('batch_sizes')}` must not exceed {name('train_examples')}={train_examples}; "
            f"received {too_large}."
        )
    learning_rates = _per_optimizer(
        name("learning_rate"),
        learning_rate,
        defaults["learning_rates"],
        optimizers,
        check=lambda label, value: check_learning_rate(value, label),
    )
    weight_decays = _per_optimizer(
        name("weight_decay"),
        weight_decay,
        defaults["weight_decays"],
        optimizers,
        check=lambda label, value: check_float(label, value, low=0.0),
        single_value_skips=WITHOUT_WEIGHT_DECAY,
    )
    for optimizer in WITHOUT_WEIGHT_DECAY:
        if optimizer in optimizers and weight_decays[optimizer]:
            raise ValueError(
                f"`{name('weight_decay')}` for {optimizer} must be 0 ({optimizer} has no weight "
                f"decay); received {optimizer}={weight_decays[optimizer]}."
            )
    return SweepConfig(
        protocol=protocol,
        optimizers=optimizers,
        models=models,
        batch_sizes=batch_sizes,
        epochs=check_int(name("epochs"), _override(defaults, "epochs", epochs), low=1),
        learning_rates=learning_rates,
        weight_decays=weight_decays,
        lr_scaling=check_choice(
            name("lr_scaling"), _override(defaults, "lr_scaling", lr_scaling), LR_SCALING_RULES
        ),
        base_batch_size=check_int(
            name("base_batch_size"), _override(defaults, "base_batch_size", base_batch_size), low=1
        ),
        warmup_epochs=check_float(
            name("warmup_epochs"), _override(defaults, "warmup_epochs", warmup_epochs), low=0.0
        ),
        lr_decay_power=check_float(
            name("lr_decay_power"), _override(defaults, "lr_decay_power", lr_decay_power), low=0.0
        ),
        exclude_from_weight_decay=defaults["exclude_from_weight_decay"],
        optimizer_options={n: defaults["optimizer_options"].get(n, {}) for n in optimizers},
        model_variant=defaults["model_variant"],
        train_examples=train_examples,
        test_examples=test_examples,
        # The seed reaches NumPy's global generator, which takes [0, 2**32 - 1].
        seed=check_int(name("seed"), _override(defaults, "seed", seed), low=0, high=2**32 - 1),
        output_dir=_check_output_dir(name("output_dir"), output_dir),
        data_dir=data_dir,
        mnist_manual_dir=mnist_manual_dir,
        trust_ratio_every=check_int(name("trust_ratio_every"), trust_ratio_every, low=0),
        tensorboard_dir=tensorboard_dir,
    )


def _split(name, value):
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    value = list(value)
    if not value:
        raise ValueError(f"`{name}` must not be empty.")
    return value


def _choices(name, value, allowed):
    chosen = tuple(_split(name, value))
    unknown = [item for item in chosen if item not in allowed]
    if unknown:
        raise ValueError(
            f"`{name}` must be a comma-separated subset of {list(allowed)}; "
            f"received unknown {unknown}."
        )
    return tuple(dict.fromkeys(chosen))


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
    if not isinstance(output_dir, (str, os.PathLike)) or not str(output_dir):
        raise ValueError(f"`{name}` must be a folder path; received {name}={output_dir!r}.")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"`{name}` must be a folder, not a file; received {name}={output_dir!r}.")
    return output_dir


def _override(defaults, name, value):
    return defaults[name] if value is None else value


def _per_optimizer(name, value, defaults, optimizers, check, single_value_skips=()):
    """Per-optimizer values: the protocol's, then one value for all (but those in
    `single_value_skips`), then `name=value` pairs; each value passed through
    `check(label, value)`, label `name` or `name[optimizer]`."""
    values = {n: defaults[n] for n in optimizers}
    if value is None:
        return values
    if isinstance(value, dict):
        items = value.items()
    else:
        items = (
            item.split("=", 1) if "=" in item else (None, item)
            for item in _split(name, str(value))
        )
    for optimizer, text in items:
        if optimizer is not None:
            optimizer = optimizer.strip()
            if optimizer not in optimizers:
                raise ValueError(
                    f"`{name}` names optimizer {optimizer!r}, which is not in "
                    f"optimizers={list(optimizers)}."
                )
        label = name if optimizer is None else f"{name}[{optimizer}]"
        number = check(label, _from_text(text, float))
        if optimizer is not None:
            values[optimizer] = number
        else:
            for n in optimizers:
                if n not in single_value_skips:
                    values[n] = number
    return values
