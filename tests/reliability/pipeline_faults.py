"""A tiny index -> train -> score -> report pipeline and the I/O faults the reliability tests inject into it.

Faults are injected at the operating-system boundary that every medrec output goes through:

* kill points: the n-th commit of a write under a folder (an ``os.replace`` that publishes an
  atomic write, killed just before or just after it, or an ``os.write`` that appends a line,
  killed after half of the line). The command runs in a forked child, so the SIGKILL is real and
  lands at the same point on every run, whatever the machine's speed;
* a full disk: writes under a folder succeed until a byte budget is spent, then the write that
  crosses it is short and the next one fails with ENOSPC (what write(2) does on a full disk);
* a read-only folder: opening a file for writing or creating a folder under it fails with
  EACCES or EROFS (root ignores ``chmod``, so this also runs where the suite runs as root).
"""

from __future__ import annotations

import builtins
import contextlib
import csv
import errno
import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

COHORT = dict(kind="ct-lesion", patients=10, fmt="nifti", seed=1, image_size=24, slice_thickness=10.0,
              follow_up_fraction=0.0, lesion_diameter_mm=(60.0, 80.0), contrast=(150.0, 200.0), noise=0.5)
TRAIN_RECIPE: dict[str, Any] = {
    "split": {"val": 0.25, "test": 0.25, "seed": 0, "check_pixels": False},
    "preprocessing": {"preset": "ct", "voxel_budget": 16 * 16 * 12, "augment": True},
    "model": {"name": "cnn_small", "kwargs": {"channels": [4, 8], "dropout": 0.2}},
    "training": {"epochs": 3, "batch_size": 2, "device": "cpu", "patience": None, "warmup_epochs": 0},
}
REPORT_ARGS = ("--bootstrap", "50")
TEMP_SUFFIX = ".tmp"
PNG_END = b"IEND\xaeB`\x82"


# ------------------------------------------------------------------------------------------------
# Running the CLI
# ------------------------------------------------------------------------------------------------


def cli(args: Sequence[object]) -> int:
    """Run ``medrec.cli.main(args)`` in this process; return its exit code."""
    from medrec.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def _under(path: object, root: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).absolute().is_relative_to(root)
    except (TypeError, ValueError):
        return False


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class WritePoints:
    """Counts (and optionally kills the process at) the commit points of writes under ``root``.

    A commit point is an ``os.replace`` onto a path under ``root`` (an atomic write becoming
    visible) or an ``os.write`` to a file under ``root`` (an appended line).

    Args:
        root: the folder whose writes count.
        kill_at: SIGKILL this process at this commit point (0-based); None only counts.
        after_replace: at a replace, kill after it instead of before it.
    """

    def __init__(self, root: Path, kill_at: int | None = None, after_replace: bool = False) -> None:
        self.root = Path(root).absolute()
        self.kill_at = kill_at
        self.after_replace = after_replace
        self.count = 0
        self.bytes = 0
        self.names: list[str] = []  # file name of each commit point, in order
        self._replace = os.replace
        self._write = os.write

    def _is_kill_point(self, path: object) -> bool:
        hit = self.count == self.kill_at
        self.count += 1
        self.names.append(Path(os.fsdecode(path)).name)
        return hit

    def replace(self, src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if not _under(dst, self.root):
            return self._replace(src, dst, *args, **kwargs)
        if self._is_kill_point(dst):
            if self.after_replace:
                self._replace(src, dst, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        if os.fsdecode(src).endswith(TEMP_SUFFIX):  # a rename of a finished file writes nothing
            self.bytes += os.stat(src).st_size
        return self._replace(src, dst, *args, **kwargs)

    def write(self, fd: int, data: bytes) -> int:
        path = _fd_path(fd)
        if not _under(path, self.root):
            return self._write(fd, data)
        if self._is_kill_point(path):
            self._write(fd, bytes(data)[: max(1, len(data) // 2)])  # a torn line
            os.kill(os.getpid(), signal.SIGKILL)
        self.bytes += len(data)
        return self._write(fd, data)

    def install(self, setattr_: Callable[[Any, str, Any], None]) -> WritePoints:
        setattr_(os, "replace", self.replace)
        setattr_(os, "write", self.write)
        return self


def run_killed(args: Sequence[object], root: Path, kill_at: int, after_replace: bool, timeout: float = 120.0) -> bool:
    """Run the CLI in a forked child that SIGKILLs itself at commit point ``kill_at`` under ``root``.

    Returns:
        True when the child died by SIGKILL, False when it finished before reaching the point.
    """
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 98
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1), os.dup2(devnull, 2)
            WritePoints(root, kill_at, after_replace).install(setattr)
            code = cli(args)
        except BaseException:  # noqa: BLE001 - any escape would run pytest twice
            code = 97
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"medrec {args[0]} did not reach kill point {kill_at} within {timeout} s")
        time.sleep(0.02)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL, status
        return True
    assert os.WEXITSTATUS(status) == 0, f"medrec {args[0]} exited with {os.WEXITSTATUS(status)} before the kill point"
    return False


def kill_points(total: int, fractions: Sequence[float] = (0.10, 0.35, 0.60, 0.85)) -> list[tuple[int, bool]]:
    """Commit points at these fractions of ``total`` (distinct), alternating kill-before / kill-after."""
    points = sorted({min(total - 1, int(f * total)) for f in fractions})
    return [(point, index % 2 == 1) for index, point in enumerate(points)]


# ------------------------------------------------------------------------------------------------
# Full disk and read-only folders
# ------------------------------------------------------------------------------------------------


class DiskFull:
    """Writes under ``root`` succeed until ``budget`` bytes are written; then short writes, then ENOSPC."""

    def __init__(self, root: Path, budget: int) -> None:
        self.root = Path(root).absolute()
        self.left = budget
        self._write = os.write
        self._fdopen = os.fdopen

    def _take(self, wanted: int, path: str) -> int:
        if self.left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        granted = min(wanted, self.left)
        self.left -= granted
        return granted

    def write(self, fd: int, data: bytes) -> int:
        path = _fd_path(fd)
        if not _under(path, self.root):
            return self._write(fd, data)
        granted = self._take(len(data), path)
        return self._write(fd, bytes(data)[:granted])

    def fdopen(self, fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        path = _fd_path(fd)
        if "w" not in mode or not _under(path, self.root):
            return self._fdopen(fd, mode, *args, **kwargs)
        disk = self

        class _FullDiskFile(io.FileIO):
            def write(self, data: Any) -> int:
                granted = disk._take(len(memoryview(data).cast("B")), path)
                return super().write(memoryview(data).cast("B")[:granted])

        raw = _FullDiskFile(fd, "w", closefd=True)
        buffered = io.BufferedWriter(raw)
        if "b" in mode:
            return buffered
        encoding = kwargs.get("encoding") or (args[1] if len(args) > 1 else None) or "utf-8"
        newline = kwargs.get("newline", "")
        return io.TextIOWrapper(buffered, encoding=encoding, newline=newline, write_through=False)

    def install(self, setattr_: Callable[[Any, str, Any], None]) -> DiskFull:
        setattr_(os, "write", self.write)
        setattr_(os, "fdopen", self.fdopen)
        return self


class ReadOnly:
    """Creating or opening for writing anything under ``root`` fails with ``code`` (EACCES or EROFS)."""

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self, root: Path, code: int = errno.EACCES) -> None:
        self.root = Path(root).absolute()
        self.code = code
        self._open, self._mkdir, self._builtin_open = os.open, os.mkdir, builtins.open

    def _refuse(self, path: Any) -> None:
        raise OSError(self.code, os.strerror(self.code), os.fsdecode(path))

    def os_open(self, path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & self.WRITE_FLAGS and _under(path, self.root):
            self._refuse(path)
        return self._open(path, flags, *args, **kwargs)

    def mkdir(self, path: Any, *args: Any, **kwargs: Any) -> None:
        if _under(path, self.root) and Path(os.fsdecode(path)).absolute() != self.root:
            self._refuse(path)
        return self._mkdir(path, *args, **kwargs)

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and _under(file, self.root):
            self._refuse(file)
        return self._builtin_open(file, mode, *args, **kwargs)

    def install(self, setattr_: Callable[[Any, str, Any], None]) -> ReadOnly:
        setattr_(os, "open", self.os_open)
        setattr_(os, "mkdir", self.mkdir)
        setattr_(builtins, "open", self.open)
        setattr_(io, "open", self.open)
        return self


# ------------------------------------------------------------------------------------------------
# What a folder of outputs may hold
# ------------------------------------------------------------------------------------------------

APPEND_ONLY = ("train.log", "metrics.jsonl", "predictions.csv", "predictions.samples.csv")


def temp_files(root: Path) -> list[Path]:
    """Leftover temporary files of interrupted atomic writes (``.NAME.XXXX.tmp``)."""
    return sorted(p for p in root.rglob(f"*{TEMP_SUFFIX}") if p.name.startswith("."))


def check_complete(path: Path, torn_tail_allowed: bool = False) -> None:
    """Fail unless ``path`` is a complete file of its kind (append-only logs may end in one torn line)."""
    data = path.read_bytes()
    name = path.name
    if not data and name in APPEND_ONLY:
        return  # created by an append that wrote nothing (O_CREAT happens before the write fails)
    torn = torn_tail_allowed and name in APPEND_ONLY
    if name.endswith((".csv", ".jsonl", ".log", ".yaml", ".html", ".json")):
        if not torn:
            assert data.endswith(b"\n"), f"{path}: does not end with a newline (torn write)"
        text = data[: data.rfind(b"\n") + 1].decode("utf-8")
        if name.endswith(".csv"):
            rows = list(csv.reader(io.StringIO(text)))
            assert rows and all(len(row) == len(rows[0]) for row in rows), f"{path}: ragged CSV"
        elif name.endswith(".jsonl"):
            for line in text.splitlines():
                json.loads(line)
        elif name.endswith(".json"):
            json.loads(text)
        elif name.endswith(".yaml"):
            yaml.safe_load(text)
        elif name.endswith(".html"):
            assert text.rstrip().endswith("</html>"), f"{path}: HTML is cut off"
    elif name.endswith(".safetensors"):
        from safetensors.torch import load

        load(data)
    elif name.endswith(".pdf"):
        assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF"), f"{path}: PDF is cut off"
    elif name.endswith(".png"):
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(PNG_END), f"{path}: PNG is cut off"
    elif name.endswith(".npy"):
        import numpy as np

        np.load(io.BytesIO(data), allow_pickle=False)


def check_folder(root: Path, torn_tail_allowed: bool = False) -> list[Path]:
    """Every output under ``root`` is complete; returns them (temp files and lock files excluded)."""
    outputs = [p for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith((TEMP_SUFFIX, ".lock"))]
    for path in outputs:
        check_complete(path, torn_tail_allowed)
    return outputs


def assert_one_line_error(code: int, output: str, *needles: str) -> str:
    """A failed command: non-zero exit, no traceback, exactly one ``error:`` line holding ``needles``."""
    assert code != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# ------------------------------------------------------------------------------------------------
# The tiny pipeline
# ------------------------------------------------------------------------------------------------


@dataclass
class TinyPipeline:
    """Outputs of one uninterrupted pipeline run, and the commit points each command made.

    Attributes:
        root: the folder holding everything.
        scans: the synthetic cohort.
        manifest: ``index/manifest.csv``.
        config: the training recipe.
        run: the run directory.
        predictions: ``score/predictions.csv`` (the whole manifest).
        report: the report folder of ``predictions`` with ``--run run``.
        points: command -> file names of the commit points it made under its output, in order.
        written: command -> bytes it wrote under its output.
    """

    root: Path
    scans: Path
    manifest: Path
    config: Path
    run: Path
    predictions: Path
    report: Path
    points: dict[str, list[str]] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)

    def index_args(self, out: Path) -> list[object]:
        return ["index", self.scans, "--labels", self.scans / "labels.csv", "-o", out, "--workers", "1"]

    def train_args(self, out: Path, resume: bool = False) -> list[object]:
        return ["train", self.config, "-o", out, *(["--resume"] if resume else [])]

    def score_args(self, out: Path) -> list[object]:
        return ["score", self.run, self.manifest, "-o", out, "--workers", "0", "--batch-size", "2"]

    def report_args(self, out: Path, seed: int = 0) -> list[object]:
        return ["report", self.predictions, "-o", out, "--run", self.run, *REPORT_ARGS, "--seed", seed]


def write_train_config(path: Path, manifest: Path) -> Path:
    """The tiny training recipe for ``manifest`` (3 epochs of a 2-layer CNN on 16 x 16 x 12 voxels)."""
    recipe = {"data": {"manifest": str(manifest)}, **TRAIN_RECIPE}
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread: the same thread count in the killed child and in the rerun (bit-identical weights)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_tiny_pipeline(root: Path) -> TinyPipeline:
    """Synthesise, index, train, score and report once, counting each command's commit points."""
    import warnings

    import pytest

    from medrec.synth import generate_cohort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate_cohort(root / "scans", **COHORT)
    pipeline = TinyPipeline(root=root, scans=root / "scans", manifest=root / "index" / "manifest.csv",
                            config=root / "train.yaml", run=root / "run",
                            predictions=root / "score" / "predictions.csv", report=root / "report")
    write_train_config(pipeline.config, pipeline.manifest)
    steps = [("index", pipeline.index_args(root / "index"), root / "index"),
             ("train", pipeline.train_args(pipeline.run), pipeline.run),
             ("score", pipeline.score_args(pipeline.predictions), pipeline.predictions.parent),
             ("report", pipeline.report_args(pipeline.report), pipeline.report)]
    with single_thread():
        for name, args, out in steps:
            with pytest.MonkeyPatch.context() as patch:
                points = WritePoints(out).install(patch.setattr)
                code = cli(args)
            if code != 0:
                raise AssertionError(f"tiny pipeline: medrec {name} failed with exit code {code}")
            pipeline.points[name], pipeline.written[name] = points.names, points.bytes
    return pipeline
