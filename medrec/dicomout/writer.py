"""Write a DICOM object as a Part 10 file, atomically, under a name that says what it is."""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from medrec.atomicio import atomic_open
from medrec.dicomout.results import DicomExportError

_MODALITY = re.compile(r"[A-Z0-9_]{1,16}")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def dataset_file_name(ds: Dataset) -> str:
    """``<Modality>_<SOPInstanceUID>.dcm`` (both checked, so the name is always a plain file name).

    Raises:
        DicomExportError: Modality or SOPInstanceUID is missing or malformed.
    """
    modality = str(ds.get("Modality", ""))
    uid = str(ds.get("SOPInstanceUID", ""))
    if not _MODALITY.fullmatch(modality):
        raise DicomExportError(f"cannot name the file: Modality {modality!r} is not a DICOM code string")
    if not _UID.fullmatch(uid) or len(uid) > 64:
        raise DicomExportError(f"cannot name the file: SOPInstanceUID {uid!r} is not a DICOM UID")
    return f"{modality}_{uid}.dcm"


def write_dataset(ds: Dataset, out_dir: Path) -> Path:
    """Write ``ds`` to ``out_dir/<Modality>_<SOPInstanceUID>.dcm`` and return the path.

    The file appears whole or not at all (a temp file beside it, fsynced, then ``os.replace``), so
    a folder watched by a DICOM sender never sees half an object; writing the same object again
    replaces the file.

    Raises:
        DicomExportError: the dataset cannot be named (see :func:`dataset_file_name`).
        OutputError: the folder is not writable or the disk is full.
    """
    target = Path(out_dir) / dataset_file_name(ds)
    with atomic_open(target, "wb") as handle:
        pydicom.dcmwrite(handle, ds, enforce_file_format=True)
    return target
