"""Lesion-level results of a predictions file: its sidecar, its candidate findings file and a lesion
table read into the studies (:class:`~medrec.report.lesions.froc.LesionCase`) that
:func:`~medrec.report.lesions.froc.lesion_level_analysis` judges, with the hit tolerance and the
counts of lesion rows left out; and the same studies' finding maps, when scoring wrote them, pooled
into the voxel-level average precision (:mod:`~medrec.report.lesions.voxel_ap`)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medrec.annotations import Lesion, read_annotations
from medrec.errors import ConfigError, InputError
from medrec.report.lesions.froc import LesionCase, Point, lesion_level_analysis
from medrec.report.lesions.voxel_ap import VoxelStudy, map_folders, voxel_level_ap
from medrec.score.writer import read_findings, read_rows, read_sidecar, sidecar_path


def require_lesion_table(lesions: str | os.PathLike[str]) -> Path:
    """``lesions`` as a path, checked to exist before anything is scored or analysed.

    Raises:
        InputError: the file is missing, naming it and the columns it needs.
    """
    path = Path(lesions)
    if not path.is_file():
        raise InputError(f"{lesions}: lesion table not found; pass a CSV with study_uid or series_uid, "
                         "center_x, center_y, center_z (LPS mm) and diameter_mm")
    return path


def findings_file_of(predictions_csv: str | os.PathLike[str]) -> Path:
    """The candidate findings file that the predictions' sidecar names.

    Raises:
        InputError: the predictions have no sidecar, the sidecar names no findings file (the run is
            not a finding-map model), or the named file is missing.
    """
    source = Path(predictions_csv)
    record = read_sidecar(source) or {}
    name = record.get("findings_file")
    if not name:
        why = "has no sidecar" if not sidecar_path(source).is_file() else "was not written by a finding-map run"
        raise InputError(
            f"{source}: {why} ({sidecar_path(source).name} names no findings file), so lesion-level results cannot "
            "be computed; --lesions needs the predictions of a finding-map model (e.g. finding_fcn) written by "
            "'medrec score', with its <name>.findings.csv beside them"
        )
    path = source.with_name(Path(str(name)).name)
    if not path.is_file():
        raise InputError(f"{path}: the findings file named by {sidecar_path(source).name} is missing; score again "
                         "with 'medrec score' to write it")
    return path


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


def _number(value: object) -> float | None:
    try:
        number = float(_text(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _point(x: object, y: object, z: object) -> Point | None:
    values = (_number(x), _number(y), _number(z))
    return None if any(v is None for v in values) else values  # type: ignore[return-value]


def lesion_level_results(
    predictions_csv: str | os.PathLike[str],
    predictions: pd.DataFrame,
    lesions_csv: str | os.PathLike[str],
    *,
    threshold: float,
    positive_label: str,
    classes: Sequence[str],
    manifest: pd.DataFrame | None = None,
    tolerance_mm: float | None = None,
    ci_method: str = "wilson",
) -> dict[str, Any]:
    """Lesion-level results of a predictions file against a lesion table.

    Args:
        predictions_csv: the predictions file (its sidecar names the findings file and the voxel size).
        predictions: its rows, raw identifiers (``medrec.report.build.read_predictions``).
        lesions_csv: the lesion table (``study_uid`` and / or ``series_uid``, ``center_x/y/z`` LPS mm,
            ``diameter_mm``, optional ``contrast``), read by :func:`medrec.annotations.read_annotations`.
        threshold: the report's operating threshold (``score >= threshold`` is positive).
        positive_label: the positive class.
        classes: the two classes (rows with another label are not analysed).
        manifest: gives each sample's ``series_uid`` (lesion rows that name a series); optional.
        tolerance_mm: the hit tolerance; default: one voxel of the scoring grid (from the sidecar).
        ci_method: ``wilson`` or ``clopper-pearson``.

    Returns:
        :func:`lesion_level_analysis`'s dict plus the file names, the tolerance's source, the
        counts of lesion rows left out and ``voxel_ap``
        (:func:`~medrec.report.lesions.voxel_ap.voxel_level_ap`: a value, or the reason there is none).

    Raises:
        InputError: no findings file (not a finding-map run), or an unreadable findings file.
        AnnotationError: the lesion table is missing or lacks columns.
        ConfigError: no tolerance is known.
    """
    source = Path(predictions_csv)
    findings_file = findings_file_of(source)
    record = read_sidecar(source) or {}
    if tolerance_mm is not None:
        tolerance, tolerance_source = float(tolerance_mm), "given (--lesion-tolerance)"
    elif _number(record.get("findings_voxel_mm")) is not None:
        tolerance = float(record["findings_voxel_mm"])
        tolerance_source = "one voxel: the largest spacing of the run's scoring grid"
    else:
        raise ConfigError(f"{sidecar_path(source)}: records no voxel size of the scoring grid; give the hit "
                          "tolerance with --lesion-tolerance MM")

    rows = predictions.to_dict("records")
    level = str(record.get("level") or "series")
    members: list[list[str]] = []
    for row in rows:
        grouped = _text(row.get("sample_ids"))
        members.append(grouped.split(";") if level != "series" and grouped else [_text(row.get("sample_id"))])
    samples = _sample_rows(source, record, rows, level)
    series_of: dict[str, str] = {}
    if manifest is not None and {"sample_id", "series_uid"} <= set(manifest.columns):
        series_of = {_text(s): _text(u) for s, u in zip(manifest["sample_id"], manifest["series_uid"], strict=True)}
    table = pd.DataFrame({
        "sample_id": [_text(r.get("sample_id")) for r in samples],
        "study_uid": [_text(r.get("study_uid")) for r in samples],
        "series_uid": [series_of.get(_text(r.get("sample_id")), "") for r in samples],
        "label": [_text(r.get("label")) for r in samples],
    }).drop_duplicates("sample_id")
    annotations = read_annotations(table, lesions=lesions_csv, label_positive=lambda label: label == positive_label)

    candidates: dict[str, list[tuple[float, Point | None]]] = {}
    for finding in read_findings(findings_file):
        probability = _number(finding.get("probability"))
        if probability is not None:
            candidates.setdefault(_text(finding.get("sample_id")), []).append(
                (probability, _point(finding.get("x"), finding.get("y"), finding.get("z"))))

    negative = next((name for name in classes if name != positive_label), None)
    failed = {_text(r.get("sample_id")) for r in samples if _text(r.get("error"))}
    cases, analysed_sources = [], set()
    voxel_studies: list[VoxelStudy] = []
    for row, sample_ids in zip(rows, members, strict=True):
        label, score = _text(row.get("label")), _number(row.get("score"))
        if _text(row.get("error")) or label not in (positive_label, negative) or score is None:
            continue
        lesions: dict[str, Lesion] = {}
        for sample_id in sample_ids:
            lesions.update({lesion.source: lesion for lesion in annotations.lesions.get(sample_id, [])})
        positive = label == positive_label
        if positive:
            analysed_sources.update(lesions)
        cases.append(LesionCase(
            positive=positive,
            predicted_positive=score >= threshold,
            lesions=tuple(lesions.values()),
            candidates=tuple(c for sample_id in sample_ids for c in candidates.get(sample_id, [])),
            top=_point(row.get("finding_x"), row.get("finding_y"), row.get("finding_z")),
        ))
        scored = tuple(sample_id for sample_id in sample_ids if sample_id not in failed)  # failed: no map
        voxel_studies.append(VoxelStudy(positive, tuple(lesions.values()), scored))
    result = lesion_level_analysis(cases, tolerance, ci_method)
    counts = annotations.counts
    attached = {lesion.source for found in annotations.lesions.values() for lesion in found}
    result.update(
        findings_file=findings_file.name,
        lesion_table=Path(lesions_csv).name,
        tolerance_source=tolerance_source,
        candidate_min_probability=_number(record.get("findings_min_probability")),
        candidate_max_per_sample=_number(record.get("findings_max_per_sample")),
        voxel_ap=voxel_level_ap(voxel_studies, map_folders(source, record)),
        lesion_rows={
            "total": counts["lesion_rows"],
            "bad": counts["lesion_rows_bad"],
            "not_in_predictions": counts["lesion_rows_unmatched"],
            "in_negative_studies": max(counts["lesion_rows_matched"] - len(attached), 0),
            "in_studies_not_analysed": len(attached - analysed_sources),
            "analysed": len(analysed_sources),
        },
    )
    return result


def _sample_rows(source: Path, record: Mapping[str, Any], rows: list[dict], level: str) -> list[dict]:
    """Per-sample identity and label: the predictions themselves, or their samples file for grouped rows."""
    if level == "series":
        return rows
    name = record.get("samples_file")
    path = source.with_name(Path(str(name)).name) if name else None
    if path is None or not path.is_file():
        raise InputError(f"{source}: its rows are {level}s but the samples file {name or '(none named)'} is missing; "
                         "lesions are matched per sample: keep the samples file beside the predictions")
    return read_rows(path)[1]
