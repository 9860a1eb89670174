"""A manifest row to a decoded :class:`~medrec.loader.volume.Volume`, and its content hash.

This module needs only numpy, pydicom and nibabel (no torch), so that worker processes that
only hash pixel content start quickly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import numpy as np

from medrec.budget import resolve_max_bytes
from medrec.errors import ManifestError, MedrecError
from medrec.loader.dicom import read_dicom_series
from medrec.loader.nifti import read_nifti
from medrec.loader.volume import Volume
from medrec.manifest import series_files

FORMATS = ("dicom", "nifti")


def row_text(row: Mapping, key: str) -> str:
    """A row field as a string ('' when missing or NaN)."""
    value = row.get(key, "") if hasattr(row, "get") else ""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def _dicom_files(row: Mapping) -> list[str]:
    raw = row.get("files", "")
    if isinstance(raw, (list, tuple)):
        files = [str(f) for f in raw]
    else:
        files = series_files({"files": raw, "sample_id": row_text(row, "sample_id")})
    if not files:
        path = row_text(row, "path")
        if path and os.path.isfile(path):
            return [path]
        raise ManifestError(
            f"sample {row_text(row, 'sample_id') or '?'}: DICOM row lists no 'files' and 'path' {path!r} is not a "
            f"file; build the manifest with 'medrec index'"
        )
    return files


def load_volume(row: Mapping, max_bytes: int | None = None) -> Volume:
    """Decode a manifest row into a :class:`Volume` (numpy; no torch).

    Args:
        row: a dict or pandas Series with at least ``format`` and ``path`` (NIfTI) or ``files`` (DICOM).
        max_bytes: memory budget for the decoded float32 array; ``None`` reads ``$MEDREC_MAX_BYTES``
            (default 8 GiB).

    Raises:
        ManifestError: unknown format, no files.
        DicomError, NiftiError: the files cannot be decoded.
        ResourceBudgetError: the headers claim more than the budget.
    """
    budget = resolve_max_bytes(max_bytes)
    sample_id = row_text(row, "sample_id")
    fmt = row_text(row, "format").strip().lower()
    if fmt == "dicom":
        volume = read_dicom_series(_dicom_files(row), budget, source=f"sample {sample_id}")
    elif fmt == "nifti":
        path = row_text(row, "path")
        if not path:
            raise ManifestError(f"sample {sample_id or '?'}: NIfTI row has an empty 'path'")
        volume = read_nifti(path, budget)
    else:
        raise ManifestError(
            f"sample {sample_id or '?'}: format {fmt!r} is not one of {', '.join(FORMATS)}; build the manifest "
            f"with 'medrec index'"
        )
    modality = row_text(row, "modality")
    if modality and not volume.modality:
        volume.modality = modality
    return volume


def content_hash(row: Mapping, max_bytes: int | None = None) -> str:
    """SHA-256 of the decoded voxels (shape, dtype and bytes), independent of file names and headers.

    Two rows with the same hash hold the same pixel content, whatever their UIDs; the split
    leakage audit uses this to catch a scan copied under another patient or study.

    Raises:
        Same as :func:`load_sample`.
    """
    array = np.ascontiguousarray(load_volume(row, max_bytes).array, dtype=np.float32)
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def content_hash_job(job: Mapping) -> tuple[str, str, str]:
    """Process-pool worker: ``(sample_id, hash, "")``, or ``(sample_id, "", reason)`` when the row fails.

    ``job`` is a manifest row (a dict) with an optional ``_max_bytes`` budget.
    """
    row = dict(job)
    budget = row.pop("_max_bytes", None)
    sample_id = row_text(row, "sample_id")
    try:
        return sample_id, content_hash(row, budget), ""
    except MedrecError as e:
        return sample_id, "", str(e)
