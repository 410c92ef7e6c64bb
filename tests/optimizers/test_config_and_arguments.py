"""Configs round-trip, bad arguments are named, sparse gradients equal dense ones."""

import keras
import numpy as np
import pytest

import lamb

NON_DEFAULT_ARGUMENTS = {
    lamb.LAMB: dict(
        learning_rate=0.02, beta_1=0.8, beta_2=0.95, epsilon=1e-5, weight_decay=0.03,
        exclude_from_weight_decay=["bias", lamb.fewer_than_2_dimensions],
        exclude_from_layer_adaptation=["gamma", "beta"], include_in_weight_decay=["gamma"],
        bias_correction=False, weight_norm_bounds=(0.1, 10.0), trust_ratio_bounds=(0.01, 10.0),
    ),
    lamb.LAMB16: dict(
        learning_rate=0.02, epsilon=1e-5, weight_decay=0.03, min_8bit_size=16,
        exclude_from_weight_decay=lamb.fewer_than_2_dimensions, trust_ratio_bounds=(0.0, 1.0),
        adaptive_trust=True,
    ),
    lamb.AdamWeightDecay: dict(
        learning_rate=0.02, beta_1=0.8, beta_2=0.95, epsilon=1e-5, weight_decay=0.03,
        exclude_from_weight_decay=["LayerNorm", "bias"], include_in_weight_decay=["LayerNorm/gamma"],
    ),
    lamb.LARS: dict(
        learning_rate=0.5, momentum=0.8, weight_decay=1e-4, eeta=0.002, nesterov=True,
        exclude_from_weight_decay=["bias"], exclude_from_layer_adaptation=["batch_norm"],
        trust_ratio_formula="separate", epsilon=1e-5, trust_ratio_bounds=(0.5, 2.0),
    ),
}
BASE_ARGUMENTS = dict(
    global_clipnorm=1.5, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3,
    loss_scale_factor=128.0, gradient_accumulation_steps=2, name="custom",
    skip_nonfinite_gradients=True, max_consecutive_skipped_steps=5,
)


@pytest.mark.parametrize("cls", list(NON_DEFAULT_ARGUMENTS), ids=lambda c: c.__name__)
def test_every_argument_round_trips_through_the_config(cls):
    arguments = dict(NON_DEFAULT_ARGUMENTS[cls], **BASE_ARGUMENTS)
    optimizer = cls(**arguments)
    config = optimizer.get_config()
    for name, value in arguments.items():
        expected = list(value) if isinstance(value, tuple) else value
        if callable(value) or isinstance(value, list) and any(map(callable, value)):
            continue  # serialized: checked by the round trip below
        assert config[name] == pytest.approx(expected), name
    restored = cls.from_config(config)
    assert restored.get_config() == config
    for name in ("exclude_from_weight_decay", "include_in_weight_decay"):
        rules = arguments.get(name)
        rules = rules if isinstance(rules, list) else [rules] if rules else None
        assert restored.get_config()[name] == config[name]
        assert (restored._weight_decay_exclusions if name.startswith("ex") else
                restored._weight_decay_inclusions) is None or rules is not None
    by_registry = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(by_registry) is cls and by_registry.get_config() == config


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: lamb.LAMB(learning_rate=-0.1), r"`learning_rate` must be a finite number in \[0.0, inf\); received learning_rate=-0.1"),
        (lambda: lamb.LAMB(weight_decay=-1e-4), r"`weight_decay` must be a finite number in \[0.0, inf\)"),
        (lambda: lamb.LAMB(beta_1=1.0), r"`beta_1` must be a finite number in \[0.0, 1.0\)"),
        (lambda: lamb.LAMB(beta_2=-0.1), r"`beta_2` must be a finite number in \[0.0, 1.0\)"),
        (lambda: lamb.LAMB(epsilon=-1e-8), r"`epsilon` must be a finite number in \(0.0, inf\)"),
        # epsilon = 0 makes a variable with an all-zero gradient NaN.
        (lambda: lamb.LAMB(epsilon=0.0), r"`epsilon` must be a finite number in \(0.0, inf\); received epsilon=0.0"),
        (lambda: lamb.LAMB16(epsilon=0), r"`epsilon` must be a finite number in \(0.0, inf\)"),
        (lambda: lamb.AdamWeightDecay(epsilon=0.0), r"`epsilon` must be a finite number in \(0.0, inf\)"),
        (lambda: lamb.LAMB(ema_momentum=float("nan"), use_ema=True), r"`ema_momentum` must be a finite number in \[0.0, 1.0\]; received ema_momentum=nan"),
        (lambda: lamb.LAMB(weight_norm_bounds="19"), r"`weight_norm_bounds` must be None or a pair \(lower, upper\); received weight_norm_bounds='19'"),
        (lambda: lamb.LAMB(weight_norm_bounds=(0, 0)), r"`weight_norm_bounds\[1\]` must be a finite number in \(0.0, inf\); received weight_norm_bounds\[1\]=0"),
        (lambda: lamb.LAMB16(weight_norm_bounds=("1", 2)), r"`weight_norm_bounds\[0\]` must be a finite number"),
        (lambda: lamb.LARS(gradient_accumulation_steps=0), r"`gradient_accumulation_steps` must be an integer in \[2, inf\); received gradient_accumulation_steps=0"),
        (lambda: lamb.LAMB(gradient_accumulation_steps=2.5), r"`gradient_accumulation_steps` must be an integer; received gradient_accumulation_steps=2.5"),
        (lambda: lamb.LAMB(exclude_from_weight_decay=5), r"`exclude_from_weight_decay` must be None, a callable `variable -> bool` or a list"),
        (lambda: lamb.AdamWeightDecay(include_in_weight_decay=["(bias"]), r"`include_in_weight_decay` holds an invalid regular expression '\(bias'"),
        (lambda: lamb.LAMB(trust_ratio_bounds=(2.0, 1.0)), r"`trust_ratio_bounds` must satisfy 0 <= lower <= upper with upper > 0"),
        (lambda: lamb.LARS(trust_ratio_bounds=(0.1, float("inf"))), r"`trust_ratio_bounds\[1\]` must be a finite number in \(0.0, inf\)"),
        (lambda: lamb.LAMB16(trust_ratio_bounds=0.5), r"`trust_ratio_bounds` must be None or a pair"),
        (lambda: lamb.LAMB(exclude_from_weight_decay=["bias", "lay(er"]), r"`exclude_from_weight_decay`.*'lay\(er'"),
        (lambda: lamb.LAMB(exclude_from_layer_adaptation=["[gamma"]), r"`exclude_from_layer_adaptation`.*'\[gamma'"),
        (lambda: lamb.LAMB(exclude_from_weight_decay="bias"), r"list of regular expressions"),
        (lambda: lamb.LAMB(weight_norm_bounds=(2.0, 1.0)), r"`weight_norm_bounds` must satisfy 0 <= lower <= upper with upper > 0"),
        (lambda: lamb.LAMB(weight_norm_bounds=(1.0,)), r"`weight_norm_bounds` must be None or a pair"),
        (lambda: lamb.AdamWeightDecay(beta_2=1.5), r"`beta_2` must be a finite number in \[0.0, 1.0\)"),
        (lambda: lamb.AdamWeightDecay(learning_rate=-1.0), r"`learning_rate`"),
        (lambda: lamb.LARS(momentum=1.0), r"`momentum` must be a finite number in \[0.0, 1.0\)"),
        (lambda: lamb.LARS(eeta=0.0), r"`eeta` must be a finite number in \(0.0, inf\)"),
        (lambda: lamb.LARS(weight_decay=-0.1), r"`weight_decay`"),
        # NaN, infinities, strings and bools are not silently taken.
        (lambda: lamb.LAMB(learning_rate=float("nan")), r"`learning_rate` must be a finite number in \[0.0, inf\); received learning_rate=nan"),
        (lambda: lamb.LAMB(learning_rate=float("inf")), r"`learning_rate` must be a finite number"),
        (lambda: lamb.LAMB(learning_rate="0.01"), r"`learning_rate` must be a finite number"),
        (lambda: lamb.LAMB(beta_1=float("nan")), r"`beta_1` must be a finite number in \[0.0, 1.0\)"),
        (lambda: lamb.LAMB(epsilon=float("nan")), r"`epsilon`"),
        (lambda: lamb.LAMB(weight_decay=float("inf")), r"`weight_decay` must be a finite number"),
        (lambda: lamb.LAMB(bias_correction="no"), r"`bias_correction` must be True or False; received bias_correction='no'"),
        (lambda: lamb.LAMB(weight_norm_bounds=(float("nan"), 1.0)), r"`weight_norm_bounds\[0\]` must be a finite number"),
        (lambda: lamb.LAMB(global_clipnorm=float("nan")), r"`global_clipnorm` must be a finite number in \(0.0, inf\)"),
        (lambda: lamb.LAMB(clipnorm=-1.0), r"`clipnorm`"),
        (lambda: lamb.LAMB(skip_nonfinite_gradients=1), r"`skip_nonfinite_gradients` must be True or False"),
        (lambda: lamb.AdamWeightDecay(beta_1=True), r"`beta_1` must be a finite number"),
        (lambda: lamb.LARS(eeta=float("nan")), r"`eeta` must be a finite number in \(0.0, inf\)"),
        (lambda: lamb.LARS(nesterov="yes"), r"`nesterov` must be True or False"),
        (lambda: lamb.LARS(trust_ratio_formula="seperate"), r"`trust_ratio_formula` must be one of \['decayed', 'separate'\]; received trust_ratio_formula='seperate'\. Did you mean 'separate'\?"),
        (lambda: lamb.LARS(epsilon=-1.0), r"`epsilon` must be a finite number in \[0.0, inf\)"),
        (lambda: lamb.LAMB16(min_8bit_size=2.5), r"`min_8bit_size` must be an integer; received min_8bit_size=2.5"),
        (lambda: lamb.LAMB16(adaptive_trust="false"), r"`adaptive_trust` must be True or False"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_integer_learning_rate_is_accepted():
    assert lamb.LARS(learning_rate=1).get_config()["learning_rate"] == 1.0


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("cls", list(NON_DEFAULT_ARGUMENTS), ids=lambda c: c.__name__)
def test_sparse_gradients_give_the_dense_result(cls):
    import tensorflow as tf

    arguments = {k: v for k, v in NON_DEFAULT_ARGUMENTS[cls].items()}
    rng = np.random.default_rng(0)
    table = rng.normal(size=(10, 4)).astype("float32")
    results = []
    for sparse in (True, False):
        variable = keras.Variable(table, name="embeddings")
        optimizer = cls(**arguments)
        optimizer.build([variable])
        step_rng = np.random.default_rng(1)
        for _ in range(5):
            indices = step_rng.integers(0, 10, size=6)  # with repeats
            values = step_rng.normal(size=(6, 4)).astype("float32")
            gradient = tf.IndexedSlices(tf.constant(values), tf.constant(indices), tf.constant([10, 4]))
            if not sparse:
                gradient = tf.convert_to_tensor(gradient)
            optimizer.apply_gradients([(gradient, variable)])
        results.append(variable.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)
