"""The predictions file's layout: its columns, the identity part of its rows, and the sample-level file
kept next to it when rows are grouped by study or patient."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medrec.score.aggregate import GROUP_COLUMNS
from medrec.score.findings import FINDING_COLUMNS

IDENTITY_COLUMNS = ("sample_id", "patient_id", "study_uid")


def samples_path(output: str | Path) -> Path:
    """Where sample-level rows are kept (resumably) when ``--level`` is study or patient."""
    target = Path(output)
    return target.with_name(f"{target.stem}.samples.csv")


def score_columns(classes: Sequence[str]) -> list[str]:
    """``["score"]`` for a binary run, ``score_<class>`` per class otherwise."""
    return ["score"] if len(classes) == 2 else [f"score_{name}" for name in classes]


def output_columns(classes: Sequence[str], level: str, tta: bool, findings: bool = False) -> list[str]:
    """The header of the predictions file for these classes, level, TTA setting and model kind."""
    columns = [*IDENTITY_COLUMNS, *score_columns(classes), "prediction", "label", "error"]
    if tta:
        columns.append("uncertainty")
    if findings:
        columns.extend(FINDING_COLUMNS)
    if level != "series":
        columns.extend(GROUP_COLUMNS)
    return columns


def _base_row(sample: Mapping[str, Any]) -> dict[str, Any]:
    def text(name: str) -> str:
        value = sample.get(name, "")
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)

    return {"sample_id": text("sample_id"), "patient_id": text("patient_id"), "study_uid": text("study_uid"),
            "label": text("label"), "error": "", "prediction": ""}
