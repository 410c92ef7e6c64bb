"""What the apps do before TensorFlow starts: keep its start-up chatter quiet.

TensorFlow 2.21 writes a dozen lines while it loads (oneDNN, CUDA stubs,
"All log messages before absl::InitializeLog() ..."), twice, from C++, and
`TF_CPP_MIN_LOG_LEVEL` does not reach them. When this process was started as
one of the apps (`python -m lamb.mnist_compare`, ..., or their console
scripts), `lamb/__init__.py` calls `before_tensorflow()` first, which sets
`TF_CPP_MIN_LOG_LEVEL` (from `--tf_log_level` on the command line, else the
environment, else 2: errors only) and, unless the level is 0, imports
TensorFlow with the process's standard error pointed at /dev/null and
drops TensorFlow's Python log records below the level (1 or 2: warnings
and errors are kept, so no "Sharding callback duration" lines at each
checkpoint; 3: errors only), whether they come through its logger or
straight through absl's.

Imported as a library, `lamb` changes nothing of this, unless the
environment has `LAMB_QUIET_START=1` (the notebook sets it in its kernel
before importing lamb). Nothing here imports TensorFlow otherwise.
"""

import contextlib
import logging
import os
import sys

APPS = (
    "lamb.mnist_compare", "lamb.run_pretraining", "lamb.create_pretraining_data", "lamb.configs"
)
CONSOLE_SCRIPTS = {
    "lamb-mnist-compare": "lamb.mnist_compare",
    "lamb-run-pretraining": "lamb.run_pretraining",
    "lamb-create-pretraining-data": "lamb.create_pretraining_data",
}
LOG_LEVEL_FLAG = "--tf_log_level"
DEFAULT_LOG_LEVEL = 2
LOG_LEVELS = (0, 1, 2, 3)
QUIET_START = "LAMB_QUIET_START"  # =1: any process starts TensorFlow as the apps do.


def started_app(orig_argv=None, argv=None):
    """The app module this process runs, or None: `python -m <app>` or a console script."""
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    argv = sys.argv if argv is None else argv
    options = iter(orig_argv[1:])
    for argument in options:  # The interpreter's options, up to -m, -c or a script.
        if argument == "-m":
            module = next(options, None)
            return module if module in APPS else None
        if argument in ("-X", "-W"):
            next(options, None)
        elif argument == "-c" or not argument.startswith("-"):
            break
    script = os.path.basename(argv[0]) if argv else ""
    return CONSOLE_SCRIPTS.get(os.path.splitext(script)[0])


def requested_log_level(argv=None, environ=None):
    """The level of `--tf_log_level=N` (or `--tf_log_level N`) in `argv`, else
    of `TF_CPP_MIN_LOG_LEVEL`, else `DEFAULT_LOG_LEVEL`. A value that is not
    one of `LOG_LEVELS` counts as not given (the flag parser reports it)."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    given = None
    for index, argument in enumerate(argv):
        if argument == "--":
            break
        if argument.startswith(LOG_LEVEL_FLAG + "="):
            given = argument.split("=", 1)[1]
        elif argument == LOG_LEVEL_FLAG and index + 1 < len(argv):
            given = argv[index + 1]
    for value in (given, environ.get("TF_CPP_MIN_LOG_LEVEL")):
        if value is not None and value.strip() in {str(level) for level in LOG_LEVELS}:
            return int(value)
    return DEFAULT_LOG_LEVEL


@contextlib.contextmanager
def _stderr_to_devnull():
    """File descriptor 2 on /dev/null in the block; an error is raised once it is back."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly():
    """Imports TensorFlow (and lists its devices, which logs CUDA's state)
    with file descriptor 2 on /dev/null."""
    with _stderr_to_devnull():
        import tensorflow as tf

        tf.config.list_physical_devices()


def _quiet_start_asked():
    """Whether this process is an app's, or has `LAMB_QUIET_START=1`."""
    return started_app() is not None or os.environ.get(QUIET_START) == "1"


def hide_onednn_int64_notice():
    """In a quiet app process: runs an int64 transpose with file descriptor 2
    on /dev/null, so that oneDNN's once-per-process error line "oneDNN
    supports DT_INT64 only on platforms with AVX-512 ..." (a harmless
    fallback, at the first int64 transpose: Keras's `take_along_axis` in
    BERT's masked-LM head) goes there. Call it once the devices are
    configured: running an op fixes them."""
    if not _quiet_start_asked() or requested_log_level() == 0:
        return
    import tensorflow as tf

    with _stderr_to_devnull():
        tf.transpose(tf.zeros([2, 3], tf.int64))


def before_tensorflow():
    """For an app's process (or with `LAMB_QUIET_START=1`): `TF_CPP_MIN_LOG_LEVEL`
    set, TensorFlow imported quietly (unless level 0). Returns the level, or
    None for other processes."""
    if not _quiet_start_asked() or "tensorflow" in sys.modules:
        return None
    level = requested_log_level()
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(level)
    if level > 0:
        import_tensorflow_quietly()
        quiet_tensorflow_python_logs(logging.ERROR if level == 3 else logging.WARNING)
    return level


def quiet_tensorflow_python_logs(threshold):
    """TensorFlow's Python log records below `threshold` dropped: those of its
    logger, and those its modules write through absl's logger."""
    import tensorflow as tf
    from absl import logging as absl_logging

    folder = os.path.dirname(os.path.abspath(tf.__file__)) + os.sep

    def keep(record):
        return record.levelno >= threshold or not record.pathname.startswith(folder)

    logging.getLogger("tensorflow").setLevel(threshold)
    absl_logging.get_absl_handler().addFilter(keep)
