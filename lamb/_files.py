"""Output folders and files shared by the apps: one process at a time per
folder, and files written whole or not at all."""

import contextlib
import os
import socket

from absl import logging

LOCK_FILE = "run.lock"


@contextlib.contextmanager
def folder_lock(folder, name="--output_dir"):
    """Holds a lock on `folder` while the block runs, its holder (pid, host)
    written in `<folder>/run.lock`; raises RuntimeError naming the holder if
    another process holds it.

    The lock is an `fcntl.flock` on the folder itself, so removing run.lock
    does not free it; such locks go with the process: the OS frees them when
    it ends, however it ends, so a killed run leaves no stale lock. Remote folders
    (gs://, ...) and file systems without locks cannot be locked: a log line
    says so and the block runs.
    """
    if "://" in folder:
        logging.warning(
            "%s=%s cannot be locked (not a local or mounted folder): make sure "
            "no other run writes there.", name, folder,
        )
        yield
        return
    with open(os.path.join(folder, LOCK_FILE), "a+", encoding="utf-8") as lock, \
            _opened(folder) as folder_descriptor:
        taken = try_exclusive_lock(folder_descriptor, f"{name}={folder}")
        if taken is False:
            lock.seek(0)
            holder = lock.read().strip() or (
                "its pid unknown: it has not written it yet, or run.lock was removed"
            )
            raise RuntimeError(
                f"{name}={folder} is in use by another run ({holder}, per "
                f"{lock.name}); wait for it to end or use another {name}."
            )
        if taken:
            lock.truncate(0)
            lock.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
            lock.flush()
        yield


def try_exclusive_lock(target, what):
    """An exclusive, non-blocking `fcntl.flock` on `target` (a file or a
    descriptor): True when taken, False when another process holds it, None
    where the file system or OS has no such locks (some NFS or FUSE mounts,
    Windows), after a warning naming `what`."""
    try:
        import fcntl  # POSIX only: on Windows, the ImportError below.

        fcntl.flock(target, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except (OSError, ImportError) as error:
        logging.warning("%s cannot be locked (%s): make sure no other run writes there.",
                        what, error)
        return None
    return True


@contextlib.contextmanager
def _opened(folder):
    """A read-only file descriptor of `folder` (to lock), closed after the block."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside `path` to write to, renamed onto `path` after the block.

    A kill at any moment leaves `path` whole, old or new; the temporary file
    such a kill may leave behind is overwritten by the next write of `path`.
    """
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.partial")
    yield temporary
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())  # The data on disk before the rename.
    os.replace(temporary, path)
