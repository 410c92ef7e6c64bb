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
