"""Shared helpers of the benchmark scripts: environment record, timing, data folder, figures.

Every figure a benchmark reports is a ratio of two timings (or sizes) measured side by side in
the same run, because the machines these run on are shared and noisy; absolute numbers are kept
next to the ratio for context only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# Generated inputs (git-ignored); reused across runs so that only the first run pays for them.
DATA_DIR = Path(os.environ.get("MEDREC_BENCH_DATA", BENCH_DIR / ".data"))
PACKAGES = ("medrec", "torch", "monai", "pydicom", "numpy", "scikit-learn", "scipy", "pandas")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """Where the figures were measured: cores, CPU model, memory, OS, Python."""
    return {
        "cores": usable_cores(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_total_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def library_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """Wall-clock seconds of one call and its result."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


@dataclass
class Figure:
    """One line of the results table: a ratio measured side by side, its target and whether it is met.

    ``higher_is_better`` says which side of ``target`` passes (ratio >= target, or ratio <= target).
    ``target`` None marks an informational figure.
    """

    benchmark: str
    name: str
    ratio: float
    target: float | None
    higher_is_better: bool
    compared: str
    absolute: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "(info)"
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g}x"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = round(self.ratio, 3)
        data["met"] = self.met
        data["target_text"] = self.target_text
        return data


def say(message: str) -> None:
    print(message, flush=True)


def header(name: str, what: str) -> None:
    say("")
    say(f"== {name} ==")
    say(what)
    m = machine()
    say(f"machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB; load average {load_average()}")
    say("versions: " + ", ".join(f"{k} {v}" for k, v in library_versions().items()))


def print_figures(figures: list[Figure]) -> None:
    for figure in figures:
        verdict = {True: "MET", False: "MISSED", None: "info"}[figure.met]
        say(f"  {figure.name}: {figure.ratio:.2f}x (target {figure.target_text}) {verdict} | {figure.compared}")


def python() -> str:
    return sys.executable


def write_record(record: dict[str, Any], path: str | None) -> None:
    """A benchmark's result record as JSON, to ``path`` (for run_all.py) or to stdout."""
    import json

    text = json.dumps(record, indent=2, default=str)
    if path:
        Path(path).write_text(text + "\n")
    else:
        print(text)


def bench_arguments(doc: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The command line every ``bench_<name>.py`` shares: ``--quick`` and ``--json FILE`` (plus ``extra``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--json", default=None, help="write the result record to this file instead of stdout")
    if extra is not None:
        extra(parser)
    return parser.parse_args()
