"""`lamb.run_pretraining` on the JAX backend: every `--distribution`, Keras's
gradient accumulation (also resumed from a checkpoint) and 2 processes give
one device's weights, and one JAX device gives TensorFlow's.

The app runs in subprocesses (`tests/jax_pretraining_worker.py`) under
`KERAS_BACKEND=jax` with 4 virtual CPU devices, and as 2 processes joined
over 127.0.0.1, for `STEPS` LAMB steps of `configs/bert_config_tiny.json`
with dropout off, sequences of 16 tokens and a batch of 16, `--clip_norm`
below the gradient's norm (so a clip of a replica's or a micro-batch's share
would show) and a schedule that changes the rate at every step.
"""

import json
import os
import random

from absl import flags
from absl.testing import flagsaver
import keras
import numpy as np
import pytest

pytest.importorskip("keras_hub")

from lamb import configs, run_pretraining  # noqa: E402
from lamb.data import pretraining  # noqa: E402
from lamb.models import bert  # noqa: E402
from lamb.pretraining import train  # noqa: E402
from tests import jax_pretraining_worker as worker  # noqa: E402
from tests import pretraining_helpers as helpers  # noqa: E402
from tests import subprocesses  # noqa: E402

FLOAT32_ROUNDING = 2e-6  # Max abs weight difference after a few steps.
TENSORFLOW_VS_JAX = 1e-5  # Two backends' kernels: float32 rounding, summed differently.


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Records of 16 tokens and the tiny BERT config with dropout off. Half
    the records hold 8 tokens (and padding) and 1 masked-LM prediction, the
    others 2, so micro-batches differ in their number of predictions."""
    directory = str(tmp_path_factory.mktemp("bert_jax_data"))
    corpus = os.path.join(directory, "corpus.txt")
    helpers.write_corpus(corpus)
    vocab = helpers.write_vocab(os.path.join(directory, "vocab.txt"))
    documents = pretraining.read_documents([corpus], vocab, do_lower_case=True)
    rng = random.Random(1)
    instances = [
        instance
        for length in (worker.SEQUENCE, worker.SEQUENCE // 2)
        for instance in pretraining.create_training_instances(
            documents, vocab, length, 1, 0.1, 0.15, worker.PREDICTIONS, False, rng)
    ]
    rng.shuffle(instances)
    records = [os.path.join(directory, f"data-{i}.tfrecord") for i in range(2)]
    pretraining.write_instance_to_example_files(
        instances, vocab, worker.SEQUENCE, worker.PREDICTIONS, records)
    with open(configs.check_exists("bert_config_tiny.json", "bert_config_file")) as f:
        config = json.load(f)
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with open(os.path.join(directory, "bert_config.json"), "w") as f:
        json.dump(config, f)
    return directory


@pytest.fixture(scope="module")
def devices_run(data_dir, tmp_path_factory):
    pytest.importorskip("jax")
    pytest.importorskip("orbax.checkpoint")  # The app's JAX checkpoints.
    out = str(tmp_path_factory.mktemp("bert_jax_runs"))
    # The resumed accumulation run's programs are read from the cache.
    return subprocesses.run_worker(
        "tests.jax_pretraining_worker", "devices", data_dir, out,
        compilation_cache=tmp_path_factory.mktemp("jax_compilation_cache"),
    ), out


@pytest.mark.parametrize(
    "configuration", ["data_parallel", "model_parallel", "accumulation", "accumulation_resumed"]
)
def test_distributed_runs_end_with_the_weights_of_one_device(devices_run, configuration):
    results, _ = devices_run
    assert results["devices"] == 4
    assert results["gradient_norm"] > 3 * worker.CLIP_NORM  # The clip acts.
    assert results[configuration] < FLOAT32_ROUNDING
    # Optimizer steps, not micro-batches.
    assert results[f"{configuration}_iterations"] == worker.STEPS


def test_accumulation_logs_schedules_and_checkpoints_optimizer_steps(devices_run):
    _, out = devices_run
    logged = {
        name: helpers.tensorboard_scalars(os.path.join(out, name, "train"))
        for name in ("one_device", "accumulation")
    }
    assert sorted(logged["accumulation"]["loss"]) == [2, 4]
    for tag in ("learning_rate", "loss", "masked_lm_loss"):
        expected = logged["one_device"][tag]
        np.testing.assert_allclose(
            [logged["accumulation"][tag][step] for step in sorted(expected)],
            [expected[step] for step in sorted(expected)], rtol=1e-5, err_msg=tag)
    with open(os.path.join(out, "accumulation", "metrics.json")) as f:
        assert json.load(f)["global_step"] == worker.STEPS
    checkpoints = {
        name: sorted(entry for entry in os.listdir(os.path.join(out, name)) if "ckpt" in entry)
        for name in ("one_device", "accumulation")
    }
    assert checkpoints["accumulation"] == checkpoints["one_device"] and checkpoints["one_device"]


def test_model_parallel_shards_the_optimizer_state(devices_run):
    """LAMB's state of the split tables and kernels is split like them: the
    state per device is about half of one device's (the model axis is 2);
    biases and layer norms stay whole."""
    results, _ = devices_run
    per_device = results["optimizer_bytes_per_device"]
    assert len(per_device) == 4 and len(set(per_device)) == 1
    assert per_device[0] < 0.55 * results["optimizer_bytes_one_device"]


@pytest.mark.parametrize("name, message", [
    ("strategy", "--strategy=mirrored is TensorFlow's (tf.distribute); on the JAX backend use "
                 "--distribution=data_parallel or model_parallel."),
    ("processes_without_distribution",
     "--num_processes=2 with --distribution=none would train the same steps in every process; "
     "use --distribution=data_parallel or model_parallel."),
    ("keras_optimizer_accumulation",
     "--gradient_accumulation_steps=2 with --optimizer=keras_adamw does not work on the JAX "
     "backend: Keras's own optimizers pass their schedule the micro-batch count, not the "
     "optimizer step; use one of ['adamw', 'lamb', 'lamb16', 'lars']."),
    ("fp16_accumulation",
     "--gradient_accumulation_steps=2 with --mixed_precision=fp16 does not work on the JAX "
     "backend: Keras's loss scaling skips a non-finite micro-batch, not its whole step; use "
     "--mixed_precision=bf16."),
    ("batch_not_divisible",
     "--train_batch_size=6 is not divisible by the 4 replicas of --distribution=data_parallel "
     "x --gradient_accumulation_steps=1."),
])
def test_flags_refused_on_jax(devices_run, name, message):
    results, _ = devices_run
    assert results[f"refused_{name}"] == message


def test_two_processes_end_with_the_weights_of_one_device(devices_run, data_dir):
    _, out = devices_run
    results = subprocesses.run_two_processes("tests.jax_pretraining_worker", data_dir, out)
    for process_id, result in enumerate(results):
        assert result["process"] == process_id
        assert (result["devices"], result["local_devices"]) == (4, 2)
        assert result["difference"] < FLOAT32_ROUNDING


def test_one_jax_device_ends_with_tensorflows_weights(devices_run, data_dir, tmp_path):
    """Each backend draws its own initial weights: TensorFlow starts from
    JAX's, then trains the app's model on the app's input."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow's side runs in this process")
    _, out = devices_run
    with flagsaver.flagsaver():
        flags.FLAGS(["run_pretraining", *worker.app_flags(data_dir, str(tmp_path))])
        model = train.build_model(bert.load_bert_config(flags.FLAGS.bert_config_file))
        model.set_weights(list(np.load(os.path.join(out, "initial.npz")).values()))
        dataset = pretraining.make_dataset(
            pretraining.expand_input_files(flags.FLAGS.input_file), worker.BATCH,
            worker.SEQUENCE, worker.PREDICTIONS, flags.FLAGS.seed,
        )
        model.fit(dataset.take(worker.STEPS), steps_per_epoch=worker.STEPS, shuffle=False,
                  verbose=0)
    jax = list(np.load(os.path.join(out, "one_device.npz")).values())
    for weight, expected in zip(model.weights, jax, strict=True):
        np.testing.assert_allclose(weight.numpy(), expected, rtol=0, atol=TENSORFLOW_VS_JAX,
                                   err_msg=weight.path)


@pytest.mark.parametrize("flag", [
    "--distribution=data_parallel", "--mesh_shape=2,2", "--num_processes=2",
])
def test_jax_flags_under_tensorflow_are_one_line_errors(data_dir, tmp_path, flag):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the TensorFlow backend's error")
    with flagsaver.flagsaver():
        flags.FLAGS(["run_pretraining", *worker.app_flags(data_dir, str(tmp_path)), flag])
        with pytest.raises(ValueError) as error:
            run_pretraining.main(["run_pretraining"])
    assert str(error.value) == (
        f"{flag.split('=')[0] if 'distribution' not in flag else flag} needs the JAX backend "
        "(KERAS_BACKEND=jax); KERAS_BACKEND is 'tensorflow' (use --strategy there)."
    )
