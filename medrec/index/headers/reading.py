"""Classify every file of a scan folder (a DICOM image header, a NIfTI sample or a problem).

Reading runs serially for small inputs and in a process pool for large ones; each file is opened
once, and NIfTI files are handed to :mod:`medrec.index.nifti`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from medrec.errors import ConfigError
from medrec.index.fastheader import HEAD_BYTES
from medrec.index.headers.dicom import _inspect_dicom
from medrec.index.headers.values import _short
from medrec.index.headers.walk import is_nifti_path
from medrec.index.problems import FileProblem

# Below this many files a process pool costs more than it saves: a spawned worker takes about a
# second to start and import pydicom, while the fast header path reads a file in well under a
# millisecond (8,000 files serially: about two seconds on one core).
PARALLEL_MIN_FILES = 8000
# With two cores or fewer a pool does not pay either: on 2 cores, 20,160 files took 3.50 s with the
# default two processes against 3.43 s serially (benchmarks/results.json, index); the main process
# walks the folder and builds series while the workers read, so they compete for the same cores.
PARALLEL_MIN_CORES = 3
CHUNK_SIZE = 48


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """Per-file reading options passed to the workers."""

    check_nifti_values: bool = True
    scans_root: str = ""


def inspect_files(paths: Sequence[str], options: ReadOptions) -> list[object]:
    """Inspect a chunk of files (the unit of work of one pool task)."""
    return [inspect_file(path, options) for path in paths]


def inspect_file(path: str, options: ReadOptions | None = None) -> object:
    """Classify one file: a DICOM image header, a NIfTI sample, or a problem.

    Never raises for bad input: every failure becomes a :class:`FileProblem`.
    """
    options = options or ReadOptions()
    if is_nifti_path(path):
        try:
            size = os.path.getsize(path)
        except OSError as e:
            return FileProblem(path, "unreadable", f"unreadable: {e.strerror or e}")
        if size == 0:
            return FileProblem(path, "empty_file", "empty file (0 bytes)")
        from medrec.index.nifti import inspect_nifti

        try:
            return inspect_nifti(path, options.scans_root, check_values=options.check_nifti_values)
        except Exception as e:  # noqa: BLE001 - e.g. MemoryError on a huge volume: a qc row, not a crash
            return FileProblem(path, "nifti_unreadable", f"NIfTI unreadable: {type(e).__name__}: {_short(e)}")
    try:
        # one open, one fstat and (for a small slice) one read per file
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return FileProblem(path, "empty_file", "empty file (0 bytes)")
            return _inspect_dicom(path, handle, handle.read(HEAD_BYTES), size)
    except OSError as e:
        return FileProblem(path, "unreadable", f"unreadable: {e.strerror or e}")
    except Exception as e:  # noqa: BLE001 - any parser failure on a user file becomes a qc row
        return FileProblem(path, "dicom_unreadable", f"DICOM header unreadable: {type(e).__name__}: {_short(e)}")


def read_headers(
    paths: Sequence[str],
    options: ReadOptions,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[object]:
    """Inspect many files, in a process pool when there are enough of them.

    Args:
        paths: files to inspect.
        options: reading options.
        workers: process count; ``None`` picks serial below :data:`PARALLEL_MIN_FILES`
            files and up to 8 processes above; ``1`` forces serial reading.
        on_progress: called with the number of files just finished.

    Returns:
        One result per path, in the order of ``paths``.
    """
    n_workers = resolve_workers(workers, len(paths))
    if n_workers <= 1:
        results = []
        for start in range(0, len(paths), CHUNK_SIZE):  # progress per chunk: a bar update costs more than a file
            chunk = paths[start : start + CHUNK_SIZE]
            results.extend(inspect_files(chunk, options))
            if on_progress:
                on_progress(len(chunk))
        return results
    import multiprocessing

    chunks = [list(paths[i : i + CHUNK_SIZE]) for i in range(0, len(paths), CHUNK_SIZE)]
    by_chunk: dict[int, list[object]] = {}
    # spawn, not fork: the parent may run threads (progress bar refresh) that fork would copy mid-lock
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
        futures = {pool.submit(inspect_files, chunk, options): index for index, chunk in enumerate(chunks)}
        for future in as_completed(futures):
            index = futures[future]
            try:
                by_chunk[index] = future.result()
            except Exception:  # noqa: BLE001 - a worker died (killed, out of memory): read its chunk here
                by_chunk[index] = inspect_files(chunks[index], options)
            if on_progress:
                on_progress(len(chunks[index]))
    return [item for index in range(len(chunks)) for item in by_chunk[index]]


def resolve_workers(workers: int | None, n_files: int) -> int:
    """Number of reader processes for ``n_files`` files (1 means serial).

    ``workers`` when given; else serial below :data:`PARALLEL_MIN_FILES` files or
    :data:`PARALLEL_MIN_CORES` available cores, and one process per available core (at most 8)
    otherwise.
    """
    if workers is not None:
        if workers < 1:
            raise ConfigError(f"workers: must be >= 1 (1 reads serially), got {workers}")
        return workers
    if n_files < PARALLEL_MIN_FILES:
        return 1
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    if available < PARALLEL_MIN_CORES:
        return 1
    return min(8, available)
