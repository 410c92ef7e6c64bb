"""`create_optimizer` and the BERT-compatible `optimization` module."""

import keras
import numpy as np
import pytest
from keras import ops

import lamb
import optimization
from lamb import schedules
from tests import reference


@pytest.mark.parametrize(
    "optimizer_type, cls",
    [("adamw", lamb.AdamWeightDecay), ("lamb", lamb.LAMB), ("lamb16", lamb.LAMB16), ("lars", lamb.LARS),
     ("adam", keras.optimizers.Adam)],
)
def test_create_optimizer_types_and_bert_defaults(optimizer_type, cls):
    optimizer = lamb.create_optimizer(1e-4, 1000, 100, optimizer_type=optimizer_type)
    assert type(optimizer) is cls
    assert optimizer.global_clipnorm == 1.0
    schedule = optimizer._learning_rate
    assert isinstance(schedule, schedules.WarmupPolynomialDecay)
    for step in (0, 50, 100, 600, 1000):
        np.testing.assert_allclose(
            float(ops.convert_to_numpy(schedule(step))),
            reference.bert_learning_rate(step, 1e-4, 1000, 100), rtol=1e-5, atol=1e-12)
    config = optimizer.get_config()
    if optimizer_type != "adam":
        assert config["weight_decay"] == 0.01
        assert config["exclude_from_weight_decay"] == ["LayerNorm", "layer_norm", "bias"]
    if optimizer_type in ("adamw", "lamb", "lamb16", "adam"):
        assert config["epsilon"] == 1e-6


def test_create_optimizer_passes_optimizer_arguments_through():
    optimizer = lamb.create_optimizer(
        1e-3, 10, 1, optimizer_type="lamb", beta_2=0.98, gradient_accumulation_steps=4, global_clipnorm=None)
    assert optimizer.beta_2 == 0.98
    assert optimizer.gradient_accumulation_steps == 4
    assert optimizer.global_clipnorm is None


def test_unknown_optimizer_type_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"optimizer_type.*adam.*adamw.*lamb.*lamb16.*lars"):
        lamb.create_optimizer(1e-3, 10, 1, optimizer_type="sgd")


def test_optimization_module_keeps_bert_names():
    adamw = optimization.AdamWeightDecayOptimizer(1e-3, weight_decay_rate=0.01, exclude_from_weight_decay=["bias"])
    assert isinstance(adamw, lamb.AdamWeightDecay) and adamw.weight_decay == 0.01
    lamb_optimizer = optimization.LAMBOptimizer(1e-3, weight_decay_rate=0.02)
    assert isinstance(lamb_optimizer, lamb.LAMB) and lamb_optimizer.weight_decay == 0.02
    lamb16 = optimization.LAMB16Optimizer(1e-3, weight_decay_rate=0.01)
    assert isinstance(lamb16, lamb.LAMB16) and lamb16.weight_decay == 0.01
    lars = optimization.LARSOptimizer(0.1, use_nesterov=True, weight_decay=1e-4)
    assert isinstance(lars, lamb.LARS) and lars.nesterov
    assert optimization.create_optimizer is lamb.create_optimizer


@pytest.mark.parametrize("optimizer_type", lamb.OPTIMIZER_TYPES[1:])  # all but adam (no decay)
def test_a_single_exclusion_string_is_an_error_not_a_list_of_letters(optimizer_type):
    """`"bias"` as `["b", "i", "a", "s"]` would exclude every variable: LAMB
    without decay or trust ratios, silently."""
    with pytest.raises(ValueError, match=r"not a single string.*Did you mean \['bias'\]"):
        lamb.create_optimizer(1e-3, 100, 10, optimizer_type,
                              exclude_from_weight_decay="bias")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(init_lr=float("nan")), r"`init_lr` must be a finite number"),
        (dict(init_lr=float("inf")), r"`init_lr` must be a finite number"),
        # The argument the user passed, not the schedule's name for it.
        (dict(init_lr=-1e-4), r"`init_lr` must be a finite number in \[0.0, inf\); received init_lr=-0.0001"),
        (dict(num_warmup_steps=101), r"`num_warmup_steps` must be an integer in \[0, 100\]; received num_warmup_steps=101"),
        (dict(end_learning_rate=float("nan")), r"`end_learning_rate` must be a finite number"),
        (dict(power=float("nan")), r"`power` must be a finite number"),
        (dict(num_train_steps=100.5), r"`num_train_steps` must be an integer"),
        (dict(weight_decay=float("nan")), r"`weight_decay` must be a finite number"),
        (dict(epsilon=float("nan")), r"`epsilon` must be a finite number"),
        (dict(global_clipnorm=-1.0), r"`global_clipnorm` must be a finite number in \(0.0, inf\)"),
        (dict(optimizer_type="adam", beta_1=float("nan")), r"`beta_1` must be a finite number"),
        (dict(optimizer_type="adam", epsilon=float("inf")), r"`epsilon` must be a finite number"),
        # Keras's own optimizers get the package's checks too.
        (dict(optimizer_type="keras_adamw", weight_decay=-1.0), r"`weight_decay` must be a finite number in \[0.0, inf\)"),
        (dict(optimizer_type="keras_lamb", epsilon=0.0), r"`epsilon` must be a finite number in \(0.0, inf\)"),
        (dict(optimizer_type="keras_adamw", exclude_from_weight_decay=5), r"`exclude_from_weight_decay` must be None, a callable"),
        (dict(optimizer_type="keras_adamw", exclude_from_weight_decay=[lamb.fewer_than_2_dimensions]), r"regular expressions only"),
        (dict(optimizer_type="keras_lamb", gradient_accumulation_steps=2.5), r"`gradient_accumulation_steps` must be an integer"),
        (dict(optimizer_type="adam", ema_momentum=float("nan"), use_ema=True), r"`ema_momentum` must be a finite number in \[0.0, 1.0\]"),
        (dict(optimizer_type="keras_adamw", global_clipnorm=0.0), r"`global_clipnorm` must be a finite number in \(0.0, inf\)"),
    ],
)
def test_bad_factory_arguments_are_named(arguments, message):
    arguments = dict(dict(init_lr=1e-3, num_train_steps=100, num_warmup_steps=10), **arguments)
    with pytest.raises(ValueError, match=message):
        lamb.create_optimizer(**arguments)


def test_one_registry_names_every_optimizer_for_the_factory_and_the_apps():
    from lamb import run_pretraining
    from lamb.mnist import config as mnist_config
    from lamb.optimizers import registry

    assert lamb.OPTIMIZER_TYPES == tuple(registry.OPTIMIZERS)
    assert run_pretraining.OPTIMIZERS == tuple(registry.OPTIMIZERS)
    assert mnist_config.OPTIMIZERS is registry.OPTIMIZERS
    for name in ("keras_adamw", "keras_lamb"):
        optimizer = lamb.create_optimizer(1e-3, 100, 10, name)
        assert type(optimizer) is registry.OPTIMIZERS[name] and optimizer.weight_decay == 0.01
    assert lamb.create_optimizer(1e-3, 100, 10, "adam").global_clipnorm == 1.0


def test_a_weight_decay_for_adam_is_an_error_and_a_typo_gets_a_suggestion():
    """The factory used to drop a weight decay for `adam` silently."""
    with pytest.raises(ValueError, match=r"adam has no weight decay \(use adamw or keras_adamw\)"):
        lamb.create_optimizer(1e-3, 100, 10, "adam", weight_decay=0.01)
    with pytest.raises(ValueError, match=r"received optimizer_type='lasr'\. Did you mean 'lars'\?"):
        lamb.create_optimizer(1e-3, 100, 10, "lasr")


def test_create_optimizer_exposes_the_schedule_options():
    optimizer = lamb.create_optimizer(
        2e-3, 100, 20, "lamb", decay_schedule="cosine", alpha=0.1, warmup_power=2.0,
        decay_after_warmup=True, start_warmup_step=7)
    schedule = optimizer._learning_rate
    assert isinstance(schedule, schedules.WarmupCosineDecay)
    for step in (0, 10, 27, 50, 127, 200):
        np.testing.assert_allclose(
            float(ops.convert_to_numpy(schedule(step))),
            reference.warmup_decay_learning_rate(
                step, 2e-3, 100, 20, "cosine", alpha=0.1, warmup_power=2.0,
                decay_after_warmup=True, start_warmup_step=7),
            rtol=2e-5)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert restored.get_config()["learning_rate"] == optimizer.get_config()["learning_rate"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(decay_schedule="cosin"), r"`decay_schedule` must be one of \['cosine', 'polynomial'\]; received decay_schedule='cosin'\. Did you mean 'cosine'\?"),
        (dict(decay_schedule="cosine", end_learning_rate=1e-5), r"the cosine decay's floor is `alpha`"),
        (dict(alpha=0.1), r"`alpha` is the cosine decay's floor"),
        (dict(start_warmup_step=-1), r"`start_warmup_step` must be an integer in \[0, inf\)"),
    ],
)
def test_bad_schedule_options_of_create_optimizer_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        lamb.create_optimizer(1e-3, 100, 10, **arguments)
