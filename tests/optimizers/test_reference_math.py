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
    # DeepSpeed's min_coeff / max_coeff, tight enough to clip both ways.
    "trust_ratio_bounds": dict(
        learning_rate=0.01, weight_decay=0.01, exclude_from_weight_decay=["bias"],
        trust_ratio_bounds=(1.3, 1.6),
    ),
    # Exclusion by a rule on the variable, with an allow-list over it.
    "exclusion_rules": dict(
        learning_rate=0.01, weight_decay=0.1,
        exclude_from_weight_decay=[lamb.fewer_than_2_dimensions, "head"],
        include_in_weight_decay=["layer_norm"],
        exclude_from_layer_adaptation=lamb.fewer_than_2_dimensions,
    ),
}


def _selects(rules, path, shape):
    """Whether regular expressions on `path` or `lamb.fewer_than_2_dimensions`
    in `rules` (a list, or one rule) select the variable."""
    rules = rules if isinstance(rules, list) else [] if rules is None else [rules]
    patterns = [rule for rule in rules if isinstance(rule, str)]
    by_rank = any(rule is lamb.fewer_than_2_dimensions for rule in rules)
    return matches(patterns, path) or (by_rank and len(shape) < 2)


def _decays(kwargs, path, shape):
    return kwargs.get("weight_decay", 0.0) > 0 and (
        _selects(kwargs.get("include_in_weight_decay"), path, shape)
        or not _selects(kwargs.get("exclude_from_weight_decay"), path, shape)
    )


def _adapts(kwargs, path, shape):
    rules = kwargs.get("exclude_from_layer_adaptation", kwargs.get("exclude_from_weight_decay"))
    return not _selects(rules, path, shape)


def _lamb_reference(kwargs, values, gradients, specs=VARIABLE_SPECS):
    weights = [v.astype("float64") for v in values]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    weight_decay = kwargs.get("weight_decay", 0.0)
    for t, grads in enumerate(gradients, start=1):
        for i, (path, shape, _) in enumerate(specs):
            weights[i], m[i], v[i] = reference.lamb_step(
                weights[i], grads[i].astype("float64"), m[i], v[i], t,
                lr=kwargs["learning_rate"],
                beta_1=kwargs.get("beta_1", 0.9),
                beta_2=kwargs.get("beta_2", 0.999),
                epsilon=kwargs.get("epsilon", 1e-6),
                weight_decay=weight_decay,
                decays=_decays(kwargs, path, shape),
                adapts=_adapts(kwargs, path, shape),
                bias_correction=kwargs.get("bias_correction", True),
                weight_norm_bounds=kwargs.get("weight_norm_bounds"),
                trust_ratio_bounds=kwargs.get("trust_ratio_bounds"),
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
    "exclusion_rules": dict(
        learning_rate=0.01, weight_decay=0.1, exclude_from_weight_decay=lamb.fewer_than_2_dimensions,
        include_in_weight_decay=["gamma"],
    ),
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
        for i, (path, shape, _) in enumerate(VARIABLE_SPECS):
            weights[i], m[i], v[i] = reference.adam_weight_decay_step(
                weights[i], grads[i].astype("float64"), m[i], v[i],
                lr=kwargs["learning_rate"],
                beta_1=kwargs.get("beta_1", 0.9),
                beta_2=kwargs.get("beta_2", 0.999),
                epsilon=kwargs.get("epsilon", 1e-6),
                weight_decay=weight_decay,
                decays=_decays(kwargs, path, shape),
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
    "trust_ratio_bounds": dict(
        learning_rate=1.0, weight_decay=1e-4, eeta=0.01, trust_ratio_bounds=(0.095, 1.0),
        exclude_from_weight_decay=[lamb.fewer_than_2_dimensions],
    ),
    "separate_trust_ratio_bounds": dict(
        learning_rate=1.0, weight_decay=0.01, eeta=0.01, trust_ratio_formula="separate",
        trust_ratio_bounds=(0.087, 0.1), exclude_from_weight_decay=["bias"],
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
    weight_decay = kwargs.get("weight_decay", 0.0)
    for grads in gradients:
        for i, (path, shape, _) in enumerate(VARIABLE_SPECS):
            weights[i], velocity[i] = reference.lars_step(
                weights[i], grads[i].astype("float64"), velocity[i],
                lr=kwargs["learning_rate"],
                momentum=kwargs.get("momentum", 0.9),
                weight_decay=weight_decay,
                eeta=kwargs.get("eeta", 0.001),
                nesterov=kwargs.get("nesterov", False),
                decays=_decays(kwargs, path, shape),
                adapts=_adapts(kwargs, path, shape),
                formula=kwargs.get("trust_ratio_formula", "decayed"),
                epsilon=kwargs.get("epsilon", 0.0),
                trust_ratio_bounds=kwargs.get("trust_ratio_bounds"),
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


@pytest.mark.parametrize(
    "cls, kwargs",
    [(lamb.LAMB, LAMB_CASES["trust_ratio_bounds"]), (lamb.LARS, LARS_CASES["trust_ratio_bounds"]),
     (lamb.LARS, LARS_CASES["separate_trust_ratio_bounds"])],
)
def test_the_trust_ratio_bounds_clip_both_ways(cls, kwargs):
    """The bounds of the `trust_ratio_bounds` cases change the step: without
    them, ratios below and above them occur (else the cases could not fail)."""
    optimizer = cls(**dict(kwargs, trust_ratio_bounds=None))
    values, gradients = initial_values(), gradient_sequence(num_steps=3)
    run_optimizer(optimizer, values, gradients, "eager")
    ratios = [ratio for _, _, ratio in optimizer.layer_statistics().values() if ratio != 1.0]
    lower, upper = kwargs["trust_ratio_bounds"]
    assert min(ratios) < lower and max(ratios) > upper, ratios


BERT_LIKE_SPECS = [
    ("bert/token_embedding/embeddings", (10, 4), "normal"),
    ("bert/embeddings_layer_norm/gamma", (4,), "ones"),
    ("bert/transformer_layer_0/dense/kernel", (4, 4), "normal"),
    ("bert/transformer_layer_1/dense/kernel", (4, 4), "normal"),
    ("bert/transformer_layer_1/dense/bias", (4,), "zeros"),
    ("next_sentence_head/kernel", (4, 2), "normal"),
]
BERT_LIKE_DEPTHS = [2, 2, 1, 0, 0, 0]  # from the top: bert_layer_index's 0, 0, 1, 2, 2, None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["lamb", "adam_weight_decay", "lars"])
def test_layer_decay_scales_each_layers_rate_as_the_reference(name, mode):
    """ELECTRA's layer-wise rate decay: rate · 0.5^(depth from the top)."""
    kwargs = dict(learning_rate=0.01, weight_decay=0.01, exclude_from_weight_decay=["bias", "gamma"])
    cls = {"lamb": lamb.LAMB, "adam_weight_decay": lamb.AdamWeightDecay, "lars": lamb.LARS}[name]
    optimizer = cls(**kwargs, layer_decay=0.5, layer_index=lamb.bert_layer_index)
    restored = cls.from_config(optimizer.get_config())
    assert restored.layer_index is lamb.bert_layer_index and restored.layer_decay == 0.5
    values = initial_values(specs=BERT_LIKE_SPECS)
    gradients = gradient_sequence(num_steps=4, specs=BERT_LIKE_SPECS)
    actual = run_optimizer(restored, values, gradients, mode, specs=BERT_LIKE_SPECS)

    weights = [v.astype("float64") for v in values]
    state = [[np.zeros_like(w), np.zeros_like(w)] for w in weights]
    for t, grads in enumerate(gradients, start=1):
        for i, (path, _, _) in enumerate(BERT_LIKE_SPECS):
            lr = 0.01 * 0.5 ** BERT_LIKE_DEPTHS[i]
            decays = not matches(["bias", "gamma"], path)
            g = grads[i].astype("float64")
            if name == "lamb":
                weights[i], *state[i] = reference.lamb_step(
                    weights[i], g, *state[i], t, lr=lr, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                    weight_decay=0.01, decays=decays, adapts=decays)
            elif name == "adam_weight_decay":
                weights[i], *state[i] = reference.adam_weight_decay_step(
                    weights[i], g, *state[i], lr=lr, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                    weight_decay=0.01, decays=decays)
            else:
                weights[i], state[i][0] = reference.lars_step(
                    weights[i], g, state[i][0], lr=lr, momentum=0.9, weight_decay=0.01, eeta=0.001,
                    nesterov=False, decays=decays, adapts=decays)
    for (path, _, _), a, e in zip(BERT_LIKE_SPECS, actual, weights):
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-6, err_msg=path)


def test_layer_decay_arguments_are_checked():
    with pytest.raises(ValueError, match=r"`layer_decay` must be a finite number in \(0.0, 1.0\]"):
        lamb.LAMB(layer_decay=0.0, layer_index=lamb.bert_layer_index)
    with pytest.raises(ValueError, match=r"`layer_index` must be a callable"):
        lamb.LAMB(layer_decay=0.8)
    optimizer = lamb.LARS(layer_decay=0.8, layer_index=lambda variable: "top")
    with pytest.raises(ValueError, match=r"`layer_index` must give an integer >= 0 or None; it gave 'top'"):
        run_optimizer(optimizer, initial_values(), gradient_sequence(num_steps=1), "eager")
