"""The manifest and qc tables: columns, reading and writing (contract in DESIGN.md).

``manifest.csv`` has one row per sample (a DICOM series or a NIfTI file); ``qc.csv`` lists every
file or series that was left out, with its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from medrec.atomicio import write_csv
from medrec.errors import ManifestError

MANIFEST_COLUMNS: tuple[str, ...] = (
    "sample_id",  # stable id of the sample: a hash of series_uid (DICOM) or of the file path (NIfTI)
    "patient_id",
    "study_uid",
    "series_uid",
    "accession",
    "modality",  # CT, MR, DX, CR, ...
    "format",  # dicom | nifti
    "path",  # the NIfTI file, or the folder that holds the series (for display)
    "files",  # DICOM: JSON list of the series' files, sorted along the slice normal; NIfTI: empty
    "label",  # from the labels file; empty when unknown
    "n_slices",
    "rows",
    "cols",
    "spacing_x",  # mm between columns
    "spacing_y",  # mm between rows
    "spacing_z",  # mm between slice centres (1.0 for a single 2D image)
    "slice_thickness",
    "orientation",  # axial | coronal | sagittal | oblique
    "manufacturer",
    "sex",
    "age",  # years, numeric, 90 for anyone older (HIPAA Safe Harbor); empty when unknown
    "series_description",
    "selection",  # why this series was chosen for its study
    "warnings",  # ';'-joined geometry warnings that leave the series usable
)

QC_COLUMNS: tuple[str, ...] = ("path", "series_uid", "reason")

REQUIRED_MANIFEST_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "patient_id",
    "study_uid",
    "series_uid",
    "modality",
    "format",
    "path",
    "label",
)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV with identifiers kept as strings.

    Raises:
        ManifestError: the file is missing or lacks required columns.
    """
    source = Path(path)
    if not source.is_file():
        raise ManifestError(f"{source}: manifest not found; create one with 'medrec index SCANS -o DIR'")
    try:
        frame = pd.read_csv(
            source,
            dtype={"sample_id": str, "patient_id": str, "study_uid": str, "series_uid": str, "accession": str,
                   "label": str, "files": str, "warnings": str, "selection": str, "sex": str},
            keep_default_na=False,
            na_values={"age": [""], "n_slices": [""], "rows": [""], "cols": [""], "spacing_x": [""],
                       "spacing_y": [""], "spacing_z": [""], "slice_thickness": [""]},
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise ManifestError(f"{source}: not a readable CSV manifest ({e})") from e
    missing = [column for column in REQUIRED_MANIFEST_COLUMNS if column not in frame.columns]
    if missing:
        raise ManifestError(
            f"{source}: manifest lacks column(s) {', '.join(missing)}; expected at least "
            f"{', '.join(REQUIRED_MANIFEST_COLUMNS)}"
        )
    return frame


MANIFEST_HASH_RULE = "sha256 of manifest.csv with the samples' common folder written as <scans>"


def manifest_sha256(path: str | Path) -> str:
    """A digest of a manifest that does not depend on where the scan folder lies.

    The manifest holds absolute paths, so the same scans indexed in another checkout (or on
    another machine) would hash differently; the samples' common folder is replaced by
    ``<scans>`` first (:data:`MANIFEST_HASH_RULE`). Any other change changes the digest.
    """
    text = Path(path).read_text(encoding="utf-8")
    paths = [value for value in read_manifest(path)["path"] if value]
    if paths:
        root = os.path.commonpath(paths)
        if root.strip(os.sep):
            text = text.replace(root, "<scans>")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a manifest atomically, contract columns first, extra columns after."""
    ordered = [c for c in MANIFEST_COLUMNS if c in frame.columns] + [
        c for c in frame.columns if c not in MANIFEST_COLUMNS
    ]
    write_csv(path, frame[ordered])


def write_qc(frame: pd.DataFrame, path: str | Path) -> None:
    """Write qc.csv atomically (always written, with its header, even when empty)."""
    for column in QC_COLUMNS:
        if column not in frame.columns:
            frame = frame.assign(**{column: ""})
    ordered = list(QC_COLUMNS) + [c for c in frame.columns if c not in QC_COLUMNS]
    write_csv(path, frame[ordered])


def series_files(row: pd.Series | dict) -> list[str]:
    """The sorted file list of a DICOM manifest row (empty for NIfTI)."""
    raw = row["files"] if "files" in row else ""
    if not isinstance(raw, str) or not raw.strip():
        return []
    try:
        files = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ManifestError(f"sample {row.get('sample_id', '?')}: 'files' is not a JSON list ({e})") from e
    if not isinstance(files, list) or not all(isinstance(item, str) for item in files):
        raise ManifestError(f"sample {row.get('sample_id', '?')}: 'files' must be a JSON list of paths")
    return files
