"""Test set-up shared by the suite.

With the TensorFlow backend, the CPU is split into two logical devices so that
`tf.distribute.MirroredStrategy` can be tested on one machine; this must
happen before TensorFlow initializes its devices.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

# What XLA on CPU writes in a step (tests marked xla_structure) depends on its
# version: the tests describe TensorFlow 2.21's; 2.20 and older outline the
# step into calls rather than fusions.
XLA_STRUCTURE_VERSION = (2, 21)

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "tensorflow_only: needs the TensorFlow backend (skipped on others)"
    )
    config.addinivalue_line(
        "markers", "notebook: executes notebooks/mnist_tensorflow.ipynb with nbclient"
    )
    config.addinivalue_line(
        "markers", "xla_structure: what XLA writes in a TensorFlow step, per XLA_STRUCTURE_VERSION"
    )


def pytest_collection_modifyitems(config, items):
    skips = {}
    if keras.backend.backend() != "tensorflow":
        skips["tensorflow_only"] = skips["xla_structure"] = pytest.mark.skip(
            reason="needs the TensorFlow backend")
    elif _tensorflow_version() < XLA_STRUCTURE_VERSION:
        skips["xla_structure"] = pytest.mark.skip(
            reason=f"describes the XLA of TensorFlow >= 2.21, which TensorFlow "
            f"{tf.__version__} compiles differently (the step's values are checked on every "
            "version: tests/optimizers/test_fast_path_values.py)")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


def _tensorflow_version():
    return tuple(int(part) for part in tf.__version__.split(".")[:2])


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts and ends with the default float32 dtype policy."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
