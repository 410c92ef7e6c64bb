"""The five MNIST models: parameter counts from their architecture, shapes, initialization."""

import numpy as np
import pytest

from lamb.models import mnist

UNITS = 128
ROW = 28  # Each time step reads one image row of 28 pixels.


def dense(fan_in, fan_out):
    return fan_in * fan_out + fan_out


def conv(size, channels_in, channels_out):
    return size * size * channels_in * channels_out + channels_out


def bidirectional(gates, bias_vectors=1):
    """Two directions of a cell with `gates` blocks of `UNITS` (TF1 layout)."""
    per_direction = gates * UNITS * (ROW + UNITS) + bias_vectors * gates * UNITS
    return 2 * per_direction


EXPECTED_PARAMETERS = {
    "mlp": dense(784, 256) + 2 * dense(256, 256) + dense(256, 10),  # 335,114
    # 28 → pool → 14 → pool → 7: the dense layer reads 7·7·64 features.
    "cnn": conv(5, 1, 32) + conv(5, 32, 64) + dense(7 * 7 * 64, 1024) + dense(1024, 10),
    "birnn": bidirectional(1) + dense(2 * UNITS, 10),
    "bigru": bidirectional(3) + dense(2 * UNITS, 10),  # TF1 GRUCell: one bias per gate
    "bilstm": bidirectional(4) + dense(2 * UNITS, 10),
}


def test_expected_counts_are_the_known_totals():
    assert EXPECTED_PARAMETERS == {
        "mlp": 335_114,
        "cnn": 3_274_634,
        "birnn": 42_762,
        "bigru": 123_146,
        "bilstm": 163_338,
    }


@pytest.mark.parametrize("variant", mnist.VARIANTS)
@pytest.mark.parametrize("name", mnist.MODELS)
def test_parameter_count_and_logits_shape(name, variant):
    model = mnist.build_model(name, variant)
    assert model.count_params() == EXPECTED_PARAMETERS[name]
    logits = np.asarray(model(np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)))
    assert logits.shape == (3, 10)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_reference2019_draws_every_weight_and_bias_from_standard_normal(name):
    model = mnist.build_model(name, "reference2019")
    for variable in model.trainable_variables:
        values = np.asarray(variable).ravel()
        if values.size >= 1000:
            assert abs(values.mean()) < 0.1, variable.path
            assert values.std() == pytest.approx(1.0, abs=0.1), variable.path
        else:  # Biases of 10 to 64 values: nonzero, of unit scale.
            assert 0.3 < values.std() < 2.0, variable.path


def test_modern_uses_keras_defaults():
    model = mnist.build_model("mlp", "modern")
    kernel, bias = model.layers[1].kernel, model.layers[1].bias
    limit = np.sqrt(6.0 / (784 + 256))  # Glorot uniform
    assert np.abs(np.asarray(kernel)).max() <= limit
    assert np.abs(np.asarray(kernel)).max() > 0.9 * limit
    np.testing.assert_array_equal(np.asarray(bias), 0.0)


def test_reference2019_gru_has_tf1_cell_initialization():
    model = mnist.build_model("bigru", "reference2019")
    limit = np.sqrt(6.0 / (ROW + UNITS + 3 * UNITS))  # Over TF1's [input; state] kernel.
    # Paths look like bigru/bidirectional/forward_gru_1/gru_cell/kernel.
    weights = {
        (v.path.split("/")[2].split("_")[0], v.path.split("/")[-1]): np.asarray(v)
        for v in model.get_layer(index=0).weights
    }
    for direction in ("forward", "backward"):
        for kernel in ("kernel", "recurrent_kernel"):
            values = weights[direction, kernel]
            assert np.abs(values).max() <= limit
            assert np.abs(values).max() > 0.95 * limit
        np.testing.assert_array_equal(
            weights[direction, "bias"], np.r_[np.ones(2 * UNITS), np.zeros(UNITS)]
        )
    assert np.asarray(model.get_layer("logits").kernel).std() == pytest.approx(1.0, abs=0.15)


def features(model, images):
    """The input of the logits layer."""
    for layer in model.layers[:-1]:
        images = layer(images)
    return np.asarray(images)


def test_reference2019_rnn_reads_the_last_step_of_the_sequence():
    """The backward half of `outputs[-1]` has read only the last row (the 2019 quirk)."""
    rng = np.random.default_rng(1)
    images = rng.random((2, 28, 28), dtype=np.float32)
    changed = images.copy()
    changed[:, 0, :] = rng.random((2, 28), dtype=np.float32)  # Only the first row differs.
    for variant, backward_reads_first_row in (("reference2019", False), ("modern", True)):
        model = mnist.build_model("birnn", variant)
        backward = [features(model, x)[:, UNITS:] for x in (images, changed)]
        assert (not np.allclose(*backward)) == backward_reads_first_row, variant


def test_bad_arguments_name_the_allowed_values():
    with pytest.raises(ValueError, match="name.*mlp"):
        mnist.build_model("resnet")
    with pytest.raises(ValueError, match="variant.*reference2019"):
        mnist.build_model("mlp", "2018")
