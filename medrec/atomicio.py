"""Atomic file writes: a killed process leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from medrec.errors import OutputError

TEMP_SUFFIX = ".tmp"
# Folders already cleared of stale temp files by this process (once per folder: a folder of
# thousands of outputs is listed once, not once per write).
_swept_folders: set[Path] = set()


def _writer_pid(temp_name: str) -> int | None:
    """The pid in a temp file name ``.NAME.PID-XXXXXXXX.tmp``, or None for any other name."""
    if not (temp_name.startswith(".") and temp_name.endswith(TEMP_SUFFIX)):
        return None
    stem = temp_name[: -len(TEMP_SUFFIX)]
    pid_text = stem.rpartition("-")[0].rpartition(".")[2]
    return int(pid_text) if pid_text.isdigit() else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files that killed writers left in ``folder`` (once per folder and process).

    A process killed between creating its temp file and renaming it (SIGKILL, OOM killer) cannot
    clean up; the temp file names its writer's pid, and a temp file whose writer no longer runs
    on this machine is deleted by the next write into the folder. Files of live writers are kept.

    Returns:
        The files deleted.
    """
    directory = Path(folder).absolute()
    if directory in _swept_folders:
        return []
    _swept_folders.add(directory)
    removed = []
    for stale in directory.glob(f".*{glob.escape(TEMP_SUFFIX)}"):
        pid = _writer_pid(stale.name)
        if pid is None or pid == os.getpid() or _process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            stale.unlink()
            removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8", fsync: bool = True
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    Args:
        path: the final destination.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        encoding: text encoding; ignored for binary mode.
        fsync: flush to disk before the rename. ``False`` still never exposes a half-written file
            to a killed process (only a power loss can lose it); use it for bulk outputs of
            thousands of small files (synthetic DICOM slices) where one fsync each dominates the time.

    Raises:
        OutputError: the folder is not writable or the disk is full.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=TEMP_SUFFIX, dir=target.parent)
    except OSError as e:
        raise OutputError(f"{target}: cannot write here ({e.strerror}); choose a writable output folder") from e
    tmp = Path(tmp_name)
    remove_stale_temp_files(target.parent)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(fd, 0o666 & ~umask)
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        reason = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise OutputError(f"{target}: write failed ({reason}); nothing was changed") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_bytes(path: str | os.PathLike[str], data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (``fsync=False``: see :func:`atomic_open`)."""
    with atomic_open(path, "wb", fsync=fsync) as handle:
        handle.write(data)


def write_csv(path: str | os.PathLike[str], frame) -> None:  # pandas.DataFrame
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    with atomic_open(path, "w") as handle:
        frame.to_csv(handle, index=False, lineterminator="\n")


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one complete line with a single ``write`` on an O_APPEND descriptor, then fsync.

    A process killed during the call leaves at most one incomplete trailing line; readers
    written with :func:`read_complete_lines` ignore it, and the next append first repairs it.
    A short write (the disk filling up mid-line) is continued; if the rest fails, the partial
    line is cut off again before the error is raised.

    Raises:
        OutputError: the file cannot be opened for appending, or the disk is full.
    """
    target = Path(path)
    if "\n" in line:
        raise ValueError("append_line takes a single line without a newline")
    data = (line + "\n").encode("utf-8")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise OutputError(f"{target}: cannot append ({e.strerror}); choose a writable output folder") from e
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(target, "rb") as reader:
                reader.seek(size - 1)
                if reader.read(1) != b"\n":
                    # a previous writer was killed mid-line: cut the partial line off
                    with open(target, "rb") as whole:
                        content = whole.read()
                    keep = content.rfind(b"\n") + 1
                    os.ftruncate(fd, keep)
                    size = keep
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # leave no partial line behind
            raise
    except OSError as e:
        reason = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise OutputError(f"{target}: append failed ({reason}); nothing was appended") from e
    finally:
        os.close(fd)


def read_complete_lines(path: str | os.PathLike[str]) -> list[str]:
    """Return the newline-terminated lines of ``path`` (a trailing partial line is ignored)."""
    target = Path(path)
    if not target.exists():
        return []
    content = target.read_bytes()
    keep = content.rfind(b"\n") + 1
    return content[:keep].decode("utf-8").splitlines()
