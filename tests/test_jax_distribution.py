"""`lamb.jax_distribution`: every JAX configuration gives one device's weights.

The JAX work runs in subprocesses (`tests/jax_distribution_worker.py`) under
`KERAS_BACKEND=jax` with 4 virtual CPU devices, and as 2 processes joined
over 127.0.0.1; each trains `STEPS` LAMB steps with `global_clipnorm` below
the gradient's norm (so a clip of a replica's or a micro-batch's share would
show) and compares the weights with one device on the whole batch.
"""

import keras
import pytest

from lamb import jax_distribution
from tests import subprocesses

FLOAT32_ROUNDING = 2e-6  # Max abs weight difference over a few steps.


@pytest.fixture(scope="module")
def devices_run(tmp_path_factory):
    pytest.importorskip("jax")
    pytest.importorskip("keras_hub")
    reference = tmp_path_factory.mktemp("jax") / "reference.npz"
    return (subprocesses.run_worker("tests.jax_distribution_worker", "devices", str(reference)),
            reference)


@pytest.mark.parametrize("model", ["mlp", "bert"])
@pytest.mark.parametrize(
    "configuration", ["data_parallel", "model_parallel", "data_parallel_accumulation"]
)
def test_distributed_steps_equal_one_device(devices_run, model, configuration):
    results, _ = devices_run
    assert results["devices"] == 4
    assert results[f"{model}_gradient_norm"] > 10 * 0.05  # The clip acts.
    assert results[f"{model}_{configuration}"] < FLOAT32_ROUNDING


@pytest.mark.parametrize("model", ["mlp", "bert"])
def test_model_parallel_state_is_sharded_like_its_variable(devices_run, model):
    results, _ = devices_run
    sharding = results[f"{model}_sharding"]
    expected = {"mlp": 4, "bert": 9}[model]  # Kernels and tables the layouts split.
    assert len(sharding) == expected
    for entry in sharding.values():
        assert "model" in entry["variable"]
        assert entry["state"] == [entry["variable"]] * 2  # LAMB's two moments.
    one_device = results[f"{model}_optimizer_bytes_one_device"]
    per_device = results[f"{model}_optimizer_bytes_per_device"]
    assert len(set(per_device)) == 1
    # The split kernels hold half their bytes on each device; biases, layer
    # norms and the heads stay whole.
    assert per_device[0] < {"mlp": 0.51, "bert": 0.65}[model] * one_device


def test_a_mesh_of_the_wrong_size_is_a_clear_error(devices_run):
    results, _ = devices_run
    assert results["mesh_error"] == (
        "--mesh_shape=3,2 holds 6 devices; there are 4 (BATCH x MODEL must equal the "
        "device count)."
    )


def test_keras_accumulation_schedules_count_optimizer_steps_only_in_lamb(devices_run):
    """Keras's AdamW passes its schedule the micro-batch count; lamb's
    optimizers pass `iterations` (optimizer steps)."""
    results, _ = devices_run
    assert results["schedule_lamb_accumulation"] < FLOAT32_ROUNDING
    assert results["schedule_adamw_accumulation"] > 1e-3


@pytest.mark.parametrize("distribution", ["one_device", "data_parallel"])
def test_keras_accumulation_skips_the_whole_step_of_a_nonfinite_micro_batch(
        devices_run, distribution):
    """With `skip_nonfinite_gradients`, a non-finite micro-batch skips its
    whole step, as `lamb.GradientAccumulation` does on TensorFlow: its
    micro-batches are consumed, `iterations` stays, and the run equals one
    without that step."""
    results, _ = devices_run
    fact = lambda name: results[f"nonfinite_{name}_{distribution}"]  # noqa: E731
    assert fact("iterations_after_each_micro_batch") == [0] * 7 + [1]
    assert fact("weights_changed_after_each_micro_batch") == [False] * 7 + [True]
    assert fact("skipped_steps") == 1
    assert fact("difference_from_the_run_without_step_1") < FLOAT32_ROUNDING


def test_two_processes_equal_one_process(devices_run):
    _, reference = devices_run
    results = subprocesses.run_two_processes("tests.jax_distribution_worker", str(reference))
    for process_id, result in enumerate(results):
        assert result["process"] == process_id
        assert (result["devices"], result["local_devices"]) == (4, 2)
        assert result["difference"] < FLOAT32_ROUNDING


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="the TensorFlow backend's error")
def test_a_distribution_under_tensorflow_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^--distribution needs the JAX backend"):
        jax_distribution.make_distribution("data_parallel")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("pipeline",), r"--distribution"),
        (("none", "2,2"), r"^--mesh_shape is for --distribution=model_parallel"),
    ],
)
def test_bad_distribution_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        jax_distribution.make_distribution(*arguments)


@pytest.mark.parametrize("mesh_shape", ["2x2", "2,0", "2", "2,2,1", "a,b"])
def test_bad_mesh_shape(mesh_shape):
    with pytest.raises(ValueError, match=r"^--mesh_shape must be two positive integers"):
        jax_distribution.parse_mesh_shape(mesh_shape)


def test_mesh_shape():
    assert jax_distribution.parse_mesh_shape("2,4") == (2, 4)
    assert jax_distribution.parse_mesh_shape((1, 8)) == (1, 8)


def test_process_arguments_come_together():
    with pytest.raises(ValueError, match=r"^--num_processes, --process_id missing"):
        jax_distribution.initialize_processes("127.0.0.1:1234")
