"""The `optimization` module: each name against a NumPy model of the code it
is named after, with that code's defaults (see the module docstring)."""

import numpy as np
import pytest

import lamb
import optimization
from tests import reference
from tests.optimizers.helpers import (
    VARIABLE_SPECS,
    gradient_sequence,
    initial_values,
    matches,
    run_optimizer,
)

STEPS = 30


def _run(optimizer):
    values, gradients = initial_values(), gradient_sequence(num_steps=STEPS)
    return values, gradients, run_optimizer(optimizer, values, gradients, "eager")


def _assert_close(actual, expected):
    for (path, _, _), a, e in zip(VARIABLE_SPECS, actual, expected):
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-6, err_msg=path)


@pytest.mark.parametrize("exclude", [None, ["bias", "layer_norm"]])
def test_lamb_optimizer_is_the_2019_tensorflow_lamb_with_its_defaults(exclude):
    """ymcui/LAMB_Optimizer_TF: weight decay 0.01, no bias correction, and the
    trust ratio on every variable, also those excluded from weight decay."""
    values, gradients, actual = _run(
        optimization.LAMBOptimizer(learning_rate=0.02, exclude_from_weight_decay=exclude)
    )
    weights = [v.astype("float64") for v in values]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for t, grads in enumerate(gradients, start=1):
        for i, (path, _, _) in enumerate(VARIABLE_SPECS):
            weights[i], m[i], v[i] = reference.lamb_step(
                weights[i], grads[i].astype("float64"), m[i], v[i], t, lr=0.02,
                beta_1=0.9, beta_2=0.999, epsilon=1e-6, weight_decay=0.01,
                decays=not matches(exclude, path), adapts=True, bias_correction=False,
            )
    _assert_close(actual, weights)
    # The package's own LAMB defaults (no decay, bias correction) are another algorithm.
    _, _, package_defaults = _run(lamb.LAMB(learning_rate=0.02))
    assert not np.allclose(package_defaults[0], actual[0], rtol=1e-3)


def test_lamb16_optimizer_has_the_lamb_optimizer_defaults():
    config = optimization.LAMB16Optimizer(0.02).get_config()
    expected = optimization.LAMBOptimizer(0.02).get_config()
    for key in ("weight_decay", "bias_correction", "exclude_from_layer_adaptation",
                "exclude_from_weight_decay", "beta_1", "beta_2", "epsilon"):
        assert config[key] == expected[key], key
    assert (config["weight_decay"], config["bias_correction"]) == (0.01, False)
    assert config["exclude_from_layer_adaptation"] == []


@pytest.mark.parametrize("layer_adaptation", [None, []])
def test_lars_optimizer_is_simclrs_with_its_defaults(layer_adaptation):
    """SimCLR: eeta·‖w‖/‖g + λw‖, classic momentum; an empty or None
    `exclude_from_layer_adaptation` means the weight-decay list."""
    decay_list = ["bias", "layer_norm"]
    values, gradients, actual = _run(optimization.LARSOptimizer(
        learning_rate=1.0, weight_decay=1e-3, exclude_from_weight_decay=decay_list,
        exclude_from_layer_adaptation=layer_adaptation,
    ))
    weights = [v.astype("float64") for v in values]
    velocity = [np.zeros_like(w) for w in weights]
    for grads in gradients:
        for i, (path, _, _) in enumerate(VARIABLE_SPECS):
            weights[i], velocity[i] = reference.lars_step(
                weights[i], grads[i].astype("float64"), velocity[i], lr=1.0, momentum=0.9,
                weight_decay=1e-3, eeta=0.001, nesterov=False,
                decays=not matches(decay_list, path), adapts=not matches(decay_list, path),
            )
    _assert_close(actual, weights)


def test_lars_optimizer_takes_tf_contribs_trust_ratio():
    values, gradients, actual = _run(optimization.LARSOptimizer(
        learning_rate=1.0, weight_decay=1e-2, trust_ratio_formula="separate", epsilon=1e-3,
    ))
    weights = [v.astype("float64") for v in values]
    velocity = [np.zeros_like(w) for w in weights]
    for grads in gradients:
        for i in range(len(VARIABLE_SPECS)):
            weights[i], velocity[i] = reference.lars_step(
                weights[i], grads[i].astype("float64"), velocity[i], lr=1.0, momentum=0.9,
                weight_decay=1e-2, eeta=0.001, nesterov=False, decays=True, adapts=True,
                formula="separate", epsilon=1e-3,
            )
    _assert_close(actual, weights)


def test_lars_optimizer_refuses_simclrs_other_momentum():
    with pytest.raises(ValueError, match=r"`classic_momentum` must be True .*classic_momentum=False"):
        optimization.LARSOptimizer(0.1, classic_momentum=False)


def test_adam_weight_decay_optimizer_is_berts_with_its_defaults():
    values, gradients, actual = _run(optimization.AdamWeightDecayOptimizer(learning_rate=0.01))
    weights = [v.astype("float64") for v in values]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for grads in gradients:
        for i in range(len(VARIABLE_SPECS)):
            weights[i], m[i], v[i] = reference.adam_weight_decay_step(
                weights[i], grads[i].astype("float64"), m[i], v[i], lr=0.01, beta_1=0.9,
                beta_2=0.999, epsilon=1e-6, weight_decay=0.0, decays=False,
            )
    _assert_close(actual, weights)
