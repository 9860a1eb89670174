"""The output lock: one scoring process at a time appends to a predictions file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medrec.errors import OutputError

# Lock files held by this process (record locks do not exclude a second holder in one process).
_HELD_LOCKS: set[str] = set()
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<output>.lock`` so that two scoring processes never append to one file.

    A POSIX record lock (``lockf``): it belongs to this process alone, so loader workers forked
    while it is held do not hold it too, and the kernel drops it when the process dies (even by
    SIGKILL): a killed run never leaves a stale lock behind. (A ``flock`` lock would be shared with
    the forked workers through the open file and outlive the parent until they exit.) The file is
    removed when the scorer lets go, on success and on error alike; one left by a killed scorer
    holds no lock and is taken over by the next.

    A second scorer of the same file in this process is refused too.

    Raises:
        OutputError: another scorer holds the lock, or the output folder is not writable.
    """
    lock_path = output.with_name(output.name + ".lock")
    # Record locks are per process: a second scorer in this process is refused here (before it
    # opens the lock file: closing any descriptor of the file would drop this process's lock).
    key = str(lock_path.absolute())
    with _HELD_GUARD:
        if key in _HELD_LOCKS:
            raise OutputError(
                f"{output}: another 'medrec score' is writing this file right now; wait for it or choose another -o"
            )
        _HELD_LOCKS.add(key)
    try:
        with _record_lock(output, lock_path):
            yield
    finally:
        with _HELD_GUARD:
            _HELD_LOCKS.discard(key)


@contextlib.contextmanager
def _record_lock(output: Path, lock_path: Path) -> Iterator[None]:
    """The inter-process part of :func:`output_lock`: a ``lockf`` lock on ``lock_path``, removed on release."""
    handle = _locked_handle(output, lock_path)
    try:
        yield
    finally:
        # removed while still locked: a scorer that opened this file meanwhile finds, once it has
        # the lock, that the path no longer names it, and locks the path afresh
        if _names_handle(lock_path, handle):
            with contextlib.suppress(OSError):
                lock_path.unlink()
        handle.close()


def _names_handle(lock_path: Path, handle: Any) -> bool:
    """Whether ``lock_path`` still names the file open in ``handle`` (not removed, not replaced)."""
    try:
        on_disk, held = os.stat(lock_path), os.fstat(handle.fileno())
    except OSError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _locked_handle(output: Path, lock_path: Path, attempts: int = 20) -> Any:
    """Open ``lock_path`` and take its ``lockf`` lock; retried when the holder removed the file as it let go."""
    for _ in range(attempts):
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a+")  # held for the whole run (lockf needs write access)
        except OSError as e:
            raise OutputError(
                f"{output}: cannot write here ({e.strerror}: {e.filename}); choose a writable output folder"
            ) from e
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            handle.close()
            raise OutputError(
                f"{output}: another 'medrec score' is writing this file right now; wait for it or choose another -o"
            ) from e
        if _names_handle(lock_path, handle):
            return handle
        handle.close()  # locked a file its holder had just removed: lock the one the path names now
    raise OutputError(
        f"{lock_path}: removed and recreated {attempts} times while locking it; another 'medrec score' is "
        "starting and stopping on this output; wait for it or choose another -o"
    )
