"""`lamb.run_pretraining`: resume after SIGKILL, two phases, outputs, bad input."""

import json
import math
import os
import random
import re
import shutil
import signal
import socket
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("keras_hub")

from absl import flags  # noqa: E402
from absl.testing import flagsaver  # noqa: E402

from lamb import _app, _files, run_pretraining  # noqa: E402
from lamb.data import pretraining  # noqa: E402
from lamb.models import bert  # noqa: E402
from lamb.pretraining import checkpoints, evaluation, run_folder, train  # noqa: E402
from tests import pretraining_helpers as helpers  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return helpers.make_pretraining_data(str(tmp_path_factory.mktemp("bert_data")))


def run_in_process(args):
    """Runs the app's `main` in this process with `args` as its flags
    (`--flagfile` may name an installed flagfile, as on the command line)."""
    with flagsaver.flagsaver():
        flags.FLAGS(_app.resolve_flagfiles(["run_pretraining", *args]))
        run_pretraining.main(["run_pretraining"])


def scalars(output_dir):
    """`{tag: {step: value}}` from the TensorBoard event files of a run."""
    return helpers.tensorboard_scalars(os.path.join(output_dir, "train"))


def test_sigkill_then_rerun_ends_with_the_uninterrupted_weights(data, tmp_path):
    # Dropout on: the resumed run must also restore the dropout RNG state.
    args = dict(config="bert_config_dropout.json", num_train_steps=24)
    reference_dir, killed_dir = str(tmp_path / "reference"), str(tmp_path / "killed")
    reference = helpers.start_app(
        helpers.app_args(data, reference_dir, **args), tmp_path / "reference.log"
    )
    killed = helpers.start_app(helpers.app_args(data, killed_dir, **args), tmp_path / "killed.log")
    deadline = time.time() + 240
    while not os.path.exists(os.path.join(killed_dir, "checkpoint")):
        assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    killed_at = tf.train.latest_checkpoint(killed_dir)
    assert killed_at is not None and not os.path.exists(os.path.join(killed_dir, "metrics.json"))

    resumed = helpers.run_app(helpers.app_args(data, killed_dir, **args))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {killed_at}" in resumed.stderr
    assert reference.wait(timeout=240) == 0, (tmp_path / "reference.log").read_text()[-3000:]

    final = "ckpt-24"
    helpers.assert_same_weights(
        helpers.checkpoint_values(os.path.join(reference_dir, final)),
        helpers.checkpoint_values(os.path.join(killed_dir, final)),
    )
    with open(os.path.join(killed_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(reference_dir, "metrics.json")) as f:
        assert json.load(f)["loss"] == metrics["loss"]
    assert metrics["global_step"] == 24


@pytest.fixture(scope="module")
def phase1(data, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("phase1"))
    run_in_process(helpers.app_args(data, output_dir, num_train_steps=8))
    return output_dir


@pytest.fixture(scope="module")
def long_data(data, tmp_path_factory):
    """The corpus again as records of sequence length 64 (phase 2)."""
    directory = str(tmp_path_factory.mktemp("bert_data_64"))
    vocab = pretraining.load_vocab(data["vocab"])
    documents = pretraining.read_documents([data["corpus"]], vocab, do_lower_case=True)
    instances = pretraining.create_training_instances(
        documents, vocab, 64, 1, 0.1, 0.15, 10, False, random.Random(2)
    )
    path = os.path.join(directory, "data-0.tfrecord")
    pretraining.write_instance_to_example_files(instances, vocab, 64, 10, [path])
    return path


def test_outputs_metrics_json_and_tensorboard(phase1):
    with open(os.path.join(phase1, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["global_step"] == 8
    for key in ("loss", "masked_lm_accuracy", "next_sentence_accuracy", "masked_lm_loss"):
        assert np.isfinite(metrics[key])
    assert sorted(os.path.basename(p) for p in tf.train.get_checkpoint_state(phase1)
                  .all_model_checkpoint_paths) == ["ckpt-4", "ckpt-8"]
    logged = scalars(phase1)
    for tag in ("loss", "masked_lm_accuracy", "next_sentence_accuracy", "learning_rate"):
        assert sorted(logged[tag]) == [2, 4, 6, 8]
    assert logged["loss"][8] == pytest.approx(metrics["loss"])
    # Linear warmup over 3 steps to 1e-2, then linear decay to 0 at step 8.
    assert logged["learning_rate"][2] == pytest.approx(1e-2 * 2 / 3, rel=1e-5)
    assert logged["learning_rate"][6] == pytest.approx(1e-2 * (8 - 6) / 8, rel=1e-5)


def test_cosine_decay_and_start_warmup_step_flags(data, tmp_path):
    """--decay_schedule=cosine --cosine_alpha --start_warmup_step: the logged
    rates are the hand-computed ones, and flags.json records them."""
    output_dir = str(tmp_path / "out")
    run_in_process(helpers.app_args(
        data, output_dir, learning_rate=1e-2, num_train_steps=4, num_warmup_steps=2,
        save_checkpoints_steps=4, iterations_per_loop=1, decay_schedule="cosine",
        cosine_alpha=0.1, start_warmup_step=1,
    ))
    logged = scalars(output_dir)["learning_rate"]
    expected = {}
    for step in range(1, 5):
        t = max(step - 1, 0)  # The schedule starts at step 1.
        cosine = 0.5 * (1 + math.cos(math.pi * t / 4))
        expected[step] = 1e-2 * t / 2 if t < 2 else 1e-2 * (0.9 * cosine + 0.1)
    assert {step: logged[step] for step in expected} == pytest.approx(expected, rel=1e-5)
    with open(os.path.join(output_dir, "flags.json")) as f:
        recorded = json.load(f)
    assert (recorded["decay_schedule"], recorded["cosine_alpha"], recorded["start_warmup_step"]) == (
        "cosine", 0.1, 1)


def test_phase_two_starts_from_phase_one_weights_and_rewarms(data, phase1, long_data, tmp_path):
    phase2 = str(tmp_path / "phase2")
    args = helpers.app_args(
        data, phase2, input_file=long_data, max_seq_length=64, max_predictions_per_seq=10,
        train_batch_size=8, learning_rate=4e-3, num_train_steps=4, num_warmup_steps=2,
        save_checkpoints_steps=2, iterations_per_loop=1, init_checkpoint=phase1,
        log_trust_ratios=True,
    )
    run_in_process(args)
    logged = scalars(phase2)
    assert logged["learning_rate"][1] == pytest.approx(4e-3 / 2, rel=1e-5)  # Re-warmed.
    assert any(tag.startswith("trust_ratio/transformer_layer_0/") for tag in logged)

    # The weights phase 2 starts from are phase 1's last ones.
    with flagsaver.flagsaver():
        flags.FLAGS(["run_pretraining", *args[:-1], f"--output_dir={tmp_path / 'fresh'}"])
        config = bert.load_bert_config(flags.FLAGS.bert_config_file)
        strategy = tf.distribute.get_strategy()
        model = train.build_model(config)
        restored = checkpoints.Checkpoints(
            str(tmp_path / "fresh"), model, strategy, max_to_keep=5,
            model_description="the test's model",
        )
        assert restored.restore(phase1) == 0
        assert int(model.optimizer.iterations.numpy()) == 0
    saved = helpers.model_weights(os.path.join(phase1, "ckpt-8"))
    for index, variable in enumerate(model.variables):
        np.testing.assert_array_equal(
            variable.numpy(), saved[f"model/{index}/.ATTRIBUTES/VARIABLE_VALUE"]
        )


def _write_example(path, drop=None, seq=helpers.SEQ_LENGTH, preds=helpers.PREDICTIONS):
    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    features = {
        "input_ids": ints([2] * seq), "input_mask": ints([1] * seq),
        "segment_ids": ints([0] * seq), "masked_lm_positions": ints([1] * preds),
        "masked_lm_ids": ints([5] * preds),
        "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0] * preds)),
        "next_sentence_labels": ints([0]),
    }
    features.pop(drop, None)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(3):
            example = tf.train.Example(features=tf.train.Features(feature=features))
            writer.write(example.SerializeToString())


def _bad_inputs(data, tmp):
    """(flag overrides, expected message) for each kind of bad input."""
    garbage = tmp / "garbage.tfrecord"
    garbage.write_bytes(b"this is not a TFRecord file at all" * 10)
    truncated = tmp / "truncated.tfrecord"
    _write_example(truncated)
    truncated.write_bytes(truncated.read_bytes()[:-40])
    no_weights = tmp / "no_weights.tfrecord"
    _write_example(no_weights, drop="masked_lm_weights")
    unknown_key = tmp / "unknown_key.json"
    helpers.write_bert_config(unknown_key, 105, hidden_layers=3)
    missing_key = tmp / "missing_key.json"
    config = json.loads((tmp / "unknown_key.json").read_text())
    config.pop("hidden_layers")
    config.pop("type_vocab_size")
    missing_key.write_text(json.dumps(config))
    small_vocab = tmp / "small_vocab.json"
    helpers.write_bert_config(small_vocab, 10)
    return [
        (dict(input_file=str(tmp / "absent-*.tfrecord")), r"absent-\*\.tfrecord.*matches no file"),
        (dict(input_file=str(garbage)), r"garbage\.tfrecord: corrupt TFRecord"),
        # Found by reading every record, after the check of the training flags.
        (dict(input_file=str(truncated), allow_flag_changes=True),
         r"truncated\.tfrecord: corrupt TFRecord"),
        (dict(input_file=str(no_weights)),
         r"no_weights\.tfrecord, record 0 \(counting from 0\): no feature 'masked_lm_weights'"),
        (dict(max_seq_length=64), r"'input_ids' has 32 values .* --max_seq_length asks for 64"),
        (dict(bert_config_file=str(unknown_key)), r"unknown_key\.json: unknown keys \['hidden_layers'\]"),
        (dict(bert_config_file=str(missing_key)), r"missing keys \['type_vocab_size'\]"),
        (dict(bert_config_file=str(small_vocab)),
         r"input_ids holds \d+; allowed: 0 to 9 \(vocab_size=10 of .*small_vocab\.json\)"),
        (dict(train_batch_size=15, strategy="mirrored"),
         r"--train_batch_size=15 is not divisible by the 2 replicas of --strategy=mirrored x "
         r"--gradient_accumulation_steps=1"),
        (dict(train_batch_size=16, gradient_accumulation_steps=3),
         r"--train_batch_size=16 is not divisible by the 1 replicas .* x --gradient_accumulation_steps=3"),
    ]


def _file_contents(directory):
    """`{name: content}` of the files in `directory`, but the lock (which names
    the last run's process)."""
    return {name: open(os.path.join(directory, name), "rb").read()
            for name in os.listdir(directory)
            if os.path.isfile(os.path.join(directory, name)) and name != _files.LOCK_FILE}


def test_bad_input_fails_before_training_and_keeps_output_dir(data, phase1, tmp_path):
    assert len(tf.config.list_logical_devices("CPU")) == 2  # conftest's split.
    before = _file_contents(phase1)
    for overrides, message in _bad_inputs(data, tmp_path):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            run_in_process(helpers.app_args(data, phase1, **overrides))
    assert _file_contents(phase1) == before


def test_bf16_with_gradient_accumulation_counts_optimizer_steps(data, tmp_path):
    output_dir = str(tmp_path)
    run_in_process(helpers.app_args(
        data, output_dir, num_train_steps=4, save_checkpoints_steps=2, iterations_per_loop=2,
        gradient_accumulation_steps=2, mixed_precision="bf16", optimizer="adamw",
    ))
    with open(os.path.join(output_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["global_step"] == 4 and np.isfinite(metrics["loss"])
    values = helpers.checkpoint_values(os.path.join(output_dir, "ckpt-4"))
    assert values["global_step/.ATTRIBUTES/VARIABLE_VALUE"] == 4
    # The optimizer counts optimizer steps, not micro-batches (and no skipped steps).
    assert sorted(int(v) for k, v in values.items()
                  if k.startswith("optimizer/") and v.shape == () and v.dtype.kind == "i") == [0, 4]
    assert metrics["skipped_steps"] == 0
    assert sorted(scalars(output_dir)["loss"]) == [2, 4]


def test_device_loops_end_at_checkpoint_log_and_last_steps(data, tmp_path, caplog):
    """Checkpoints every 3 steps with the default 1000-step logging loop and
    a 7-step run: checkpoints at 3 and 6 and the end, one log line, "step 7/7"."""
    output_dir = str(tmp_path)
    with caplog.at_level("INFO"):
        run_in_process(helpers.app_args(
            data, output_dir, num_train_steps=7, num_warmup_steps=1, save_checkpoints_steps=3,
            iterations_per_loop=1000, keep_checkpoint_max=5,
        ))
    assert sorted(os.path.basename(p) for p in tf.train.get_checkpoint_state(output_dir)
                  .all_model_checkpoint_paths) == ["ckpt-3", "ckpt-6", "ckpt-7"]
    for step in (3, 6, 7):
        values = helpers.checkpoint_values(os.path.join(output_dir, f"ckpt-{step}"))
        assert values["global_step/.ATTRIBUTES/VARIABLE_VALUE"] == step
        assert step in [int(v) for k, v in values.items() if k.startswith("optimizer/")
                        and v.shape == () and v.dtype.kind == "i"]
    steps = [record.getMessage().split(":")[0] for record in caplog.records
             if record.getMessage().startswith("step ")]
    assert steps == ["step 7/7"]
    assert sorted(scalars(output_dir)["loss"]) == [7]
    with open(os.path.join(output_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["global_step"] == 7 and metrics["examples_per_second"] > 0


def test_readme_cpu_demo_command_shortened(data, tmp_path, monkeypatch):
    """The README's CPU demo (its installed flagfile, by name, and tiny BERT) with
    a small batch and run, from another folder."""
    output_dir = str(tmp_path)
    monkeypatch.chdir(tmp_path)
    run_in_process([
        "--flagfile=demo_cpu.flags", "--optimizer=LAMB",
        f"--input_file={data['dir']}/data-*.tfrecord", f"--output_dir={output_dir}",
        "--train_batch_size=16", "--num_train_steps=4", "--num_warmup_steps=1",
        "--save_checkpoints_steps=2",
    ])
    with open(os.path.join(output_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["global_step"] == 4 and np.isfinite(metrics["masked_lm_loss"])
    assert tf.train.latest_checkpoint(output_dir).endswith("ckpt-4")


def _records_with_bad_record_5(data, path, feature, value):
    """The first 8 records of the test data; record 5's `feature` gets `value`
    in its second place."""
    records = [record.numpy() for record in tf.data.TFRecordDataset(data["records"][0]).take(8)]
    example = tf.train.Example.FromString(records[5])
    values = example.features.feature[feature]
    kind = values.float_list if feature == "masked_lm_weights" else values.int64_list
    kind.value[min(1, len(kind.value) - 1)] = value
    records[5] = example.SerializeToString()
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def test_bad_values_in_record_5_stop_the_run_before_training_naming_file_and_record(
    data, tmp_path
):
    vocab_size = len(open(data["vocab"]).read().split())
    for feature, value in [
        ("input_ids", vocab_size), ("input_ids", -1), ("masked_lm_ids", vocab_size + 7),
        ("segment_ids", 5), ("masked_lm_positions", helpers.SEQ_LENGTH),
        ("next_sentence_labels", 7), ("input_mask", 2), ("masked_lm_weights", float("nan")),
        ("masked_lm_weights", 2.0),
    ]:
        path = tmp_path / "bad.tfrecord"
        _records_with_bad_record_5(data, path, feature, value)
        with pytest.raises(ValueError, match=rf"bad\.tfrecord, record 5 \(counting from 0\): "
                                             rf"{feature} holds {value}; allowed: "):
            run_in_process(helpers.app_args(data, str(tmp_path / "out"), input_file=str(path),
                                            num_train_steps=2, num_warmup_steps=1))
        # --noverify_input_files: the first record only.
        assert pretraining.check_input_files(
            [str(path)], helpers.SEQ_LENGTH, helpers.PREDICTIONS, read_all_records=False,
            vocab_size=vocab_size, type_vocab_size=2,
        ) == 1
    assert not tf.train.latest_checkpoint(str(tmp_path / "out"))


def test_nan_infinite_and_out_of_range_flags_fail_at_once_naming_the_flag(data, tmp_path):
    output_dir = tmp_path / "out"
    for flag, value, allowed in [
        ("learning_rate", "nan", r"a finite number in \[0.0, inf\)"),
        ("learning_rate", "inf", r"a finite number in \[0.0, inf\)"),
        ("end_learning_rate", "nan", r"a finite number in \[0.0, inf\)"),
        ("poly_power", "nan", r"a finite number in \[0.0, inf\)"),
        ("weight_decay", "nan", r"a finite number in \[0.0, inf\)"),
        ("clip_norm", "-1", r"a finite number in \[0.0, inf\)"),
        ("beta_1", "1.0", r"a finite number in \[0.0, 1.0\)"),
        ("beta_2", "nan", r"a finite number in \[0.0, 1.0\)"),
        ("epsilon", "0", r"a finite number in \(0.0, inf\)"),
        ("seed", "-1", r"an integer in \[0, 4294967295\]"),
        ("num_warmup_steps", "-1", r"an integer in \[0, inf\)"),
        ("start_warmup_step", "-1", r"an integer in \[0, inf\)"),
        ("cosine_alpha", "1.5", r"a finite number in \[0.0, 1.0\]"),
        ("keep_checkpoint_max", "0", r"an integer in \[1, inf\)"),
    ]:
        with pytest.raises(ValueError, match=rf"`--{flag}` must be {allowed}; received "
                                             rf"--{flag}={value}"):
            run_in_process(helpers.app_args(data, str(output_dir), **{flag: value}))
    with pytest.raises(ValueError, match=r"--num_warmup_steps=13 must be in \[0, --num_train_steps=12\]"):
        run_in_process(helpers.app_args(data, str(output_dir), num_warmup_steps=13))
    # Flags set in Python rather than parsed: a string is neither a number nor a bool.
    with flagsaver.flagsaver():
        flags.FLAGS(["run_pretraining", *helpers.app_args(data, str(output_dir))])
        flags.FLAGS.verify_input_files = "no"
        with pytest.raises(ValueError, match="`--verify_input_files` must be True or False"):
            run_pretraining.main([])
    assert not output_dir.exists()


def test_second_run_on_the_output_dir_stops_at_once_and_sigkill_frees_the_lock(data, tmp_path):
    output_dir = str(tmp_path / "out")
    lock_file = tmp_path / "out" / _files.LOCK_FILE
    first = helpers.start_app(
        helpers.app_args(data, output_dir, num_train_steps=100000, save_checkpoints_steps=100000),
        tmp_path / "first.log",
    )
    try:
        deadline = time.time() + 120
        while not (lock_file.exists() and f"pid {first.pid} " in lock_file.read_text()):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "the first run took no lock within 120 s"
            time.sleep(0.05)
        # A second run, whatever its flags, stops before any work.
        with pytest.raises(RuntimeError, match=rf"--output_dir={output_dir} is in use by another "
                                               rf"run \(pid {first.pid} on host {socket.gethostname()}"):
            run_in_process(helpers.app_args(data, output_dir, num_train_steps=4))
        # Removing run.lock does not free the folder: the lock is on the folder.
        lock_file.unlink()
        with pytest.raises(RuntimeError, match=rf"--output_dir={output_dir} is in use by another "
                                               r"run \(its pid unknown"):
            run_in_process(helpers.app_args(data, output_dir, num_train_steps=4))
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    with _files.folder_lock(output_dir):  # The OS freed the killed run's lock.
        assert lock_file.read_text() == f"pid {os.getpid()} on host {socket.gethostname()}\n"


def test_resume_with_other_training_flags_is_refused_listing_them_unless_allowed(
    data, phase1, tmp_path
):
    output_dir = str(tmp_path / "run")
    shutil.copytree(phase1, output_dir)
    with open(os.path.join(output_dir, "flags.json")) as f:
        recorded = json.load(f)
    assert recorded["learning_rate"] == 1e-2 and recorded["train_batch_size"] == 16
    assert recorded["input_files"] == data["records"] and recorded["bert_config"]["hidden_size"] == 32
    changed = dict(num_train_steps=8, learning_rate=2e-2, train_batch_size=8)
    with pytest.raises(ValueError, match=(
        rf"--output_dir={output_dir} holds a run with other training flags \(.*flags.json\): "
        r"--learning_rate: 0.01 → 0.02; --train_batch_size: 16 → 8\. Resume with the same "
        r"flags, use another --output_dir, or add --allow_flag_changes\.")):
        run_in_process(helpers.app_args(data, output_dir, **changed))
    # Other logging and checkpoint intervals are no training flags.
    run_in_process(helpers.app_args(data, output_dir, num_train_steps=8, iterations_per_loop=1,
                                    save_checkpoints_steps=2))
    run_in_process(helpers.app_args(data, output_dir, allow_flag_changes=True, **changed))
    with open(os.path.join(output_dir, "flags.json")) as f:
        assert json.load(f) == {**recorded, "learning_rate": 2e-2, "train_batch_size": 8}


def test_lamb16_moment_rounding_reaches_the_optimizer_and_is_a_training_flag(data, tmp_path):
    # Feed-forward kernels of 32 x 128: at LAMB16's min_8bit_size, so their moments are 8-bit.
    with open(os.path.join(data["dir"], "bert_config.json")) as f:
        config = {**json.load(f), "intermediate_size": 128}
    config_file = tmp_path / "bert_config.json"
    config_file.write_text(json.dumps(config))
    lamb16 = dict(optimizer="lamb16", bert_config_file=config_file)
    runs = {}
    for rounding in ("nearest", "stochastic"):
        output_dir = str(tmp_path / rounding)
        run_in_process(helpers.app_args(data, output_dir, num_train_steps=4,
                                        lamb16_moment_rounding=rounding, **lamb16))
        with open(os.path.join(output_dir, "flags.json")) as f:
            recorded = json.load(f)
        # Recorded when not the default, so that earlier lamb16 runs' records still match.
        assert recorded.get("lamb16_moment_rounding") == (
            "stochastic" if rounding == "stochastic" else None)
        runs[rounding] = helpers.model_weights(tf.train.latest_checkpoint(output_dir))
    # The same seed and batches: only the rounding of v's codes tells the runs apart.
    assert any(not np.array_equal(runs["nearest"][name], runs["stochastic"][name])
               for name in runs["nearest"])
    with pytest.raises(ValueError, match=r"other training flags .*--lamb16_moment_rounding"):
        run_in_process(helpers.app_args(data, str(tmp_path / "stochastic"), num_train_steps=8,
                                        **lamb16))


def test_output_dir_that_is_a_file_fails_before_any_work(data, tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    with pytest.raises(ValueError, match=rf"--output_dir={path} is a file, not a folder\."):
        run_in_process(helpers.app_args(data, str(path)))
    with pytest.raises(ValueError, match=rf"--output_dir={path}/run: cannot create or write "
                                         r"files in this folder \("):
        run_in_process(helpers.app_args(data, str(path / "run")))
    assert path.read_text() == "not a folder"


def _truncate(path):
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[: len(content) // 2])


def test_truncated_checkpoint_falls_back_to_the_previous_one(data, phase1, tmp_path, caplog):
    output_dir = str(tmp_path / "run")
    shutil.copytree(phase1, output_dir)
    damaged = os.path.join(output_dir, "ckpt-8")
    _truncate(damaged + ".data-00000-of-00001")
    with caplog.at_level("INFO"):
        run_in_process(helpers.app_args(data, output_dir, num_train_steps=8))
    messages = [record.getMessage() for record in caplog.records]
    assert f"Checkpoint {damaged} is damaged (IndexError: Read less bytes than requested); " \
           "trying the previous one." in messages
    assert f"Resuming from {os.path.join(output_dir, 'ckpt-4')}" in messages
    # Steps 5-8 again, as the uninterrupted run trained them.
    helpers.assert_same_weights(helpers.checkpoint_values(os.path.join(phase1, "ckpt-8")),
                                helpers.checkpoint_values(damaged))
    assert tf.train.latest_checkpoint(output_dir) == damaged

    for step in (4, 8):
        _truncate(os.path.join(output_dir, f"ckpt-{step}.data-00000-of-00001"))
    with pytest.raises(ValueError, match=rf"--output_dir={output_dir} holds checkpoints "
                                         r".*steps \[4, 8\]\) but none is readable"):
        run_in_process(helpers.app_args(data, output_dir, num_train_steps=8))


def test_damaged_state_file_and_stale_temp_folder(data, phase1, tmp_path, caplog):
    output_dir = str(tmp_path / "run")
    shutil.copytree(phase1, output_dir)
    state = os.path.join(output_dir, "checkpoint")
    with open(state, "w") as f:
        f.write('model_checkpoint_path: "ckpt-8"\nall_model_check')  # Cut short.
    temp = os.path.join(output_dir, "ckpt-12_temp")  # Left by a run killed while saving.
    os.makedirs(temp)
    open(os.path.join(temp, "part-00000-of-00001.data-00000-of-00001"), "wb").close()
    with caplog.at_level("INFO"):
        run_in_process(helpers.app_args(data, output_dir, num_train_steps=8))
    messages = [record.getMessage() for record in caplog.records]
    assert f"{state} is damaged; looking for the checkpoints themselves." in messages
    assert f"Resuming from {os.path.join(output_dir, 'ckpt-8')}" in messages
    assert not os.path.exists(temp)
    restored = tf.train.get_checkpoint_state(output_dir)
    assert [os.path.basename(p) for p in restored.all_model_checkpoint_paths] == ["ckpt-4", "ckpt-8"]
    assert os.path.basename(restored.model_checkpoint_path) == "ckpt-8"


def test_steps_with_a_non_finite_gradient_are_skipped_and_counted(data, tmp_path):
    """A NaN masked-LM weight in record 5 (unchecked: --noverify_input_files)
    makes the loss and gradient of each batch holding it NaN: those steps are
    skipped, counted in metrics.json, and the weights stay finite."""
    path = tmp_path / "bad.tfrecord"
    _records_with_bad_record_5(data, path, "masked_lm_weights", float("nan"))
    output_dir = str(tmp_path / "out")
    run_in_process(helpers.app_args(
        data, output_dir, input_file=str(path), train_batch_size=4, num_train_steps=6,
        num_warmup_steps=1, iterations_per_loop=3,
    ) + ["--noverify_input_files"])
    with open(os.path.join(output_dir, "metrics.json")) as f:
        metrics = json.load(f)
    # Record 5 is in one batch of 4 of each pass over the 8 records (3 passes).
    assert 1 <= metrics["skipped_steps"] <= 3, metrics
    weights = helpers.model_weights(tf.train.latest_checkpoint(output_dir))
    assert all(np.isfinite(value).all() for value in weights.values())


def test_a_finished_run_says_it_has_nothing_to_do(data, phase1, tmp_path, caplog):
    output_dir = str(tmp_path / "run")
    shutil.copytree(phase1, output_dir)
    before = _file_contents(output_dir)
    with caplog.at_level("INFO"):
        run_in_process(helpers.app_args(data, output_dir, num_train_steps=8))
    assert (f"Nothing to do: --output_dir={output_dir} is already at step 8 "
            "(--num_train_steps=8).") in caplog.messages
    assert _file_contents(output_dir) == before
    caplog.clear()
    with caplog.at_level("INFO"):
        run_in_process(helpers.app_args(data, output_dir, num_train_steps=8, init_checkpoint=phase1,
                                        allow_flag_changes=True))
    assert (f"--init_checkpoint={phase1} has no effect: --output_dir={output_dir} holds "
            "checkpoints of its own, resumed instead.") in caplog.messages


@pytest.mark.parametrize("overrides, warnings", [
    (dict(optimizer="adamw", log_trust_ratios=True, tpu_name="local",
          lamb16_moment_rounding="stochastic"), [
        "--log_trust_ratios has no effect with --optimizer=adamw, which has no trust ratio "
        "(lamb, lamb16 and lars do).",
        "--lamb16_moment_rounding has no effect with --optimizer=adamw (only lamb16).",
        "--tpu_name has no effect with --strategy=default (only with tpu).",
    ]),
    (dict(optimizer="lars", beta_1=0.8, epsilon=1e-8), [
        "--beta_1 has no effect with --optimizer=lars (momentum, no moments).",
        "--epsilon has no effect with --optimizer=lars (momentum, no moments).",
    ]),
])
def test_flags_without_effect_are_warned_about(data, phase1, caplog, overrides, warnings):
    """(Before the run stops: phase 1 was trained with other flags.)"""
    with caplog.at_level("WARNING"), pytest.raises(ValueError, match="other training flags"):
        run_in_process(helpers.app_args(data, phase1, **overrides))
    assert [m for m in caplog.messages if "has no effect" in m] == warnings


def test_positional_arguments_are_refused():
    with pytest.raises(ValueError, match=r"unexpected arguments \['train'\]: every setting is a --flag"):
        run_pretraining.main(["run_pretraining", "train"])


def strict_json(path):
    """The JSON file at `path`, read by a parser that refuses NaN and Infinity."""
    def refuse(constant):
        raise ValueError(f"{path}: {constant} is not JSON")
    with open(path) as f:
        return json.loads(f.read(), parse_constant=refuse)


def test_json_files_are_strict_non_finite_values_written_as_null(tmp_path):
    path = str(tmp_path / "metrics.json")
    run_folder.write_json(path, {"loss": float("nan"), "norms": [1.5, float("inf")], "step": 3})
    assert strict_json(path) == {"loss": None, "norms": [1.5, None], "step": 3}


def test_eval_metrics_match_numpy_on_a_fixed_batch(data):
    """Masked-LM and next-sentence loss and accuracy of two fixed batches,
    against the same means computed in NumPy from the model's logits."""
    config = bert.load_bert_config(os.path.join(data["dir"], "bert_config.json"))
    keras.utils.set_random_seed(3)
    model = bert.BertPretrainer(config)
    model.compile(optimizer="sgd")
    dataset = pretraining.make_eval_dataset(
        data["records"][1], 4, helpers.SEQ_LENGTH, helpers.PREDICTIONS, max_steps=2
    )
    assert evaluation.count_batches(dataset) == 2
    names = ("mlm_losses", "mlm_hits", "mlm_weights", "ns_losses", "ns_hits")
    expected = {name: [] for name in names}
    for inputs, labels in dataset:
        outputs = {name: np.asarray(value, np.float64) for name, value in model(inputs).items()}
        heads = (("mlm", labels["masked_lm_ids"], outputs["masked_lm_logits"]),
                 ("ns", labels["next_sentence_labels"], outputs["next_sentence_logits"]))
        for kind, ids, logits in heads:
            log_probs = logits - logits.max(-1, keepdims=True)
            log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
            ids = np.asarray(ids)[..., None]
            expected[f"{kind}_losses"].append(-np.take_along_axis(log_probs, ids, -1)[..., 0])
            expected[f"{kind}_hits"].append(logits.argmax(-1) == ids[..., 0])
        expected["mlm_weights"].append(np.asarray(labels["masked_lm_weights"]))
    weights = np.concatenate(expected["mlm_weights"])
    assert 0 < weights.sum() < weights.size  # Padding predictions are left out.
    results = evaluation.evaluate(model, dataset, steps=2)

    def weighted_mean(values):
        return (np.concatenate(values) * weights).sum() / weights.sum()

    assert results == pytest.approx({
        "masked_lm_loss": weighted_mean(expected["mlm_losses"]),
        "masked_lm_accuracy": weighted_mean(expected["mlm_hits"]),
        "next_sentence_loss": np.concatenate(expected["ns_losses"]).mean(),
        "next_sentence_accuracy": np.concatenate(expected["ns_hits"]).mean(),
    }, rel=1e-5)


EVAL_RUN = dict(input_file=None, eval_input_file=None, num_train_steps=8, save_checkpoints_steps=4,
                iterations_per_loop=2, eval_every_steps=4, eval_batch_size=8, max_eval_steps=3)


def eval_args(data, output_dir, **overrides):
    """A run that trains on data-0 and evaluates on data-1 (other records)."""
    values = dict(EVAL_RUN, input_file=data["records"][0], eval_input_file=data["records"][1])
    values.update(overrides)
    return helpers.app_args(data, output_dir, **values) + ["--do_eval"]


@pytest.fixture(scope="module")
def eval_run(data, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("eval_run"))
    run_in_process(eval_args(data, output_dir))
    return output_dir


def eval_scalars(output_dir):
    return helpers.tensorboard_scalars(os.path.join(output_dir, "eval"))


def test_periodic_eval_in_tensorboard_log_and_strict_metrics_json(eval_run):
    metrics = strict_json(os.path.join(eval_run, "metrics.json"))
    logged = eval_scalars(eval_run)
    assert sorted(logged) == sorted(evaluation.METRICS)
    for name in evaluation.METRICS:
        assert sorted(logged[name]) == [4, 8]
        assert metrics[f"eval_{name}"] == pytest.approx(logged[name][8])
    assert 0 <= metrics["eval_masked_lm_accuracy"] <= 1 and metrics["eval_masked_lm_loss"] > 0
    assert "target_mlm_accuracy_reached_at_step" not in metrics


def test_eval_only_on_a_checkpoint_matches_the_eval_in_training(data, eval_run, tmp_path):
    """--nodo_train --do_eval: of the output_dir's newest checkpoint, or of
    --init_checkpoint in a fresh folder; the same numbers as in training."""
    at_step_8 = {name: values[8] for name, values in eval_scalars(eval_run).items()}
    folder = str(tmp_path / "copy")
    shutil.copytree(eval_run, folder)
    fresh = str(tmp_path / "fresh")
    for output_dir, extra in ((folder, []), (fresh, [f"--init_checkpoint={eval_run}"])):
        run_in_process(eval_args(data, output_dir) + ["--nodo_train"] + extra)
        results = strict_json(os.path.join(output_dir, "eval_results.json"))
        assert results.pop("global_step") == 8
        assert results == pytest.approx(at_step_8, rel=1e-6)
    assert tf.train.latest_checkpoint(folder).endswith("ckpt-8")
    assert not tf.train.latest_checkpoint(fresh)
    with pytest.raises(ValueError, match="--nodo_train --do_eval evaluates a checkpoint"):
        run_in_process(eval_args(data, str(tmp_path / "empty")) + ["--nodo_train"])


def test_target_accuracy_stops_training_and_a_resume_evaluates_as_uninterrupted(
    data, eval_run, tmp_path, caplog
):
    """The target: the accuracy the uninterrupted run had at step 4 (reached
    there). Rerun with the target: nothing to do; without: it resumes at
    step 4 and ends with the uninterrupted run's weights and evaluation."""
    reference = eval_scalars(eval_run)
    target = reference["masked_lm_accuracy"][4]
    output_dir = str(tmp_path / "target")
    run_in_process(eval_args(data, output_dir, target_mlm_accuracy=target))
    metrics = strict_json(os.path.join(output_dir, "metrics.json"))
    assert metrics["global_step"] == 4
    assert metrics["target_mlm_accuracy_reached_at_step"] == 4
    assert metrics["target_mlm_accuracy_reached_at_examples"] == 4 * 16
    assert metrics["eval_masked_lm_accuracy"] == pytest.approx(target)
    assert tf.train.latest_checkpoint(output_dir).endswith("ckpt-4")
    with caplog.at_level("INFO"):
        run_in_process(eval_args(data, output_dir, target_mlm_accuracy=target))
    assert any("--target_mlm_accuracy reached" in message for message in caplog.messages)

    run_in_process(eval_args(data, output_dir))
    resumed = eval_scalars(output_dir)
    for name in evaluation.METRICS:
        assert resumed[name][8] == reference[name][8], name
    helpers.assert_same_weights(helpers.model_weights(os.path.join(eval_run, "ckpt-8")),
                                helpers.model_weights(os.path.join(output_dir, "ckpt-8")))


def test_eval_under_mirrored_strategy_over_two_devices(data, eval_run, tmp_path):
    output_dir = str(tmp_path / "mirrored")
    result = helpers.run_app(eval_args(
        data, output_dir, num_train_steps=4, save_checkpoints_steps=2, eval_every_steps=2,
        strategy="mirrored", num_cpu_devices=2,
    ))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "oneDNN supports DT_INT64" not in result.stderr  # Hidden with the start-up noise.
    logged = eval_scalars(output_dir)
    assert sorted(logged["masked_lm_accuracy"]) == [2, 4]
    assert all(np.isfinite(value) for values in logged.values() for value in values.values())


def test_diverging_run_stops_naming_step_loss_and_flag_and_keeps_the_last_good_checkpoint(
    data, tmp_path
):
    output_dir = str(tmp_path / "out")
    result = helpers.run_app(helpers.app_args(
        data, output_dir, learning_rate=1e6, save_checkpoints_steps=2, iterations_per_loop=1,
        divergence_steps=2,
    ))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    match = re.fullmatch(
        r"run_pretraining: error: training diverged at step (\d+): .* for 2 steps \(last finite "
        r"loss [\d.]+ at step \d+\); lower --learning_rate=1e\+06, or raise --divergence_steps=2 "
        r"\(0: never stop\)\. Newest checkpoint kept: step \d+\.", last)
    assert match, last
    with open(os.path.join(output_dir, "metrics.json")) as f:
        metrics = json.load(f, parse_constant=pytest.fail)  # Strict JSON.
    assert metrics["diverged_at_step"] == metrics["global_step"] == int(match.group(1))
    assert metrics["diverged"] in last
    kept = tf.train.latest_checkpoint(output_dir)
    assert kept.endswith(f"ckpt-{last.split('step ')[-1].rstrip('.')}")
    # Saved before the loss went bad (later checkpoint steps were refused).
    assert "No checkpoint at step" in result.stderr
    assert all(np.isfinite(value).all() for value in helpers.model_weights(kept).values())


def test_bad_record_met_in_training_without_verification_is_named(data, tmp_path):
    """--noverify_input_files checks only the first record: a token id past
    the vocabulary in record 5 stops training with the file and record."""
    vocab_size = len(open(data["vocab"]).read().split())
    path = tmp_path / "bad.tfrecord"
    _records_with_bad_record_5(data, path, "input_ids", vocab_size + 3)
    expected = (rf"training stopped at a bad input record: .*bad\.tfrecord, record 5 \(counting "
                rf"from 0\): input_ids holds {vocab_size + 3}")
    with pytest.raises(ValueError, match=expected):
        run_in_process(helpers.app_args(data, str(tmp_path / "out"), input_file=str(path),
                                        train_batch_size=4, num_train_steps=4, num_warmup_steps=1)
                       + ["--noverify_input_files"])


def test_binary_flagfile_is_a_one_line_error(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_bytes(b"\x00\xff\xfe\x01--output_dir=x\n")
    result = helpers.run_app([f"--flagfile={flagfile}"], timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"run_pretraining: error: --flagfile={flagfile} is not UTF-8 text (byte 1: invalid start "
        "byte); a flagfile holds one --flag=value per line.")


@pytest.mark.parametrize("extra, message", [
    ([], "--input_file is required with --do_train (a path); received None."),
    (["--nodo_train"], "--nodo_train without --do_eval does nothing: add --do_train or --do_eval."),
    (["--nodo_train", "--do_eval"], "--eval_input_file is required with --do_eval"),
    (["--input_file=x", "--target_mlm_accuracy=0.7"],
     "--target_mlm_accuracy=0.7 stops training at an evaluation: it needs --do_train and --do_eval."),
])
def test_modes_need_their_input_files(tmp_path, extra, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        run_in_process([f"--bert_config_file={tmp_path}/c.json", f"--output_dir={tmp_path}/o",
                        *extra])
    assert not (tmp_path / "o").exists()
