"""The distribution: a wheel built from a copy of the checkout, installed
without network into a fresh virtual environment (which sees the running
interpreter's packages, for TensorFlow), works from another folder."""

import os
import shutil
import site
import subprocess
import sys
import sysconfig

from lamb._version import __version__
from tests.pretraining_helpers import REPO

LEFT_OUT = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                  ".pytest_cache", "results")


def _run(args, cwd, env=None):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-3000:])
    return result


def _see_running_interpreters_packages(python, cwd):
    """Appends the running interpreter's site folders (a venv's, a conda env's or a
    system Python's, whichever runs the tests) to `python`'s path, after its own
    (`--system-site-packages` would show the base interpreter's instead), and
    returns `python`'s own site folder."""
    folders = site.getsitepackages() + [site.getusersitepackages()]
    folders += [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    own = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
               cwd=cwd).stdout.strip()
    seen = [folder for folder in dict.fromkeys(folders) if os.path.isdir(folder)]
    with open(os.path.join(own, "running_interpreter.pth"), "w", encoding="utf-8") as file:
        file.write("".join(folder + "\n" for folder in seen))
    return own


def test_wheel_installs_into_a_fresh_venv_and_runs_from_another_folder(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=LEFT_OUT)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--quiet", "-w", str(tmp_path / "wheels"), str(source)], cwd=tmp_path)
    (wheel,) = os.listdir(tmp_path / "wheels")
    assert wheel == f"lamb_keras-{__version__}-py3-none-any.whl"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = str(venv / "bin" / "python")
    site_folder = _see_running_interpreters_packages(python, tmp_path)
    # --ignore-installed: where the project is installed already (CI installs it), the
    # packages the venv sees would otherwise satisfy it, and nothing be installed.
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
          "--no-index", "--ignore-installed", str(tmp_path / "wheels" / wheel)], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}
    imported = _run(
        [python, "-c", "import importlib.metadata as m, lamb, optimization, lamb.configs as c; "
         "print(lamb.__file__, optimization.__file__, c.path('demo_cpu.flags'), lamb.__version__,"
         " m.version('lamb-keras'), m.metadata('lamb-keras')['License'])"],
        cwd=elsewhere, env=env,
    ).stdout.split()
    assert imported[:3] == [os.path.join(site_folder, "lamb", "__init__.py"),
                            os.path.join(site_folder, "optimization.py"),
                            os.path.join(site_folder, "lamb", "_configs", "demo_cpu.flags")]
    assert imported[3:] == [__version__, __version__, "Apache-2.0"]
    assert os.path.exists(os.path.join(site_folder, f"lamb_keras-{__version__}.dist-info", "LICENSE"))

    # A console script's --helpfull (absl exits with 1 after help), its start-up quiet.
    helped = subprocess.run([str(venv / "bin" / "lamb-run-pretraining"), "--helpfull"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 1 and not helped.stderr, helped.stderr[-2000:]
    for flag in ("--bert_config_file", "--optimizer", "--tf_log_level", "--flagfile"):
        assert flag in helped.stdout
