"""What a run directory remembers of its steps: ``RUN/workflow.json``, the fingerprint of the inputs
each finished step consumed, so that a rerun skips the steps whose inputs are unchanged.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medrec.atomicio import write_text
from medrec.hashing import sha256_json

STATE_FILE = "workflow.json"


def folder_fingerprint(folder: Path, skip: Sequence[Path] = ()) -> str:
    """sha256 over the relative path, size and modification time of every file under ``folder``.

    Cheap (no file is read), and changes when a file is added, removed, replaced or edited.
    """
    skipped = [p.resolve() for p in skip]
    entries = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not any((root_path / d).resolve() == s for s in skipped))
        for name in sorted(files):
            path = root_path / name
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return sha256_json(entries)


class WorkflowState:
    """``RUN/workflow.json``: the fingerprint each finished step consumed."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATE_FILE
        self.steps: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                loaded = {}  # a damaged state file only costs a rerun of the steps
            self.steps = dict(loaded.get("steps", {})) if isinstance(loaded, dict) else {}

    def is_current(self, step: str, fingerprint: str) -> bool:
        return self.steps.get(step, {}).get("fingerprint") == fingerprint

    def record(self, step: str, fingerprint: str, seconds: float) -> None:
        self.steps[step] = {"fingerprint": fingerprint, "seconds": round(seconds, 2),
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_text(self.path, json.dumps({"steps": self.steps}, indent=2) + "\n")
