"""TrustRatioLogger: its records against NumPy norms of the weights before and after a step."""

import glob
import math
import os

import keras
import numpy as np
import pytest

import lamb
from lamb import diagnostics


def small_model():
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(2)]
    )


def train(optimizer, every_steps, csv_path, steps=7, tensorboard_dir=None):
    model = small_model()
    model.compile(optimizer=optimizer, loss="mse")
    initial = {v.path: np.asarray(v).copy() for v in model.trainable_variables}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8 * steps, 6)).astype("float32")
    y = rng.normal(size=(8 * steps, 2)).astype("float32")
    logger = diagnostics.TrustRatioLogger(every_steps, csv_path, tensorboard_dir)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, callbacks=[logger], verbose=0)
    return model, initial


def test_lamb_records_match_the_step_it_made(tmp_path):
    learning_rate = 0.01
    csv_path = tmp_path / "log.csv"
    model, initial = train(
        lamb.LAMB(learning_rate, weight_decay=0.01, exclude_from_weight_decay=["bias"]),
        every_steps=3,
        csv_path=csv_path,
    )
    log = diagnostics.read_trust_ratio_log(csv_path)
    assert set(log) == {v.path for v in model.trainable_variables}
    for path, series in log.items():
        assert series["step"] == [0, 3, 6]
        first = {name: values[0] for name, values in series.items()}
        assert first["weight_norm"] == pytest.approx(np.linalg.norm(initial[path]), rel=1e-5)
        # The step applied: ‖Δw‖ = η · trust ratio · ‖u‖.
        for ratio, update, step in zip(
            series["trust_ratio"], series["update_norm"], series["step_norm"]
        ):
            assert step == pytest.approx(learning_rate * ratio * update, rel=1e-3)
        if path.endswith("kernel"):
            for weight, update, ratio in zip(
                series["weight_norm"], series["update_norm"], series["trust_ratio"]
            ):
                assert ratio == pytest.approx(weight / update, rel=1e-5)
        else:  # Biases start at 0 and are excluded from layer adaptation.
            assert series["trust_ratio"] == [1.0, 1.0, 1.0]


def test_adam_records_weight_and_step_norms_but_no_trust_ratio(tmp_path):
    csv_path = tmp_path / "log.csv"
    model, initial = train(keras.optimizers.Adam(0.01), every_steps=1, csv_path=csv_path, steps=2)
    log = diagnostics.read_trust_ratio_log(csv_path)
    for variable in model.trainable_variables:
        series = log[variable.path]
        assert series["step"] == [0, 1]
        assert series["weight_norm"][0] == pytest.approx(
            np.linalg.norm(initial[variable.path]), rel=1e-5
        )
        assert all(math.isnan(r) for r in series["trust_ratio"] + series["update_norm"])
    # Adam's first step moves each weight with a nonzero gradient by about η
    # (m̂/√v̂ = ±1), as it does the two output biases.
    assert log[model.trainable_variables[-1].path]["step_norm"][0] == pytest.approx(
        0.01 * math.sqrt(2), rel=1e-3
    )
    with open(csv_path) as file:
        assert file.readline().strip() == ",".join(diagnostics.LOG_FIELDS)


def test_unwraps_the_loss_scale_optimizer(tmp_path):
    csv_path = tmp_path / "log.csv"
    train(keras.optimizers.LossScaleOptimizer(lamb.LAMB(0.01)), 1, csv_path, steps=2)
    log = diagnostics.read_trust_ratio_log(csv_path)
    kernels = [series for path, series in log.items() if path.endswith("kernel")]
    assert kernels and all(not math.isnan(r) for s in kernels for r in s["trust_ratio"])


def test_tensorboard_summaries_and_plot(tmp_path):
    csv_path = tmp_path / "log.csv"
    train(lamb.LARS(1.0), 2, csv_path, steps=5, tensorboard_dir=str(tmp_path / "tb"))
    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    png = diagnostics.plot_trust_ratios(csv_path, tmp_path / "trust.png", title="LARS")
    with open(png, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 10_000
    from PIL import Image

    assert Image.open(png).text["Title"] == "LARS"


def test_every_steps_must_be_positive():
    with pytest.raises(ValueError, match="every_steps"):
        diagnostics.TrustRatioLogger(0)
