"""The predictions file: header written once, one complete line appended per sample, resumable.

A scoring run can be killed at any moment (SIGKILL, power loss). Rows go through
:func:`medrec.atomicio.append_line` (one ``write`` + fsync per line, a torn trailing line is cut
off by the next append and ignored by readers), so a rerun sees exactly the samples that were
finished and appends the rest: each sample ends in the file exactly once.

Next to the file lies its sidecar JSON (``<output>.json``) that records which model made it;
a rerun with another model is refused instead of mixing two models in one file.

Finding-map runs also write the candidate findings file (``<output stem>.findings.csv``, several
rows per sample, :class:`FindingsWriter`). A sample's candidates are appended before its
prediction row, and a rerun keeps only the candidates of samples whose prediction row is in the
file, so a sample killed between the two writes is scored again without duplicate candidates.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medrec.atomicio import append_line, atomic_open, read_complete_lines, write_text
from medrec.errors import InputError, OutputError

MAX_ERROR_CHARS = 400
FINDINGS_COLUMNS: tuple[str, ...] = ("sample_id", "study_uid", "patient_id", "rank", "x", "y", "z", "diameter_mm",
                                     "probability")


def sidecar_path(output: str | Path) -> Path:
    """``predictions.csv`` -> ``predictions.csv.json`` (the run record of that file)."""
    target = Path(output)
    return target.with_name(target.name + ".json")


def findings_path(output: str | Path) -> Path:
    """``predictions.csv`` -> ``predictions.findings.csv`` (the candidate findings of a finding-map run)."""
    target = Path(output)
    return target.with_name(f"{target.stem}.findings.csv")


def read_sidecar(output: str | Path) -> dict[str, Any] | None:
    """The sidecar JSON of ``output``, or None when there is none.

    Raises:
        OutputError: the sidecar exists but is not valid JSON.
    """
    path = sidecar_path(output)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OutputError(f"{path}: unreadable sidecar ({e}); delete it or pass --overwrite") from e
    if not isinstance(data, dict):
        raise OutputError(f"{path}: sidecar must hold a JSON object; delete it or pass --overwrite")
    return data


def write_sidecar(output: str | Path, record: Mapping[str, Any]) -> Path:
    """Write the sidecar JSON of ``output`` atomically; returns its path."""
    path = sidecar_path(output)
    write_text(path, json.dumps(dict(record), indent=2, sort_keys=True, default=str) + "\n")
    return path


def one_line(text: object, limit: int = MAX_ERROR_CHARS) -> str:
    """Collapse ``text`` to a single line of at most ``limit`` characters (for the error column)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def format_value(value: object) -> str:
    """CSV cell text: floats at full precision (round-trip), None / NaN as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if hasattr(value, "item") and not isinstance(value, str):  # numpy / torch scalars
        return format_value(value.item())
    return one_line(value, limit=10_000) if isinstance(value, str) and ("\n" in value or "\r" in value) else str(value)


def format_row(columns: Sequence[str], row: Mapping[str, object]) -> str:
    """One CSV line (no newline) holding ``row``'s values in ``columns`` order."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([format_value(row.get(column)) for column in columns])
    return buffer.getvalue()


def read_rows(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and complete rows of a predictions CSV (a torn last line is ignored).

    Returns:
        ``(columns, rows)``; ``([], [])`` when the file does not exist or is empty.
    """
    lines = read_complete_lines(path)
    if not lines:
        return [], []
    parsed = list(csv.reader(lines))
    columns = parsed[0]
    rows = [dict(zip(columns, values, strict=False)) for values in parsed[1:] if len(values) == len(columns)]
    return columns, rows


class PredictionsWriter:
    """Append-only, crash-safe writer of one predictions CSV.

    Args:
        path: the CSV file.
        columns: its header, in order.
        key: the column that identifies a row (``sample_id``).
    """

    def __init__(self, path: str | Path, columns: Sequence[str], key: str = "sample_id") -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.key = key

    def start(self, retry_errors: bool = False) -> dict[str, dict[str, str]]:
        """Create the file with its header, or reopen it; returns the rows already done by key.

        Args:
            retry_errors: drop rows whose ``error`` is non-empty (rewriting the file atomically)
                so that their samples are scored again.

        Raises:
            OutputError: the existing file has a different header (made by another command line).
        """
        columns, rows = read_rows(self.path)
        if not columns:
            write_text(self.path, format_row(self.columns, dict(zip(self.columns, self.columns, strict=True))) + "\n")
            return {}
        if columns != self.columns and not rows:
            self.rewrite([])  # only a header from other options: nothing to keep
            return {}
        if columns != self.columns:
            raise OutputError(
                f"{self.path}: existing columns ({', '.join(columns)}) differ from this run's "
                f"({', '.join(self.columns)}); it was made with other options (--tta, --level, classes); "
                "use the same options, another -o, or --overwrite"
            )
        done: dict[str, dict[str, str]] = {}
        for row in rows:
            done[row[self.key]] = row  # a duplicate cannot arise from this writer; the last one wins
        kept = {key: row for key, row in done.items() if not (retry_errors and row.get("error"))}
        if len(kept) != len(rows):
            self.rewrite(kept.values())
        return kept

    def rewrite(self, rows: Iterable[Mapping[str, object]]) -> None:
        """Replace the whole file atomically with the header and ``rows``."""
        with atomic_open(self.path, "w") as handle:
            handle.write(format_row(self.columns, dict(zip(self.columns, self.columns, strict=True))) + "\n")
            for row in rows:
                handle.write(format_row(self.columns, row) + "\n")

    def append(self, rows: Iterable[Mapping[str, object]]) -> None:
        """Append rows, one complete line each (each line is fsynced before the call returns)."""
        for row in rows:
            append_line(self.path, format_row(self.columns, row))


class FindingsWriter:
    """Append-only, crash-safe writer of the candidate findings file (:data:`FINDINGS_COLUMNS`).

    Args:
        path: the CSV file (:func:`findings_path` of the predictions file).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lines = PredictionsWriter(self.path, FINDINGS_COLUMNS)

    def start(self, scored: Iterable[str]) -> int:
        """Create the file with its header, or keep the rows of the samples in ``scored`` only.

        Args:
            scored: sample ids whose prediction rows are kept (their candidates are final).

        Returns:
            The rows kept.

        Raises:
            OutputError: the existing file has another header.
        """
        columns, rows = read_rows(self.path)
        if not columns:
            self._lines.rewrite([])
            return 0
        if columns != list(FINDINGS_COLUMNS):
            raise OutputError(
                f"{self.path}: existing columns ({', '.join(columns)}) are not those of a findings file "
                f"({', '.join(FINDINGS_COLUMNS)}); move it away or pass --overwrite"
            )
        keep = set(scored)
        kept = [row for row in rows if row.get("sample_id") in keep]
        if len(kept) != len(rows) or len(read_complete_lines(self.path)) != len(rows) + 1:
            self._lines.rewrite(kept)
        return len(kept)

    def append(self, rows: Iterable[Mapping[str, object]]) -> None:
        """Append candidate rows, one complete line each."""
        self._lines.append(rows)


def read_findings(path: str | Path) -> list[dict[str, str]]:
    """The complete rows of a candidate findings file (a torn last line is ignored).

    Raises:
        InputError: the file is missing or lacks the findings columns.
    """
    if not Path(path).is_file():
        raise InputError(f"{path}: findings file not found; score again with 'medrec score' to write it")
    columns, rows = read_rows(path)
    missing = [name for name in FINDINGS_COLUMNS if name not in columns]
    if missing:
        raise InputError(f"{path}: not a findings file (lacks {', '.join(missing)}); score again to write it")
    return rows
