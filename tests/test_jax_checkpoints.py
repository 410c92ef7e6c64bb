"""`lamb.run_pretraining` on the JAX backend: orbax checkpoints with the
guarantees of TensorFlow's (tests/test_run_pretraining.py).

Each run is a subprocess with KERAS_BACKEND=jax; the runs share a persistent
XLA compilation cache (measured: about a third less CPU time for this file).
"""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("keras_hub")
pytest.importorskip("orbax.checkpoint")

from absl import flags  # noqa: E402
from absl.testing import flagsaver  # noqa: E402

from lamb import _files  # noqa: E402
from lamb.data import pretraining  # noqa: E402
from lamb.pretraining import run_folder  # noqa: E402
from tests import pretraining_helpers as helpers  # noqa: E402
from tests import subprocesses  # noqa: E402

SEQUENCE, PREDICTIONS = 16, 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Records of sequence 16 (training, eval) and a 1-layer BERT with dropout."""
    directory = tmp_path_factory.mktemp("jax_bert_data")
    vocab = helpers.write_vocab(directory / "vocab.txt")
    helpers.write_corpus(directory / "corpus.txt")
    documents = pretraining.read_documents([str(directory / "corpus.txt")], vocab, True)
    instances = pretraining.create_training_instances(
        documents, vocab, SEQUENCE, 1, 0.1, 0.15, PREDICTIONS, False, random.Random(1)
    )
    records = [str(directory / f"data-{i}.tfrecord") for i in range(2)]
    pretraining.write_instance_to_example_files(instances, vocab, SEQUENCE, PREDICTIONS, records)
    helpers.write_bert_config(directory / "bert_config.json", len(vocab), dropout=0.1,
                              num_hidden_layers=1, max_position_embeddings=SEQUENCE)
    return {"dir": str(directory), "records": records,
            "cache": str(tmp_path_factory.mktemp("jax_compilation_cache"))}


def app_args(data, output_dir, **flags):
    """6 steps of 8 examples (one a device call: the smallest program to
    compile), a checkpoint every 2 (the last 2 kept), eval at the end."""
    values = dict(
        input_file=data["records"][0], eval_input_file=data["records"][1],
        max_seq_length=SEQUENCE, max_predictions_per_seq=PREDICTIONS, train_batch_size=8,
        num_train_steps=6, num_warmup_steps=2, save_checkpoints_steps=2, iterations_per_loop=1,
        keep_checkpoint_max=2, max_eval_steps=2,
    )
    values.update(flags)
    return helpers.app_args(data, output_dir, **values) + ["--do_eval"]


def jax_env(data, devices=1):
    """The environment of a run on `devices` JAX devices, its compilations cached."""
    return subprocesses.jax_env(devices, compilation_cache=data["cache"])


def run_app(data, args):
    return helpers.run_app(args, timeout=300, **jax_env(data))


def orbax_values(path):
    """`{item/index: array}` of a JAX checkpoint folder, read by orbax alone
    (as NumPy arrays, whatever devices it was saved from)."""
    import jax
    import orbax.checkpoint as ocp

    values = {}
    for item in ("model", "optimizer"):
        checkpointer = ocp.PyTreeCheckpointer()
        leaves = checkpointer.metadata(os.path.join(path, item)).item_metadata.tree
        arrays = checkpointer.restore(os.path.join(path, item), restore_args=jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), leaves))
        values.update({f"{item}/{i}": array for i, array in enumerate(arrays)})
    return values


def steps(output_dir):
    return sorted(int(name[5:]) for name in os.listdir(output_dir)
                  if name.startswith("ckpt_") and name[5:].isdigit())


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run."""
    output_dir = str(tmp_path_factory.mktemp("reference"))
    result = run_app(data, app_args(data, output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert steps(output_dir) == [4, 6]
    return output_dir


def metrics(output_dir, name="metrics.json"):
    with open(os.path.join(output_dir, name)) as f:
        return json.load(f)


def test_sigkill_during_a_save_then_rerun_ends_with_the_uninterrupted_weights(
    data, reference, tmp_path
):
    output_dir = str(tmp_path / "killed")
    temp = os.path.join(output_dir, "ckpt_4.orbax-checkpoint-tmp")
    killed = helpers.start_app(app_args(data, output_dir), tmp_path / "killed.log",
                               **jax_env(data))
    deadline = time.time() + 300
    while not os.path.exists(temp):
        assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.time() < deadline, "no save of step 4 within 300 s"
        time.sleep(0.002)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert os.path.isdir(temp) and steps(output_dir) == [2]  # Killed while saving step 4.

    resumed = run_app(data, app_args(data, output_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Removing {temp}, left by a run killed while saving a checkpoint." in resumed.stderr
    assert f"Resuming from {os.path.join(output_dir, 'ckpt_2')}" in resumed.stderr
    # Weights, optimizer state and dropout RNG state: all bit for bit.
    helpers.assert_same_weights(orbax_values(os.path.join(reference, "ckpt_6")),
                                orbax_values(os.path.join(output_dir, "ckpt_6")))
    assert metrics(output_dir)["loss"] == metrics(reference)["loss"]
    assert steps(output_dir) == [4, 6]


def _files_under(folder):
    return [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _largest_file(folder):
    return max(_files_under(folder), key=os.path.getsize)


def _alter_a_byte_that_orbax_reads_silently(checkpoint):
    """Flips a byte of the largest data file of `checkpoint`'s weights: the
    first one (every 1000th from byte 100) that orbax, which keeps no
    checksums, reads back without an error as other values. Returns the file."""
    before = orbax_values(checkpoint)
    path = _largest_file(os.path.join(checkpoint, "model", "ocdbt.process_0", "d"))
    with open(path, "rb") as f:
        original = f.read()
    for position in range(100, len(original), 1000):
        altered = bytearray(original)
        altered[position] ^= 0x10
        with open(path, "wb") as f:
            f.write(altered)
        try:
            after = orbax_values(checkpoint)
        except ValueError:  # Orbax noticed: that part no longer decodes.
            continue
        if any(not np.array_equal(before[name], after[name]) for name in before):
            return path
    pytest.fail(f"orbax noticed every altered byte of {path}")


def _truncate(path):
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[: len(content) // 2])


def _assert_last_line_and_no_traceback(stderr, line):
    assert stderr.strip().splitlines()[-1] == line
    assert "Traceback" not in stderr


def test_damaged_checkpoints_are_skipped_each_check_in_turn(data, reference, tmp_path):
    """The SHA-256 of each file, written after orbax committed the folder,
    notices a truncated file or an unfinished save before orbax reads it (so
    orbax prints nothing); the arrays' checksums notice an altered byte that
    orbax reads back silently and the files' digest cannot see (altered
    before the digest was taken)."""
    for folder in (os.path.join(reference, f"ckpt_{step}") for step in (4, 6)):
        with open(os.path.join(folder, "file_digest.json")) as f:
            recorded = json.load(f)
        assert recorded == {os.path.relpath(path, folder): _sha256(path)
                            for path in _files_under(folder) if not path.endswith("file_digest.json")}
    output_dir = str(tmp_path / "run")
    shutil.copytree(reference, output_dir)
    damaged = os.path.join(output_dir, "ckpt_6")
    altered = _alter_a_byte_that_orbax_reads_silently(damaged)
    with open(os.path.join(damaged, "file_digest.json")) as f:
        recorded = json.load(f)
    recorded[os.path.relpath(altered, damaged)] = _sha256(altered)
    with open(os.path.join(damaged, "file_digest.json"), "w") as f:
        json.dump(recorded, f)
    resumed = run_app(data, app_args(data, output_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Checkpoint {damaged} is damaged (model variable " in resumed.stderr
    assert " differs from its checksum); trying the previous one." in resumed.stderr
    assert f"Resuming from {os.path.join(output_dir, 'ckpt_4')}" in resumed.stderr
    assert f"Removing the damaged checkpoint {damaged}." in resumed.stderr
    assert "Traceback" not in resumed.stderr
    helpers.assert_same_weights(orbax_values(os.path.join(reference, "ckpt_6")),
                                orbax_values(damaged))

    truncated = _largest_file(os.path.join(damaged, "optimizer"))
    _truncate(truncated)
    os.remove(os.path.join(output_dir, "ckpt_4", "file_digest.json"))  # A save killed at its end.
    failed = run_app(data, app_args(data, output_dir))
    assert failed.returncode == 1
    assert (f"Checkpoint {damaged} is damaged ({os.path.relpath(truncated, damaged)} differs "
            "from its SHA-256 in file_digest.json); trying the previous one.") in failed.stderr
    assert (f"Checkpoint {os.path.join(output_dir, 'ckpt_4')} is damaged (no file_digest.json: "
            "its save did not finish); trying the previous one.") in failed.stderr
    _assert_last_line_and_no_traceback(failed.stderr, (
        f"run_pretraining: error: --output_dir={output_dir} holds checkpoints (steps [4, 6]) "
        "but none is readable (see the warnings). Move them away to start from step 0, or use "
        "another --output_dir."))


def test_eval_only_of_an_init_checkpoint_matches_the_eval_in_training(data, reference, tmp_path):
    """--nodo_train --do_eval --init_checkpoint=<a run's folder>: its newest
    checkpoint's weights, in a fresh folder that stays without checkpoints."""
    output_dir = str(tmp_path / "eval")
    result = run_app(data, app_args(data, output_dir, init_checkpoint=reference)
                     + ["--nodo_train"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Initializing the weights from {os.path.join(reference, 'ckpt_6')}" in result.stderr
    results = metrics(output_dir, "eval_results.json")
    assert results.pop("global_step") == 6
    in_training = {name[5:]: value for name, value in metrics(reference).items()
                   if name.startswith("eval_")}
    assert results == pytest.approx(in_training, rel=1e-6)
    assert steps(output_dir) == []


def test_resume_under_data_parallel_on_two_devices_and_the_output_dir_guards(
    data, reference, tmp_path
):
    """A checkpoint saved on 1 device resumes with the batch split over 2 (the
    arrays laid out like the variables): the weights of a resume on 1 device
    (the reference's), up to float rounding. Meanwhile the run holds the
    folder's lock; and its flags.json refuses a resume with other flags."""
    output_dir = str(tmp_path / "run")
    shutil.copytree(reference, output_dir)
    shutil.rmtree(os.path.join(output_dir, "ckpt_6"))
    log = tmp_path / "data_parallel.log"
    with open(log, "w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.jax_checkpoints_worker", "data_parallel", "-",
             *app_args(data, output_dir)],
            env=jax_env(data, devices=2), cwd=subprocesses.REPO,
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        lock = os.path.join(output_dir, _files.LOCK_FILE)
        deadline = time.time() + 120
        while f"pid {worker.pid} " not in open(lock).read():
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "no lock within 120 s"
            time.sleep(0.05)
        with pytest.raises(RuntimeError, match=rf"--output_dir={output_dir} is in use by "
                                               rf"another run \(pid {worker.pid} "):
            with _files.folder_lock(output_dir):
                pass
        assert worker.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        worker.kill()
    assert f"Resuming from {os.path.join(output_dir, 'ckpt_4')}" in log.read_text()
    helpers.assert_same_weights(orbax_values(os.path.join(reference, "ckpt_6")),
                                orbax_values(os.path.join(output_dir, "ckpt_6")),
                                rtol=1e-5, atol=1e-6)

    with flagsaver.flagsaver():
        flags.FLAGS(["run_pretraining", *app_args(data, output_dir)])
        with open(os.path.join(output_dir, run_folder.FLAGS_RECORD)) as f:
            record = dict(json.load(f), learning_rate=2e-2)
        with pytest.raises(ValueError, match=r"holds a run with other training flags \(.*\): "
                                             r"--learning_rate: 0\.01 → 0\.02\. Resume"):
            run_folder.check_training_record(output_dir, record)


def test_each_backend_refuses_the_other_ones_checkpoints(data, reference, tmp_path):
    import keras
    import tensorflow as tf

    from lamb.pretraining import checkpoints

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    tensorflow_run = str(tmp_path / "tensorflow_run")
    for output_dir, init_checkpoint, flag, folder in (
        (reference, None, "--output_dir", reference),
        (tensorflow_run, reference, "--init_checkpoint", reference),
    ):
        tensorflow_checkpoints = checkpoints.Checkpoints(
            output_dir, model, tf.distribute.get_strategy(), 2, "a test's model")
        with pytest.raises(ValueError, match=(
                rf"{flag}={folder} holds checkpoints of the JAX backend \(ckpt_<step> folders\), "
                r"which the TensorFlow backend cannot read: use KERAS_BACKEND=jax, or another "
                r"folder\.")):
            tensorflow_checkpoints.restore(init_checkpoint)
    tensorflow_checkpoints.save(4)
    assert checkpoints.checkpoint_steps(tensorflow_run) == [4]

    refused = run_app(data, app_args(data, tensorflow_run))
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1].endswith(
        f"--output_dir={tensorflow_run} holds checkpoints of the TensorFlow backend "
        "(ckpt-<step>.index files), which the JAX backend cannot read: use "
        "KERAS_BACKEND=tensorflow, or another folder.")
