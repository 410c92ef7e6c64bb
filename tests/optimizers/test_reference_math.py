"""Each optimizer against an independent NumPy implementation of its math."""

import numpy as np
import pytest

import lamb
from tests import reference
from tests.optimizers.helpers import (
    VARIABLE_SPECS,
    gradient_sequence,
    initial_values,
    matches,
    run_optimizer,
)

MODES = ["eager", "jit"]

LAMB_CASES = {
    "decay_with_exclusions": dict(
        learning_rate=0.01, weight_decay=0.01, exclude_from_weight_decay=["bias", "layer_norm"]
    ),
    "no_bias_correction": dict(
        learning_rate=0.02,
        weight_decay=0.1,
        bias_correction=False,
        exclude_from_weight_decay=["bias"],
        exclude_from_layer_adaptation=["gamma"],
    ),
    "weight_norm_bounds": dict(
        learning_rate=0.01,
        beta_1=0.8,
        beta_2=0.99,
        epsilon=1e-5,
        weight_decay=0.05,
        weight_norm_bounds=(0.5, 2.0),
    ),
    "no_decay": dict(learning_rate=0.005),
}


def _lamb_reference(kwargs, values, gradients, specs=VARIABLE_SPECS):
    weights = [v.astype("float64") for v in values]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    decay_list = kwargs.get("exclude_from_weight_decay")
    adapt_list = kwargs.get("exclude_from_layer_adaptation", decay_list)
    weight_decay = kwargs.get("weight_decay", 0.0)
    for t, grads in enumerate(gradients, start=1):
        for i, (path, _, _) in enumerate(specs):
            weights[i], m[i], v[i] = reference.lamb_step(
                weights[i], grads[i].astype("float64"), m[i], v[i], t,
                lr=kwargs["learning_rate"],
                beta_1=kwargs.get("beta_1", 0.9),
                beta_2=kwargs.get("beta_2", 0.999),
                epsilon=kwargs.get("epsilon", 1e-6),
                weight_decay=weight_decay,
                decays=weight_decay > 0 and not matches(decay_list, path),
                adapts=not matches(adapt_list, path),
                bias_correction=kwargs.get("bias_correction", True),
                weight_norm_bounds=kwargs.get("weight_norm_bounds"),
            )
    return weights


def _assert_close(actual, expected):
    for (path, _, _), a, e in zip(VARIABLE_SPECS, actual, expected):
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-6, err_msg=path)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(LAMB_CASES))
def test_lamb_matches_reference(case, mode):
    kwargs = LAMB_CASES[case]
    values, gradients = initial_values(), gradient_sequence()
    actual = run_optimizer(lamb.LAMB(**kwargs), values, gradients, mode)
    _assert_close(actual, _lamb_reference(kwargs, values, gradients))


ADAMW_CASES = {
    "bert_defaults": dict(
        learning_rate=0.01, weight_decay=0.01, exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"]
    ),
    "no_decay": dict(learning_rate=0.003, beta_1=0.5, beta_2=0.9, epsilon=1e-4),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(ADAMW_CASES))
def test_adam_weight_decay_matches_reference(case, mode):
    kwargs = ADAMW_CASES[case]
    values, gradients = initial_values(), gradient_sequence()
    actual = run_optimizer(lamb.AdamWeightDecay(**kwargs), values, gradients, mode)

    weights = [v.astype("float64") for v in values]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    weight_decay = kwargs.get("weight_decay", 0.0)
    for grads in gradients:
        for i, (path, _, _) in enumerate(VARIABLE_SPECS):
            weights[i], m[i], v[i] = reference.adam_weight_decay_step(
                weights[i], grads[i].astype("float64"), m[i], v[i],
                lr=kwargs["learning_rate"],
                beta_1=kwargs.get("beta_1", 0.9),
                beta_2=kwargs.get("beta_2", 0.999),
                epsilon=kwargs.get("epsilon", 1e-6),
                weight_decay=weight_decay,
                decays=weight_decay > 0
                and not matches(kwargs.get("exclude_from_weight_decay"), path),
            )
    _assert_close(actual, weights)


LARS_CASES = {
    "classic_momentum": dict(
        learning_rate=1.0, weight_decay=1e-4, exclude_from_weight_decay=["bias", "layer_norm"]
    ),
    "nesterov": dict(
        learning_rate=2.0,
        momentum=0.8,
        weight_decay=0.01,
        eeta=0.01,
        nesterov=True,
        exclude_from_weight_decay=["bias"],
        exclude_from_layer_adaptation=["head"],
    ),
    # tf.contrib.opt.LARSOptimizer's ratio (also tensorflow/tpu's lars_optimizer.py).
    "separate_trust_ratio": dict(
        learning_rate=1.0,
        weight_decay=0.01,
        eeta=0.01,
        trust_ratio_formula="separate",
        epsilon=1e-3,
        exclude_from_weight_decay=["bias"],
        exclude_from_layer_adaptation=["head"],
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(LARS_CASES))
def test_lars_matches_reference(case, mode):
    kwargs = LARS_CASES[case]
    values, gradients = initial_values(), gradient_sequence()
    actual = run_optimizer(lamb.LARS(**kwargs), values, gradients, mode)

    weights = [v.astype("float64") for v in values]
    velocity = [np.zeros_like(w) for w in weights]
    decay_list = kwargs.get("exclude_from_weight_decay")
    adapt_list = kwargs.get("exclude_from_layer_adaptation", decay_list)
    weight_decay = kwargs.get("weight_decay", 0.0)
    for grads in gradients:
        for i, (path, _, _) in enumerate(VARIABLE_SPECS):
            weights[i], velocity[i] = reference.lars_step(
                weights[i], grads[i].astype("float64"), velocity[i],
                lr=kwargs["learning_rate"],
                momentum=kwargs.get("momentum", 0.9),
                weight_decay=weight_decay,
                eeta=kwargs.get("eeta", 0.001),
                nesterov=kwargs.get("nesterov", False),
                decays=weight_decay > 0 and not matches(decay_list, path),
                adapts=not matches(adapt_list, path),
                formula=kwargs.get("trust_ratio_formula", "decayed"),
                epsilon=kwargs.get("epsilon", 0.0),
            )
    _assert_close(actual, weights)


def test_base_class_exclude_from_weight_decay_still_works():
    """Keras's own `exclude_from_weight_decay(var_names=...)` excludes too."""
    kwargs = dict(learning_rate=0.01, weight_decay=0.1)
    optimizer = lamb.LAMB(**kwargs)
    optimizer.exclude_from_weight_decay(var_names=["kernel"])
    values, gradients = initial_values(), gradient_sequence(num_steps=5)
    actual = run_optimizer(optimizer, values, gradients, "eager")
    expected = _lamb_reference(
        dict(kwargs, exclude_from_weight_decay=["kernel"], exclude_from_layer_adaptation=[]),
        values,
        gradients,
    )
    _assert_close(actual, expected)


def test_layer_statistics_report_the_last_step():
    kwargs = LAMB_CASES["decay_with_exclusions"]
    optimizer = lamb.LAMB(**kwargs)
    values, gradients = initial_values(), gradient_sequence(num_steps=3)
    run_optimizer(optimizer, values, gradients, "eager")
    before_last = _lamb_reference(kwargs, values, gradients[:2])
    statistics = optimizer.layer_statistics()
    assert list(statistics) == [path for path, _, _ in VARIABLE_SPECS]
    kernel_norm, _, kernel_ratio = statistics["encoder/dense/kernel"]
    np.testing.assert_allclose(kernel_norm, np.linalg.norm(before_last[0]), rtol=1e-5)
    assert statistics["encoder/dense/bias"][2] == 1.0  # excluded: ratio 1
    assert statistics["frozen/kernel"] == (0.0, 0.0, 1.0)
    assert kernel_ratio != 1.0


@pytest.mark.parametrize("shape", [(7,), (3, 5), (30, 16), (4, 6, 64), (2, 3, 5, 17), (3, 8192), (2, 4099),
                                   (1_000_000,), (4096, 8), (65537,)])
def test_both_norm_formulations_equal_numpy(shape):
    from keras import ops

    from lamb.optimizers import norms, xla_cpu

    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    expected = np.linalg.norm(x.astype("float64"))
    for norm in (norms.l2_norm, xla_cpu.l2_norm_by_matvec):
        np.testing.assert_allclose(float(ops.convert_to_numpy(norm(ops.convert_to_tensor(x)))), expected, rtol=1e-6)
