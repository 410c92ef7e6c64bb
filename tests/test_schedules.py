"""Schedules against BERT's formula (NumPy), serialization, XLA."""

import keras
import numpy as np
import pytest
from keras import ops

from lamb import schedules
from tests import reference


def _values(schedule, steps):
    return np.array([float(ops.convert_to_numpy(schedule(step))) for step in steps])


@pytest.mark.parametrize(
    "init_lr, num_train_steps, num_warmup_steps, end_lr, power",
    [(1e-4, 1000, 100, 0.0, 1.0), (6e-3, 7038, 2000, 1e-5, 0.5), (2e-3, 50, 0, 0.0, 2.0)],
)
def test_warmup_polynomial_decay_matches_bert(init_lr, num_train_steps, num_warmup_steps, end_lr, power):
    schedule = schedules.WarmupPolynomialDecay(init_lr, num_train_steps, num_warmup_steps, end_lr, power)
    steps = sorted({0, 1, num_warmup_steps - 1, num_warmup_steps, num_warmup_steps + 1,
                    num_train_steps // 2, num_train_steps - 1, num_train_steps, num_train_steps + 10} - {-1})
    expected = [reference.bert_learning_rate(s, init_lr, num_train_steps, num_warmup_steps, end_lr, power)
                for s in steps]
    np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-5, atol=1e-10)


def test_decay_counts_from_step_zero_not_from_warmup_end():
    schedule = schedules.WarmupPolynomialDecay(1.0, decay_steps=100, warmup_steps=50)
    # Right after warmup, BERT's rate is already half decayed.
    np.testing.assert_allclose(_values(schedule, [50]), [0.5], rtol=1e-6)


def test_multi_phase_rewarms_from_zero_at_each_phase():
    phases = [
        {"steps": 100, "learning_rate": 6e-3, "warmup_steps": 28},
        {"steps": 40, "learning_rate": 4e-3, "warmup_steps": 5, "end_learning_rate": 1e-4, "power": 0.5},
    ]
    schedule = schedules.MultiPhaseSchedule(phases)
    steps = [0, 10, 27, 28, 99, 100, 101, 104, 105, 120, 139, 140, 500]
    expected = []
    for step in steps:
        if step < 100:
            expected.append(reference.bert_learning_rate(step, 6e-3, 100, 28))
        else:
            expected.append(reference.bert_learning_rate(step - 100, 4e-3, 40, 5, 1e-4, 0.5))
    np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-5, atol=1e-10)
    assert schedule.total_steps == 140
    assert _values(schedule, [100])[0] == 0.0


def test_lamb_paper_bert_large_recipe_lengths():
    schedule = schedules.MultiPhaseSchedule([
        {"steps": 7038, "learning_rate": 6e-3, "warmup_steps": round(0.2843 * 7038)},
        {"steps": 1563, "learning_rate": 4e-3, "warmup_steps": round(0.128 * 1563)},
    ])
    assert schedule.total_steps == 8601
    peak_1, start_2, peak_2 = _values(schedule, [2000, 7038, 7038 + 199])
    assert start_2 == 0.0 and peak_1 > 5e-3 and peak_2 > 3.9e-3


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.WarmupPolynomialDecay(1e-3, 100, 10, 1e-5, 2.0),
        schedules.MultiPhaseSchedule([{"steps": 10, "learning_rate": 1.0, "warmup_steps": 2},
                                      {"steps": 5, "learning_rate": 0.5, "warmup_steps": 1}]),
    ],
)
def test_schedules_serialize_alone_and_inside_an_optimizer(schedule):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    steps = [0, 1, 5, 11, 14, 200]
    np.testing.assert_array_equal(_values(restored, steps), _values(schedule, steps))

    import lamb

    optimizer = lamb.LAMB(learning_rate=schedule)
    nested = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert nested.get_config()["learning_rate"] == optimizer.get_config()["learning_rate"]


@pytest.mark.tensorflow_only
def test_schedules_run_inside_xla():
    import tensorflow as tf

    schedule = schedules.MultiPhaseSchedule([{"steps": 10, "learning_rate": 1.0, "warmup_steps": 4},
                                             {"steps": 10, "learning_rate": 0.5, "warmup_steps": 2}])
    compiled = tf.function(schedule, jit_compile=True)
    steps = [0, 3, 4, 9, 10, 11, 15, 25]
    eager = _values(schedule, steps)
    np.testing.assert_allclose([float(compiled(tf.constant(s, tf.int64))) for s in steps], eager, rtol=1e-6)


def test_scaling_rules():
    assert schedules.scale_learning_rate(1e-3, 4096, 256, rule="sqrt") == pytest.approx(4e-3)
    assert schedules.scale_learning_rate(1e-3, 4096, 256, rule="linear") == pytest.approx(16e-3)
    with pytest.raises(ValueError, match="rule"):
        schedules.scale_learning_rate(1e-3, 4096, 256, rule="cubic")
    with pytest.raises(ValueError, match="batch_size"):
        schedules.scale_learning_rate(1e-3, 0, 256)


def test_warmup_steps_from_epochs():
    assert schedules.warmup_steps_from_epochs(1, 60000, 1024) == 59
    assert schedules.warmup_steps_from_epochs(0.5, 60000, 1000) == 30
    assert schedules.warmup_steps_from_epochs(0.1, 3, 1) == 1
    assert schedules.warmup_steps_from_epochs(0, 60000, 64) == 0


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: schedules.WarmupPolynomialDecay(-1.0, 10), "initial_learning_rate"),
        (lambda: schedules.WarmupPolynomialDecay(1.0, 0), "decay_steps"),
        (lambda: schedules.WarmupPolynomialDecay(1.0, 10, warmup_steps=-1), "warmup_steps"),
        (lambda: schedules.WarmupPolynomialDecay(1.0, 10, power=-1.0), "power"),
        (lambda: schedules.MultiPhaseSchedule([]), "phases"),
        (lambda: schedules.MultiPhaseSchedule([{"steps": 10, "learning_rate": 1.0}]), r"phases\[0\]"),
        (lambda: schedules.WarmupPolynomialDecay(float("nan"), 10), "`initial_learning_rate` must be a finite number"),
        (lambda: schedules.WarmupPolynomialDecay(1.0, 10, end_learning_rate=float("inf")), "`end_learning_rate` must be a finite"),
        (lambda: schedules.WarmupPolynomialDecay(1.0, 10, power=float("nan")), "`power` must be a finite"),
        (lambda: schedules.WarmupPolynomialDecay(1.0, 10.5), "`decay_steps` must be an integer"),
        (lambda: schedules.MultiPhaseSchedule([{"steps": 10.5, "learning_rate": 1.0, "warmup_steps": 1}]),
         r"`phases\[0\]\['steps'\]` must be an integer"),
        (lambda: schedules.scale_learning_rate(float("nan"), 1024, 256), "`base_learning_rate` must be a finite"),
        (lambda: schedules.warmup_steps_from_epochs(float("inf"), 100, 10), "`warmup_epochs` must be a finite"),
    ],
)
def test_bad_schedule_arguments_are_named(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: schedules.WarmupPolynomialDecay(1e-3, decay_steps=10, warmup_steps=20),
         r"`warmup_steps` must be an integer in \[0, 10\]; received warmup_steps=20"),
        (lambda: schedules.MultiPhaseSchedule([{"steps": 10, "learning_rate": 1e-3, "warmup_steps": 20}]),
         r"`phases\[0\]\['warmup_steps'\]` must be an integer in \[0, 10\]"),
        (lambda: schedules.MultiPhaseSchedule([{"steps": 0, "learning_rate": 1e-3, "warmup_steps": 0}]),
         r"`phases\[0\]\['steps'\]` must be an integer in \[1, inf\)"),
        (lambda: schedules.MultiPhaseSchedule({"steps": 10, "learning_rate": 1e-3, "warmup_steps": 2}),
         r"`phases` must be a list of dicts, one per phase; received phases=\{"),
    ],
)
def test_schedules_refuse_inconsistent_lengths_with_one_line(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_negative_step_counts_as_step_zero():
    """Not a negative rate (warmup) or a rate above the peak (decay)."""
    warmup = schedules.WarmupPolynomialDecay(1e-3, decay_steps=10, warmup_steps=2)
    no_warmup = schedules.WarmupPolynomialDecay(1e-3, decay_steps=10)
    phases = schedules.MultiPhaseSchedule([{"steps": 10, "learning_rate": 1e-3, "warmup_steps": 2}])
    np.testing.assert_allclose(_values(warmup, [-5, 0]), [0.0, 0.0])
    np.testing.assert_allclose(_values(no_warmup, [-5, 0]), [1e-3, 1e-3], rtol=1e-6)
    np.testing.assert_allclose(_values(phases, [-5, 0]), [0.0, 0.0])


SCHEDULE_OPTIONS = [
    dict(warmup_power=2.0),
    dict(decay_after_warmup=True, power=2.0, end_learning_rate=1e-5),
    dict(start_warmup_step=30, warmup_power=0.5),
    dict(decay_after_warmup=True, start_warmup_step=7, warmup_power=1.5),
]


@pytest.mark.parametrize("decay", ["polynomial", "cosine"])
@pytest.mark.parametrize("options", SCHEDULE_OPTIONS + [{}, dict(alpha=0.1)],
                         ids=lambda options: ",".join(options) or "defaults")
def test_warmup_options_and_cosine_decay_match_the_reference(decay, options):
    if decay == "polynomial" and "alpha" in options or decay == "cosine" and "power" in options:
        pytest.skip("an option of the other decay")
    peak, decay_steps, warmup_steps = 2e-3, 100, 20
    if decay == "cosine":
        schedule = schedules.WarmupCosineDecay(peak, decay_steps, warmup_steps, **options)
    else:
        schedule = schedules.WarmupPolynomialDecay(peak, decay_steps, warmup_steps, **options)
    steps = [-3, 0, 1, 5, 19, 20, 21, 27, 36, 50, 77, 99, 100, 101, 106, 119, 120, 130, 500]
    expected = [reference.warmup_decay_learning_rate(s, peak, decay_steps, warmup_steps, decay, **options)
                for s in steps]
    np.testing.assert_allclose(_values(schedule, steps), expected, rtol=2e-5, atol=1e-10)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule) and restored.get_config() == schedule.get_config()
    np.testing.assert_array_equal(_values(restored, steps), _values(schedule, steps))


def test_a_warmup_as_long_as_the_decay_ends_at_the_floor():
    schedule = schedules.WarmupCosineDecay(1.0, 10, 10, alpha=0.25, decay_after_warmup=True)
    np.testing.assert_allclose(_values(schedule, [5, 10, 11]), [0.5, 0.25, 0.25], rtol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: schedules.WarmupCosineDecay(1e-3, 10, alpha=1.5), r"`alpha` must be a finite number in \[0.0, 1.0\]"),
        (lambda: schedules.WarmupCosineDecay(1e-3, 10, warmup_power=0.0), r"`warmup_power` must be a finite number in \(0.0, inf\)"),
        (lambda: schedules.WarmupPolynomialDecay(1e-3, 10, decay_after_warmup="yes"), r"`decay_after_warmup` must be True or False"),
        (lambda: schedules.WarmupPolynomialDecay(1e-3, 10, start_warmup_step=-1), r"`start_warmup_step` must be an integer in \[0, inf\)"),
    ],
)
def test_bad_schedule_options_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
