"""Output files written whole: checked before any work, one writer each
(`fcntl.flock`), renamed into place when complete."""

import contextlib
import os

import tensorflow as tf

from lamb._files import try_exclusive_lock

PARTIAL_SUFFIX = ".partial"


def _partial_path(path):
    """The temporary name beside `path` that its records are written to."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}{PARTIAL_SUFFIX}")


def is_partial_file(path):
    """Whether `path` is named as an output's temporary file."""
    name = os.path.basename(path)
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX)


def check_output_files(output_files, read_files):
    """The outputs' final paths (symbolic links followed); ValueError naming
    --output_file unless each is a new or regular file, given once, in a
    folder (created here), and none of the files that `read_files` (flag ->
    paths) names, under any name or link."""
    read_by = {}  # (device, inode) -> flag: links of every kind lead to one key.
    for flag, paths in read_files.items():
        for path in paths:
            if "://" not in path:
                stat = os.stat(path)
                read_by.setdefault((stat.st_dev, stat.st_ino), flag)
    finals = []
    for path in output_files:
        if not path:
            raise ValueError("--output_file: an empty name in the comma-separated list.")
        if "://" in path:  # Object stores (gs://, ...): no links, folders or locks to check.
            finals.append(path)
            continue
        final = os.path.realpath(path)
        stat = os.stat(final) if os.path.exists(final) else None
        if stat and (stat.st_dev, stat.st_ino) in read_by:
            raise ValueError(
                f"--output_file: {path} is also read as "
                f"{read_by[(stat.st_dev, stat.st_ino)]}; writing it would destroy it. Give "
                "another --output_file."
            )
        if final in finals:
            raise ValueError(f"--output_file: {path} is given more than once; give each file once.")
        if os.path.isdir(final):
            raise ValueError(f"--output_file: {path} is a folder; give a file name.")
        if os.path.exists(final) and not os.path.isfile(final):
            raise ValueError(
                f"--output_file: {path} is not a regular file (a device or pipe); give a file name."
            )
        folder = os.path.dirname(final)
        parent = folder
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ValueError(
                f"--output_file: {path} cannot be written: {parent} is a file, not a folder."
            )
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise ValueError(
                f"--output_file: cannot create the folder of {path}: {error.strerror}."
            ) from None
        finals.append(final)
    return finals


def _lock_partial(final):
    """The temporary file of `final`, created, locked (`fcntl.flock`) and
    emptied; RuntimeError naming --output_file if another run holds it."""
    partial = _partial_path(final)
    while True:
        try:
            file = open(partial, "ab")
        except OSError as error:
            raise ValueError(f"--output_file: {final} cannot be written: {error.strerror}.") from None
        if try_exclusive_lock(file, f"--output_file={final}") is False:
            file.close()
            raise RuntimeError(
                f"--output_file: {final} is being written by another run (which holds "
                f"{partial}); wait for it to end or give another --output_file."
            )
        try:
            if os.stat(partial).st_ino == os.fstat(file.fileno()).st_ino:
                file.truncate(0)
                return file
        except FileNotFoundError:
            pass
        file.close()  # The run that held it renamed it meanwhile: lock the new one.


@contextlib.contextmanager
def written_whole(output_files, read_files):
    """Temporary paths to write `output_files` to, renamed onto them after
    the block: a run killed at any moment leaves each output as it was, or
    complete. The outputs are checked first (`check_output_files`) and locked
    for the block, so that two runs cannot write one file."""
    finals = check_output_files(output_files, read_files)
    with contextlib.ExitStack() as stack:
        partials = []
        for final in finals:
            if "://" in final:
                partials.append(_partial_path(final))
                continue
            file = stack.enter_context(_lock_partial(final))
            partials.append(file.name)
        try:
            yield partials
        except BaseException:
            for partial in partials:
                if tf.io.gfile.exists(partial):
                    tf.io.gfile.remove(partial)
            raise
        for partial, final in zip(partials, finals):
            if "://" in final:
                tf.io.gfile.rename(partial, final, overwrite=True)
                continue
            with open(partial, "rb") as file:
                os.fsync(file.fileno())  # The records on disk before the rename.
            os.replace(partial, final)
