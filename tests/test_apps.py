"""What the apps share (`lamb._app`, `lamb._startup`): one-line errors, quiet
TensorFlow start-up, installed flagfiles by name; and the Keras names."""

import os
import subprocess
import sys
import textwrap

import keras
import pytest
from absl import flags
from absl.testing import flagsaver

import lamb
from lamb import _app, _checks, _startup, configs
from tests.pretraining_helpers import REPO


def run_module(module, *args, **env):
    """`python -m module args` from a temporary folder's parent, the
    checkout on PYTHONPATH, no TF_CPP_MIN_LOG_LEVEL unless given."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environ.update(PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", **env)
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=environ,
        cwd=os.path.dirname(REPO), timeout=120,
    )


def test_a_bad_flag_value_is_one_line_naming_the_flag_and_the_closest_name(tmp_path):
    result = run_module("lamb.mnist_compare", "--optimizers=lamb,lasr", f"--output_dir={tmp_path}")
    assert result.returncode == 1
    # TensorFlow's start-up messages are hidden: the error is all there is.
    assert result.stderr.splitlines() == [
        "mnist_compare: error: `--optimizers` must be a comma-separated subset of ['adam', "
        "'adamw', 'lamb', 'lamb16', 'lars', 'keras_adamw', 'keras_lamb']; received unknown "
        "'lasr' (did you mean 'lars'?)."
    ]
    assert not os.listdir(tmp_path)


def test_tf_log_level_0_brings_back_tensorflows_start_up_messages():
    result = run_module("lamb.run_pretraining", "--tf_log_level=0")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) > 1 and "absl::InitializeLog" in result.stderr
    assert lines[-1].startswith("run_pretraining: error: ")


def test_missing_required_flags_are_one_line_not_a_traceback():
    result = run_module("lamb.run_pretraining", "--optimizer=adamw")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "run_pretraining: error: flag --bert_config_file=None: Flag --bert_config_file must "
        "have a value other than None. flag --output_dir=None: Flag --output_dir must have a "
        "value other than None."
    ]


def test_create_pretraining_data_errors_are_one_line(tmp_path):
    result = run_module("lamb.create_pretraining_data", "--do_lower_case")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "create_pretraining_data: error: flag --input_file=None: Flag --input_file must have a "
        "value other than None. flag --output_file=None: Flag --output_file must have a value "
        "other than None. flag --vocab_file=None: Flag --vocab_file must have a value other "
        "than None."
    ]
    result = run_module(
        "lamb.create_pretraining_data", f"--input_file={tmp_path}/a.txt",
        f"--output_file={tmp_path}/out/a.tfrecord", f"--vocab_file={tmp_path}/vocab.txt",
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"create_pretraining_data: error: --vocab_file: {tmp_path}/vocab.txt does not exist."
    ]


def test_a_choice_flag_takes_any_case_and_suggests_the_closest_value():
    parser = _app.ChoiceParser(("default", "mirrored", "multi_worker", "tpu"))
    assert parser.parse("Mirrored") == "mirrored"
    with pytest.raises(ValueError, match=r"^must be one of default, mirrored, multi_worker, "
                                         r"tpu; received 'mirorred'\. Did you mean 'mirrored'\?$"):
        parser.parse("mirorred")
    assert _checks.check_choice("--x", "LAMB", ("lamb", "lars"), ignore_case=True) == "lamb"
    with pytest.raises(ValueError, match=r"received --x='LAMB'\. Did you mean 'lamb'\?"):
        _checks.check_choice("--x", "LAMB", ("lamb", "lars"))


def _raise_outside_lamb():
    raise ValueError("from another library")


def test_only_errors_raised_by_the_package_itself_lose_their_traceback():
    for make, expected in [
        (lambda: _checks.check_int("--epochs", 0, low=1), True),
        (_raise_outside_lamb, False),
    ]:
        with pytest.raises(ValueError) as error:
            make()
        assert _app.raised_by_lamb(error.value) is expected


def test_the_startup_recognizes_the_apps_and_reads_the_log_level():
    python = sys.executable
    assert _startup.started_app([python, "-m", "lamb.run_pretraining", "--x"], ["-m"]) == (
        "lamb.run_pretraining")
    assert _startup.started_app([python, "-X", "dev", "-m", "lamb.mnist_compare"], ["-m"]) == (
        "lamb.mnist_compare")
    assert _startup.started_app([python, "-m", "pytest", "-m", "lamb.mnist_compare"], []) is None
    assert _startup.started_app([python, "train.py"], ["train.py"]) is None
    assert _startup.started_app([python, "/venv/bin/lamb-run-pretraining"],
                                ["/venv/bin/lamb-run-pretraining"]) == "lamb.run_pretraining"
    assert _startup.requested_log_level(["--tf_log_level=0"], {}) == 0
    assert _startup.requested_log_level(["--tf_log_level", "1"], {"TF_CPP_MIN_LOG_LEVEL": "3"}) == 1
    assert _startup.requested_log_level([], {"TF_CPP_MIN_LOG_LEVEL": "3"}) == 3
    assert _startup.requested_log_level(["--tf_log_level=x"], {}) == 2
    # Imported as a library (this process), lamb leaves the log level alone.
    assert _startup.before_tensorflow() is None


def test_lamb_quiet_start_quiets_any_process_that_imports_lamb():
    script = "import lamb, tensorflow as tf; print(float(tf.constant(1.0) + 1))"
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env=dict(environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", LAMB_QUIET_START="1"),
    )
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "2.0\n", "")


def test_installed_flagfiles_and_configs_are_found_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _app.resolve_flagfiles(["prog", "--flagfile=demo_cpu.flags", "--flagfile", "x.flags"]) == [
        "prog", f"--flagfile={configs.FOLDER}/demo_cpu.flags", "--flagfile", "x.flags"]
    with open(configs.path("demo_cpu.flags")) as flagfile:
        assert "--bert_config_file=bert_config_tiny.json\n" in flagfile.read()
    assert configs.check_exists("bert_config_tiny.json", "bert_config_file") == os.path.join(
        configs.FOLDER, "bert_config_tiny.json")
    (tmp_path / "bert_config_tiny.json").write_text("{}")  # A file of one's own wins.
    assert configs.resolve("bert_config_tiny.json") == "bert_config_tiny.json"
    with pytest.raises(FileNotFoundError, match=r"--bert_config_file=bert_config_tny\.json does "
                                                r"not exist.*Did you mean 'bert_config_tiny\.json'\?"):
        configs.check_exists("bert_config_tny.json", "bert_config_file")


def test_the_configs_listing_is_quiet_and_has_help():
    listed = run_module("lamb.configs")
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout.splitlines() == [f"Installed configs in {configs.FOLDER}:"] + [
        f"  {name}" for name in configs.names()]
    helped = run_module("lamb.configs", "--help")
    assert (helped.returncode, helped.stderr) == (0, "")
    assert helped.stdout.startswith("usage: python -m lamb.configs")
    assert "Installed configs" not in helped.stdout


def test_short_keras_names_and_a_saved_model_in_a_fresh_process(tmp_path):
    """`keras.optimizers.get("lamb")` and `compile(optimizer="lars")` work once
    lamb is imported, Keras's own strings keep their meaning, and a `.keras`
    file loads in a new process that imports lamb."""
    assert type(keras.optimizers.get("lamb")) is lamb.LAMB
    assert type(keras.optimizers.get("LAMB16")) is lamb.LAMB16
    assert type(keras.optimizers.get("adamweightdecay")) is lamb.AdamWeightDecay
    assert type(keras.optimizers.get("adamw")) is keras.optimizers.AdamW
    assert type(keras.optimizers.get("adam")) is keras.optimizers.Adam
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="lars", loss="mse")
    assert type(model.optimizer) is lamb.LARS
    model.optimizer = lamb.LAMB(learning_rate=0.02, weight_decay=0.01)
    model.compile(optimizer=model.optimizer, loss="mse")
    model.fit(keras.ops.ones((4, 3)), keras.ops.zeros((4, 2)), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    script = textwrap.dedent(f"""
        import keras, lamb
        model = keras.saving.load_model({str(path)!r})
        print(type(model.optimizer).__name__, model.optimizer.weight_decay,
              int(model.optimizer.iterations), type(keras.optimizers.get("lamb")).__name__)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["LAMB", "0.01", "1", "LAMB"]


def test_the_flag_without_effect_warning_names_the_flag(caplog):
    flags.DEFINE_integer("test_only_unused_flag", 0, "A flag of this test.")
    try:
        with flagsaver.flagsaver():
            flags.FLAGS(["prog"])
            assert not _app.warn_without_effect("test_only_unused_flag", "here (a test)")
            flags.FLAGS(["prog", "--test_only_unused_flag=3"])
            with caplog.at_level("WARNING"):
                assert _app.warn_without_effect("test_only_unused_flag", "here (a test)")
        assert "--test_only_unused_flag has no effect here (a test)." in caplog.messages
    finally:
        delattr(flags.FLAGS, "test_only_unused_flag")
