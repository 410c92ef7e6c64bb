"""What the three command-line apps share: how they start, fail and warn.

- `run(main, required=...)`: absl's `app.run`, where every error about the
  command line or its inputs is one line on standard error,
  `<app>: error: <message>`, and exit status 1: flags absl cannot parse (an
  unknown flag, with absl's "Did you mean"; a bad value; a required flag
  missing) and the `ValueError`, `FileNotFoundError` and `RuntimeError` that
  the package's own checks raise in `main` (naming the flag and what is
  allowed). Errors raised inside TensorFlow, Keras or other libraries keep
  their traceback. `--flagfile=NAME` also takes the name of an installed
  flagfile (`lamb.configs`).
- `define_choice`: a flag with a fixed set of values, case-insensitive, whose
  error lists them and the closest one.
- `warn_without_effect`: the warning for a flag that is set but changes nothing.
- `--tf_log_level`: TensorFlow's C++ log level, applied before TensorFlow
  starts (`lamb._startup`).
"""

import functools
import os
import sys

from absl import app, flags, logging

from lamb import _checks, _startup, configs

FLAGS = flags.FLAGS

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError)


def app_name():
    """The running app's short name (`mnist_compare`, ...) for messages."""
    module = _startup.started_app() or os.path.splitext(os.path.basename(sys.argv[0]))[0]
    return module.rsplit(".", 1)[-1]


def fail(message):
    """Prints `<app>: error: <message>` (on one line) and exits with status 1."""
    line = " ".join(str(message).split())
    sys.stderr.write(f"{app_name()}: error: {line}\n")
    sys.stderr.flush()
    sys.exit(1)


def raised_by_lamb(error):
    """Whether `error` was raised in this package's own code (a check with
    a message for the user), not inside another library."""
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    filename = os.path.abspath(traceback.tb_frame.f_code.co_filename)
    return filename.startswith(PACKAGE_DIR + os.sep)


def resolve_flagfiles(argv):
    """`argv` with each `--flagfile=NAME` that is no file but an installed
    flagfile's name replaced by its path."""
    resolved = []
    for argument in argv:
        if resolved and resolved[-1] in ("--flagfile", "-flagfile"):
            argument = configs.resolve(argument)
        for prefix in ("--flagfile=", "-flagfile="):
            if argument.startswith(prefix):
                argument = prefix + configs.resolve(argument[len(prefix):])
        resolved.append(argument)
    return resolved


def parse_flags(argv):
    """absl's flag parsing, with installed flagfile names and one-line errors."""
    argv = resolve_flagfiles(argv)
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(error)
    except UnicodeDecodeError as error:  # absl reads a --flagfile as UTF-8 text.
        fail(f"--flagfile={_undecodable_flagfile(argv) or '?'} is not UTF-8 text (byte "
             f"{error.start}: {error.reason}); a flagfile holds one --flag=value per line.")


def _undecodable_flagfile(argv):
    """The first `--flagfile=PATH` of `argv` whose file is not UTF-8, or None."""
    for previous, argument in zip([None, *argv], argv):
        name = argument if previous in ("--flagfile", "-flagfile") else None
        if argument.startswith(("--flagfile=", "-flagfile=")):
            name = argument.split("=", 1)[1]
        if name:
            try:
                with open(name, encoding="utf-8") as file:
                    file.read()
            except UnicodeDecodeError:
                return name
            except OSError:
                continue
    return None


def run(main, required=()):
    """Runs an absl app's `main` with the required flags (absl's own "must
    have a value other than None" check) and one-line errors (see the
    module docstring)."""
    flags.mark_flags_as_required(list(required))

    @functools.wraps(main)
    def main_with_one_line_errors(argv):
        try:
            return main(argv)
        except USER_ERRORS as error:
            if not raised_by_lamb(error):
                raise
            fail(error)

    app.run(main_with_one_line_errors, flags_parser=parse_flags)


class ChoiceParser(flags.EnumParser):
    """A value of a fixed list, in any case; the error lists the values and the closest."""

    def __init__(self, choices):
        super().__init__(list(choices), case_sensitive=False)

    def parse(self, argument):
        try:
            return super().parse(argument)
        except ValueError:
            raise ValueError(
                f"must be one of {', '.join(self.enum_values)}; received {argument!r}."
                + _checks.did_you_mean(argument, self.enum_values)
            ) from None

    def flag_type(self):
        return "choice"


def define_choice(name, default, choices, help_text):
    """A flag taking one of `choices` (any case; `None` allowed as the default)."""
    flags.DEFINE(
        ChoiceParser(choices),
        name,
        default,
        f"{help_text} One of: {', '.join(choices)}.",
        serializer=flags.ArgumentSerializer(),
    )


def warn_without_effect(flag, reason):
    """Logs that `--flag`, set on the command line or in a flagfile, has no
    effect here (`reason`); returns whether it was set."""
    if not FLAGS[flag].present:
        return False
    logging.warning("--%s has no effect %s.", flag, reason)
    return True


define_choice(
    "tf_log_level",
    None,
    [str(level) for level in _startup.LOG_LEVELS],
    "TensorFlow's C++ log level (TF_CPP_MIN_LOG_LEVEL): 0 shows everything, with "
    "TensorFlow's start-up messages; 1 hides INFO; 2 (default, or "
    "$TF_CPP_MIN_LOG_LEVEL) shows errors only; 3 nothing. Start-up messages are "
    "hidden unless 0. Read from the command line before TensorFlow starts (not "
    "from a --flagfile).",
)
