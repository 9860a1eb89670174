"""Resuming a predictions file: refusing to mix models or settings in one file, refreshing the labels of the
rows already written, and the studies an earlier run already scored."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medrec.errors import OutputError
from medrec.score.layout import _base_row, samples_path
from medrec.score.writer import PredictionsWriter, findings_path, read_rows, read_sidecar, sidecar_path

# settings that must be the same for every row of one predictions file
RESUME_KEYS = ("model_sha256", "level", "aggregate", "tta", "threshold", "num_parts", "part_id", "findings_file")


def _check_resume(output: Path, rows_file: Path, record: Mapping[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Refuse to mix two models or two settings in one file; returns the previous sidecar (if any)."""
    if overwrite:
        for path in {output, rows_file, sidecar_path(output), findings_path(output)}:
            path.unlink(missing_ok=True)
        return None
    previous = read_sidecar(output)
    has_rows = any(bool(read_rows(path)[1]) for path in {output, rows_file} if path.exists())
    if not has_rows:
        return previous
    if previous is None:
        raise OutputError(
            f"{output}: exists but has no sidecar {sidecar_path(output).name}, so the model that made it is "
            "unknown; pass --overwrite to start fresh or choose another -o"
        )
    if previous.get("model_sha256") != record["model_sha256"]:
        raise OutputError(
            f"{output}: was written by another model (sha256 {str(previous.get('model_sha256'))[:12]}..., this run "
            f"has {record['model_sha256'][:12]}...); pass --overwrite to start fresh or choose another -o"
        )
    for key in RESUME_KEYS[1:]:
        if previous.get(key) != record.get(key):
            raise OutputError(
                f"{output}: was written with {key}={previous.get(key)!r}, this command has {key}={record.get(key)!r}; "
                "rerun with the same options, pass --overwrite to start fresh, or choose another -o"
            )
    return previous


def _refresh_labels(writer: PredictionsWriter, done: dict[str, dict[str, str]], manifest: pd.DataFrame) -> int:
    """Give the rows already written the label ``manifest`` has for their sample now; returns the rows changed.

    The patient and study ids are refreshed with the label: a labels file matched by path names the
    patient and study of a NIfTI file (which has no UIDs of its own), and study / patient rows are
    grouped by them. Rows of samples that are not in ``manifest`` are kept as they are. The file is
    rewritten atomically, and only when a row changed.
    """
    current = {row["sample_id"]: row for row in map(_base_row, manifest.to_dict("records"))}
    changed = 0
    for sample_id, row in done.items():
        now = current.get(sample_id)
        if now is None:
            continue
        fresh = {name: now[name] for name in ("patient_id", "study_uid", "label")}
        if any(row.get(name, "") != value for name, value in fresh.items()):
            row.update(fresh)
            changed += 1
    if changed:
        writer.rewrite(done.values())
    return changed


def studies_done(output: str | Path, level: str, retry_errors: bool) -> list[str]:
    """The studies an existing output already scored (not fetched again from a PACS); with ``retry_errors``
    a study with a failed row counts as not done."""
    rows_file = Path(output) if level == "series" else samples_path(output)
    if not rows_file.is_file():
        return []
    from medrec.score.writer import read_rows

    done: dict[str, bool] = {}
    for row in read_rows(rows_file)[1]:
        study = str(row.get("study_uid") or "")
        if study:
            done[study] = done.get(study, True) and not (retry_errors and row.get("error"))
    return sorted(study for study, ok in done.items() if ok)
