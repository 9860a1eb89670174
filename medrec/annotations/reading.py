"""Read a lesion table and / or a masks file and match their rows to the manifest's samples.

A lesion table row names a series (matched first) or a study (every sample of the study gets the
lesion); masks-file rows match samples exactly as ``medrec index --labels`` matches them
(:func:`medrec.index.labels.match_labels`).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from medrec.annotations.record import Annotations, Lesion
from medrec.errors import AnnotationError, LabelsError
from medrec.index.labels import KEY_ALIASES, SERIES_UID_ALIASES, find_column, match_labels, read_labels, sniff_delimiter
from medrec.labels import positive_labels
from medrec.manifest import series_files

CENTER_COLUMNS: tuple[str, ...] = ("center_x", "center_y", "center_z")
DIAMETER_COLUMN = "diameter_mm"
CONTRAST_COLUMN = "contrast"
MASK_COLUMN = "mask"
# stands for an empty mask cell while matching: the labels matcher skips rows whose value is empty
_NO_MASK = "\x00no-mask"


def read_annotations(
    manifest: pd.DataFrame,
    lesions: str | Path | None = None,
    masks: str | Path | None = None,
    label_positive: Callable[[str], bool] | None = None,
) -> Annotations:
    """Read a lesion table and / or a masks file and match them to the manifest's samples.

    Args:
        manifest: the manifest (:func:`medrec.manifest.read_manifest`).
        lesions: lesion table CSV (``study_uid`` and / or ``series_uid``, ``center_x``, ``center_y``,
            ``center_z`` in LPS mm, ``diameter_mm``).
        masks: labels-style CSV with a ``mask`` column (NIfTI path relative to the CSV's folder; empty
            when the study has no lesion).
        label_positive: whether a label is the positive class; default: the project's rule
            (:func:`medrec.labels.positive_labels` over the manifest's labels). Empty labels are unknown.

    Returns:
        :class:`Annotations`; problems are listed, never raised.

    Raises:
        AnnotationError: a file is missing, unreadable or lacks a required column (names the file and
            the columns found).
    """
    result = Annotations()
    samples = manifest.astype({"sample_id": str}).reset_index(drop=True)
    labels = {str(s): str(v) for s, v in zip(samples["sample_id"], samples["label"].fillna(""), strict=True)}
    if label_positive is None:
        positive_set = positive_labels(labels.values())
        label_positive = positive_set.__contains__

    table_lesions: dict[str, list[Lesion]] = defaultdict(list)
    if lesions is not None:
        table_lesions = _read_lesion_table(Path(lesions), samples, result)
    mask_cells: dict[str, str] = {}  # sample_id -> mask cell ('' when empty)
    if masks is not None:
        mask_cells = _read_mask_rows(Path(masks), samples, result)

    for sample_id, label in labels.items():
        positive = bool(label) and label_positive(label)
        negative = bool(label) and not positive
        if positive:
            result.positives.add(sample_id)
        cell = mask_cells.get(sample_id)
        found = table_lesions.get(sample_id, [])
        if negative:
            result.lesion_free.add(sample_id)
            if found or cell:
                result.counts["negatives_with_lesions"] += 1
                named = [lesion.source for lesion in found] + ([result.mask_sources[sample_id]] if cell else [])
                result.add_problem("; ".join(named), sample_id,
                                   f"label '{label}' is negative but {len(found)} lesion row(s)"
                                   f"{' and a mask' if cell else ''} give a lesion; its target is kept all zeros")
            continue
        if cell and not Path(cell).is_file():
            result.counts["masks_bad"] += 1
            result.add_problem(result.mask_sources[sample_id], sample_id,
                               f"mask file {cell} not found; the sample is label-only")
            continue
        if found:
            result.lesions[sample_id] = list(found)
        if cell:
            result.masks[sample_id] = Path(cell)
        elif cell is not None and not found and not positive:
            result.masks[sample_id] = None
            result.lesion_free.add(sample_id)
        if positive and not found and not cell:
            result.counts["positives_without_annotation"] += 1
    result.counts["samples_annotated"] = sum(result.is_annotated(s) for s in labels)
    result.counts["samples_lesion_free"] = sum(s in result.lesion_free for s in labels)
    return result


def _read_table(source: Path) -> pd.DataFrame:
    if not source.is_file():
        raise AnnotationError(f"{source}: annotation file not found; pass an existing CSV")
    try:
        sample = source.read_text(encoding="utf-8-sig", errors="replace")[:65536]
        frame = pd.read_csv(source, sep=sniff_delimiter(sample, source), dtype=str, keep_default_na=False,
                            encoding="utf-8-sig", skipinitialspace=True)
    except OSError as e:
        raise AnnotationError(f"{source}: cannot read ({e.strerror})") from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{source}: not a readable CSV ({' '.join(str(e).split())})") from e
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda column: column.str.strip())


def check_lesion_table(path: str | Path) -> None:
    """Fail early on a lesion table that is missing, unreadable or lacks a required column.

    Raises:
        AnnotationError: names the file, the missing columns and the columns found.
    """
    _lesion_columns(_read_table(Path(path)), Path(path))


def _lesion_columns(frame: pd.DataFrame, source: Path) -> tuple[str | None, str | None, dict[str, str]]:
    """The table's study / series key columns and its centre and diameter columns."""
    study_column = find_column(frame, KEY_ALIASES["study_uid"])
    series_column = find_column(frame, SERIES_UID_ALIASES)
    columns = {name: find_column(frame, (name,)) for name in (*CENTER_COLUMNS, DIAMETER_COLUMN)}
    missing = [name for name, column in columns.items() if column is None]
    if study_column is None and series_column is None:
        missing.insert(0, "study_uid or series_uid")
    if missing:
        found = ", ".join(frame.columns) if len(frame.columns) else "(none)"
        raise AnnotationError(
            f"{source}: lesion table lacks column(s) {', '.join(missing)}; columns found: {found}. Expected "
            f"study_uid and / or series_uid, center_x, center_y, center_z (LPS mm), diameter_mm"
        )
    return study_column, series_column, {name: str(column) for name, column in columns.items()}


def _read_lesion_table(source: Path, samples: pd.DataFrame, result: Annotations) -> dict[str, list[Lesion]]:
    frame = _read_table(source)
    study_column, series_column, columns = _lesion_columns(frame, source)
    contrast_column = find_column(frame, (CONTRAST_COLUMN,))
    by_series: dict[str, list[str]] = defaultdict(list)
    by_study: dict[str, list[str]] = defaultdict(list)
    for sample_id, study_uid, series_uid in zip(samples["sample_id"], samples["study_uid"], samples["series_uid"],
                                                strict=True):
        by_series[str(series_uid)].append(sample_id)
        by_study[str(study_uid)].append(sample_id)

    found_lesions: dict[str, list[Lesion]] = defaultdict(list)
    counts = result.counts
    for index in range(len(frame)):
        where = f"{source.name} line {index + 2}"  # line 1 is the header
        counts["lesion_rows"] += 1
        row = frame.iloc[index]
        study_uid = row[study_column] if study_column else ""
        series_uid = row[series_column] if series_column else ""
        center = tuple(_number(row[columns[name]]) for name in CENTER_COLUMNS)
        diameter = _number(row[columns[DIAMETER_COLUMN]])
        reason = ""
        if not study_uid and not series_uid:
            reason = "no study_uid or series_uid"
        elif not all(math.isfinite(value) for value in center):
            given = ", ".join(row[columns[n]] or "empty" for n in CENTER_COLUMNS)
            reason = f"centre ({given}) is not a finite position"
        elif not math.isfinite(diameter) or diameter <= 0:
            reason = f"diameter_mm {row[columns[DIAMETER_COLUMN]] or 'empty'} is not a positive number"
        if reason:
            counts["lesion_rows_bad"] += 1
            result.add_problem(where, "", f"bad lesion row: {reason}; the row is ignored")
            continue
        hits = by_series.get(series_uid, []) if series_uid else []
        if not hits and study_uid:
            hits = by_study.get(study_uid, [])
        if not hits:
            counts["lesion_rows_unmatched"] += 1
            named = " / ".join(f"{kind} {uid}" for kind, uid in (("series_uid", series_uid), ("study_uid", study_uid))
                               if uid)
            result.add_problem(where, "", f"lesion row matches no manifest sample ({named})")
            continue
        counts["lesion_rows_matched"] += 1
        if len(hits) > 1:
            counts["lesion_rows_multi_sample"] += 1
        contrast = _number(row[contrast_column]) if contrast_column else math.nan
        lesion = Lesion(center_lps=center, diameter_mm=diameter, source=where,  # type: ignore[arg-type]
                        contrast=contrast if math.isfinite(contrast) else None)
        for sample_id in hits:
            found_lesions[sample_id].append(lesion)
    return found_lesions


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _read_mask_rows(source: Path, samples: pd.DataFrame, result: Annotations) -> dict[str, str]:
    """Match the masks file to samples; returns sample_id -> absolute mask path ('' for an empty cell)."""
    try:
        table = read_labels(source, label_column=MASK_COLUMN)
    except LabelsError as e:
        raise AnnotationError(f"masks file: {e}") from e
    mask_column = table.label_column
    line_of_cell: dict[str, int] = {}
    frame = table.frame.copy()
    frame[mask_column] = frame[mask_column].where(frame[mask_column] != "", _NO_MASK)
    table.frame = frame
    result.counts["mask_rows"] = len(frame)
    rows = []
    for record in samples.to_dict("records"):
        record = {key: ("" if value is None else value) for key, value in record.items()}
        record["_files"] = series_files(record) if record.get("format") == "dicom" else []
        rows.append(record)
    paths = [str(row["path"]) for row in rows if row.get("path")]
    scans_root = Path(os.path.commonpath(paths)) if paths else source.parent
    if scans_root.is_file():
        scans_root = scans_root.parent
    match = match_labels(table, rows, scans_root)
    for line, cell in zip(range(2, len(frame) + 2), frame[mask_column], strict=True):
        line_of_cell.setdefault(cell, line)
    unmatched_lines = set(int(line) for line in match.unmatched_rows.get("line", []))
    result.counts["mask_rows_unmatched"] = len(unmatched_lines)
    result.counts["mask_rows_matched"] = len(frame) - len(unmatched_lines)
    for line in sorted(unmatched_lines):
        key_value = frame.iloc[line - 2][table.key_columns[match.match_on]]
        result.add_problem(f"{source.name} line {line}", "",
                           f"mask row matches no manifest sample ({match.match_on} {key_value or 'empty'})")
    for sample_id, reason in match.conflicts.items():
        result.counts["mask_conflicts"] += 1
        detail = reason.split(": ", 1)[-1].replace(f"'{_NO_MASK}'", "'' (no lesion)")
        result.add_problem(source.name, sample_id, f"rows disagree on the mask: {detail}; the sample is label-only")
    cells: dict[str, str] = {}
    for sample_id, cell in match.labels.items():
        # a mask path names its row; empty cells are many, so only the file is named for them
        result.mask_sources[sample_id] = source.name if cell == _NO_MASK else f"{source.name} line {line_of_cell[cell]}"
        cells[sample_id] = "" if cell == _NO_MASK else str((source.parent / cell).absolute())
    return cells
