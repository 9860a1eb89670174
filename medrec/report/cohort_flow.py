"""The participant flow of the report (STARD 2015): files and series through indexing (manifest.csv
and qc.csv), then samples found, excluded with reasons, scored and analysed, and the per-split table.

Only counts and path-scrubbed reasons leave this module, never identifiers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from medrec.report import document as doc_model

# qc.csv reason codes (medrec index) as the cohort-flow table names them.
QC_CODE_TEXT: dict[str, str] = {
    "dicomweb_series_gone": "listed by the PACS but gone when fetched",
    "dicomweb_fetch_failed": "could not be fetched from the PACS",
    "dicomweb_incomplete": "arrived incomplete from the PACS",
    "localizer": "localizer / scout series",
    "not_best_series": "another series of the same study was chosen",
    "derived": "derived / secondary series",
    "below_min_slices": "fewer slices than the recipe requires",
    "too_few_slices": "too few slices for a volume",
    "missing_slices": "missing slices (gap in the stack)",
    "inconsistent_size": "slices of different sizes in one series",
    "invalid_orientation": "inconsistent or invalid orientation",
    "missing_geometry": "pixel data without Rows / Columns (image size unknown)",
    "no_geometry": "no slice position / orientation",
    "duplicate_position": "two slices at one position",
    "inconsistent_orientation": "slices of different orientations in one series",
    "inconsistent_spacing": "uneven slice spacing",
    "duplicate_sop": "duplicate SOP instance",
    "truncated": "truncated file",
    "corrupt_pixel_data": "corrupt pixel data",
    "bits_inconsistent": "BitsStored / HighBit inconsistent",
    "no_pixel_data": "no pixel data (not an image object)",
    "non_image_object": "non-image object (SEG, RTSTRUCT, SR, ...)",
    "modality_not_allowed": "modality not in the recipe",
    "over_budget": "larger than the memory budget",
    "dicom_unreadable": "unreadable DICOM",
    "unreadable": "unreadable file",
    "empty_file": "zero-byte file",
    "not_dicom": "not a DICOM or NIfTI file",
    "executable_preamble": "executable code in the DICOM preamble",
    "nifti_unreadable": "unreadable NIfTI",
    "nifti_pixdim": "NIfTI with invalid voxel size",
    "nifti_scaling": "NIfTI with invalid scaling / values",
    "nifti_geometry": "NIfTI with invalid geometry",
    "nifti_values": "NIfTI with non-finite values",
    "label_conflict": "conflicting labels",
    "excluded_by_pattern": "excluded by a file pattern",
    "not_included": "not matched by the include patterns",
}

# DICOM UIDs (dotted digit strings) are identifiers: never copied from a reason into a report.
_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")


def _scrub_reason(value: object) -> str:
    return _UID.sub("<uid>", doc_model.scrub_paths(value) or "") or "unspecified"


def _count_reasons(values: pd.Series) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        reason = _scrub_reason(value)
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _count_qc_reasons(qc: pd.DataFrame) -> dict[str, int]:
    """Exclusions by reason: by the index's reason code when qc.csv has one, else by scrubbed text."""
    if "code" in qc.columns:
        codes = qc["code"].astype(str).str.strip()
        texts = pd.Series([QC_CODE_TEXT.get(code, code.replace("_", " ")) if code else "" for code in codes],
                          index=qc.index)
        fallback = qc["reason"] if "reason" in qc.columns else pd.Series([""] * len(qc), index=qc.index)
        return _count_reasons(texts.where(codes != "", fallback))
    return _count_reasons(qc["reason"] if "reason" in qc.columns else pd.Series([""] * len(qc)))


# qc.csv codes of files left out before they joined a series: unreadable, not an image, excluded by pattern, a
# duplicate copy; every other code excludes a whole series (one qc row per file of it).
FILE_LEVEL_CODES = frozenset({
    "unreadable", "empty_file", "not_dicom", "executable_preamble", "dicom_unreadable", "truncated",
    "corrupt_pixel_data", "bits_inconsistent", "duplicate_sop", "excluded_by_pattern", "not_included", "lesion_mask",
    "nifti_unreadable", "nifti_pixdim", "nifti_scaling", "nifti_geometry", "nifti_values",
})
# series that were eligible and passed quality control but another series of their study was chosen
NOT_SELECTED_CODES = frozenset({"not_best_series"})
# selected series dropped when the labels were matched
AFTER_SELECTION_CODES = frozenset({"label_conflict"})
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _manifest_files(manifest: pd.DataFrame) -> tuple[int, int] | None:
    """``(DICOM files, NIfTI files)`` behind the manifest's samples, or None when a DICOM row lists no files."""
    dicom = nifti = 0
    formats = manifest["format"].astype(str).str.strip().str.lower() if "format" in manifest.columns \
        else pd.Series("", index=manifest.index)
    files = manifest["files"] if "files" in manifest.columns else pd.Series("", index=manifest.index)
    for fmt, cell in zip(formats, files.astype(str), strict=True):
        if fmt != "dicom":
            nifti += 1
            continue
        try:
            listed = json.loads(cell) if cell.strip() else None
        except json.JSONDecodeError:
            listed = None
        if not isinstance(listed, list) or not listed:
            return None
        dicom += len(listed)
    return dicom, nifti


def index_flow(manifest: pd.DataFrame | None, qc: pd.DataFrame | None) -> dict | None:
    """Files and series through indexing, each counted in its own unit, from manifest.csv and qc.csv.

    qc.csv holds one row per file left out. A row whose code is a file-level one
    (:data:`FILE_LEVEL_CODES`; without codes: a row without ``series_uid``) excludes that file; any
    other row belongs to a series (a NIfTI volume is a series of one file) excluded as a whole, counted
    once per series: by quality control or the eligibility rules, as not chosen for its study
    (``not_best_series``: no QC failure), or after selection (conflicting labels).

    Returns:
        ``{n_files, n_files_dicom, n_files_nifti (readable), n_readable, n_series, n_series_passing,
        n_selected, n_manifest, n_studies, n_patients, file_exclusions, series_exclusions,
        not_selected, after_selection}``; each exclusion list holds ``{reason, n_series, n_files}``
        (file exclusions: ``n_files`` only). File counts are None when the manifest does not list
        its DICOM files. None without a manifest and a qc table.
    """
    if manifest is None or qc is None:
        return None
    behind = _manifest_files(manifest)
    paths = qc["path"].astype(str) if "path" in qc.columns else pd.Series("", index=qc.index)
    series = qc["series_uid"].astype(str).str.strip() if "series_uid" in qc.columns \
        else pd.Series("", index=qc.index)
    codes = qc["code"].astype(str).str.strip() if "code" in qc.columns else pd.Series("", index=qc.index)
    nifti_row = paths.str.lower().str.endswith(NIFTI_SUFFIXES)
    # a series is its UID; a NIfTI volume is its file (NIfTI "series" UIDs are the study's placeholder)
    key = series.where(~nifti_row, "nifti:" + paths)
    kept_keys = _manifest_series_keys(manifest)
    # files that never joined a series, and files left out of a series that was kept
    file_level = codes.isin(FILE_LEVEL_CODES) | (series == "") | key.isin(kept_keys)
    texts = pd.Series([QC_CODE_TEXT.get(c, c.replace("_", " ")) if c else _scrub_reason(r)
                       for c, r in zip(codes, qc["reason"] if "reason" in qc.columns else [""] * len(qc),
                                       strict=True)], index=qc.index, dtype=str)

    # a series leaves at its earliest exclusion: quality control / eligibility, then selection, then labels
    stages = ("series_exclusions", "not_selected", "after_selection")

    def stage_of(code: str) -> int:
        return 1 if code in NOT_SELECTED_CODES else (2 if code in AFTER_SELECTION_CODES else 0)

    series_rows = qc.index[~file_level]
    exclusion: dict[str, tuple[int, str]] = {}  # series key -> (stage, reason) of its earliest exclusion
    for index in series_rows:
        found = (stage_of(codes[index]), texts[index])
        exclusion[key[index]] = min(found, exclusion.get(key[index], found))
    series_of: dict[tuple[int, str], set[str]] = {}
    files_of: dict[tuple[int, str], int] = {}
    for index in series_rows:
        where = exclusion[key[index]]
        series_of.setdefault(where, set()).add(key[index])
        files_of[where] = files_of.get(where, 0) + 1

    def listing(stage: str) -> list[dict]:
        rows = [{"reason": reason, "n_series": len(series_of[(number, reason)]), "n_files": files_of[(number, reason)]}
                for number, reason in series_of if stages[number] == stage]
        return sorted(rows, key=lambda row: (-row["n_series"], row["reason"]))

    file_exclusions = [{"reason": reason, "n_files": n} for reason, n in _count_reasons(texts[file_level]).items()]
    n_excluded_series = {stage: sum(row["n_series"] for row in listing(stage)) for stage in stages}
    n_manifest = int(len(manifest))
    n_series = n_manifest + sum(n_excluded_series.values())
    n_files = n_readable = n_dicom = n_nifti = None
    if behind is not None:
        n_files = behind[0] + behind[1] + int(len(qc))
        n_readable = n_files - int(file_level.sum())
        series_level = ~file_level
        n_dicom = behind[0] + int((series_level & ~nifti_row).sum())
        n_nifti = behind[1] + int((series_level & nifti_row).sum())
    return {
        "n_files": n_files,
        "n_readable": n_readable,
        "n_files_dicom": n_dicom,
        "n_files_nifti": n_nifti,
        "file_exclusions": file_exclusions,
        "n_files_excluded": int(file_level.sum()),
        "n_series": n_series,
        "series_exclusions": listing("series_exclusions"),
        "n_series_passing": n_series - n_excluded_series["series_exclusions"],
        "not_selected": listing("not_selected"),
        "n_selected": n_series - n_excluded_series["series_exclusions"] - n_excluded_series["not_selected"],
        "after_selection": listing("after_selection"),
        "n_manifest": n_manifest,
        "n_studies": int(manifest["study_uid"].astype(str).nunique()) if "study_uid" in manifest.columns else None,
        "n_patients": int(manifest["patient_id"].astype(str).nunique()) if "patient_id" in manifest.columns else None,
        "n_selected_per_study": _series_per_study(manifest),
    }


def _manifest_series_keys(manifest: pd.DataFrame) -> set[str]:
    """The manifest's samples as :func:`index_flow` keys its series: the series UID, ``nifti:<path>`` for NIfTI."""
    if "series_uid" not in manifest.columns:
        return set()
    formats = manifest["format"].astype(str).str.strip().str.lower() if "format" in manifest.columns \
        else pd.Series("", index=manifest.index)
    paths = manifest["path"].astype(str) if "path" in manifest.columns else pd.Series("", index=manifest.index)
    return {f"nifti:{path}" if fmt == "nifti" else str(uid)
            for fmt, path, uid in zip(formats, paths, manifest["series_uid"].astype(str), strict=True)}


def _series_per_study(manifest: pd.DataFrame) -> int | None:
    """The most series any study has in the manifest (1: one series per study)."""
    if "study_uid" not in manifest.columns or manifest.empty:
        return None
    return int(manifest.groupby(manifest["study_uid"].astype(str)).size().max())


def cohort_flow(
    predictions: pd.DataFrame,
    manifest: pd.DataFrame | None,
    qc: pd.DataFrame | None,
    splits: pd.DataFrame | None,
    positive_label: str | None,
    classes: Sequence[str] = (),
    positive_aliases: Sequence[str] = (),
    also_scored: pd.DataFrame | None = None,
    level: str = "series",
) -> dict:
    """Counts for the participant flow (STARD 2015): found, excluded with reasons, scored, analysed.

    ``positive_aliases`` are other label texts of the positive class: the run's class name when the
    predictions' labels were matched to the run's classes by polarity (the run's manifest and
    splits use the run's names). ``also_scored`` are prediction rows taken out before the analysis
    (the run's own training / validation data): scored, so not counted as missing from the
    predictions. ``level`` is the predictions' level: a manifest sample counts as scored when a row
    names it, or (hand-made study / patient rows without ``sample_ids``) its study / patient. Only
    counts and path-scrubbed reasons leave this function, never identifiers.

    With a manifest and its qc.csv, ``index`` holds the flow through indexing in files and series
    (:func:`index_flow`); with splits, ``not_scored_by_split`` counts the manifest's unscored
    samples by their split (the run's training and validation data, for ``medrec evaluate``).
    """
    errors = predictions["error"].astype(str).str.strip()
    failed = errors != ""
    labels = predictions["label"].astype(str).str.strip()
    labelled = labels.isin(list(classes)) if classes else labels != ""
    score_columns = [c for c in predictions.columns if c == "score" or c.startswith("score_")]
    scored = predictions[score_columns].notna().all(axis=1)
    analysed = predictions[~failed & labelled & scored]
    cohort: dict = {
        "n_predictions": int(len(predictions)) + (len(also_scored) if also_scored is not None else 0),
        "n_errors": int(failed.sum()),
        "error_reasons": _count_reasons(errors[failed]),
        "n_studies": int(analysed["study_uid"].replace("", np.nan).nunique()),
        "level": level,
    }
    if manifest is not None:
        cohort["n_manifest"] = int(len(manifest))
        cohort["n_manifest_studies"] = (int(manifest["study_uid"].astype(str).nunique())
                                        if "study_uid" in manifest.columns else None)
        cohort["n_manifest_patients"] = int(manifest["patient_id"].astype(str).nunique())
        rows = pd.concat([predictions, also_scored]) if also_scored is not None and len(also_scored) else predictions
        in_predictions = set(rows["sample_id"].astype(str))
        if "sample_ids" in rows.columns:  # study / patient rows list their samples
            in_predictions |= {member for cell in rows["sample_ids"] for member in str(cell).split(";")
                               if member}
        scored_samples = manifest["sample_id"].astype(str).isin(in_predictions)
        key = {"study": "study_uid", "patient": "patient_id"}.get(level)
        if key is not None and key in manifest.columns and key in rows.columns:
            groups = {part for cell in rows[key].astype(str) for part in cell.split(";") if part}
            scored_samples |= manifest[key].astype(str).isin(groups)
        cohort["n_not_scored"] = int((~scored_samples).sum())
        if splits is not None and {"sample_id", "split"} <= set(splits.columns) and (~scored_samples).any():
            split_of = dict(zip(splits["sample_id"].astype(str), splits["split"].astype(str).str.strip(), strict=False))
            missing = manifest.loc[~scored_samples, "sample_id"].astype(str).map(lambda s: split_of.get(s, ""))
            cohort["not_scored_by_split"] = {str(name): int(n) for name, n in sorted(
                missing.value_counts().items(), key=lambda item: _split_order(str(item[0]) or "~"))}
    if qc is not None:
        cohort["n_excluded_qc"] = int(len(qc))
        cohort["qc_reasons"] = _count_qc_reasons(qc)
    if manifest is not None and qc is not None:
        cohort["n_eligible"] = cohort["n_manifest"] + cohort["n_excluded_qc"]
        cohort["index"] = index_flow(manifest, qc)
    if splits is not None and {"sample_id", "split"} <= set(splits.columns):
        source = manifest if manifest is not None else predictions
        merged = source.merge(splits[["sample_id", "split"]], on="sample_id", how="inner")
        rows = []
        for split, part in sorted(merged.groupby("split"), key=lambda item: _split_order(str(item[0]))):
            labels = part["label"].astype(str).str.strip()
            known = labels[labels != ""]
            positives = (int(known.isin([positive_label, *positive_aliases]).sum())
                         if positive_label is not None else None)
            rows.append({
                "split": str(split),
                "n_samples": int(len(part)),
                "n_patients": int(part["patient_id"].nunique()),
                "n_studies": int(part["study_uid"].nunique()) if "study_uid" in part.columns else None,
                "n_positive": positives,
                "prevalence": positives / len(known) if positives is not None and len(known) else None,
            })
        cohort["splits"] = rows
    return cohort


def _split_order(name: str) -> tuple[int, str]:
    order = {"train": 0, "val": 1, "test": 2}
    return order.get(name, 3), name
