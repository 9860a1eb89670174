"""Who wrote a DICOM object and under which UIDs: fixed series numbers, descriptions, stable UIDs.

Every UID medrec writes is a ``2.25.<UUID>`` UID (PS3.5 B.2) whose UUID is name-based (version 5,
ISO/IEC 9834-8): for an SR or a SEG, of the weights' sha256, the study, the kind of object and the
sample ids; for a report PDF, of its sha256 and its sources. Writing the same results twice gives
the same SOPInstanceUID and SeriesInstanceUID, so re-sending to a PACS replaces the object instead
of adding a copy, and another model (another weights hash) never collides with it. Series UIDs
leave the sample ids out: one model's SRs of a study share a series whichever series were scored.

Why not ``pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)``: in pydicom 3 ``prefix=None``
ignores ``entropy_srcs`` and returns a random UUID, a new UID on every call; and with a prefix the
hash is cut to fit 64 characters, which is not a valid 2.25 (UUID) UID.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medrec.dicomout.results import Algorithm, SeriesResult
from medrec.errors import DicomError

MANUFACTURER = "medrec"

# Fixed series / instance numbers, so that a viewer lists medrec's objects after the scanner's.
SR_SERIES_NUMBER = 9901
SEG_SERIES_NUMBER = 9902
PDF_SERIES_NUMBER = 9903
INSTANCE_NUMBER = 1

# the namespace of medrec's name-based UUIDs (itself name-based, so it never changes)
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:medrec:dicomout")
LO_MAX = 64  # Long String, the VR of SeriesDescription, ContentDescription, model names


def long_string(text: str) -> str:
    """``text`` cut to the 64 characters of a DICOM Long String (LO)."""
    return text[:LO_MAX]


def series_description(algorithm: Algorithm, what: str) -> str:
    """``medrec <name> <what>`` (e.g. ``medrec finding_fcn results``), at most 64 characters."""
    return long_string(f"medrec {algorithm.name} {what}")


def stable_uid(*parts: object) -> str:
    """A 2.25 UID derived from ``parts`` (same parts, same UID; see the module docstring)."""
    # parts joined by the unit separator (0x1F), which no UID, hash or sample id contains in practice
    name = "\x1f".join(str(part) for part in parts)
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, name).int}"


def device_uid(algorithm: Algorithm) -> str:
    """The device observer UID of the algorithm: one per weights file."""
    return stable_uid("device", algorithm.weights_sha256)


def tracking_uid(algorithm: Algorithm, series_uid: str, sample_id: str) -> str:
    """The tracking UID of one scored series' finding, shared by its SR group and its SEG segment."""
    return stable_uid("tracking", algorithm.weights_sha256, series_uid, sample_id)


def object_uids(algorithm: Algorithm, study_uid: str, kind: str, sample_ids: Iterable[str]) -> tuple[str, str]:
    """``(series_uid, sop_instance_uid)`` of one object ``kind`` (``sr``, ``seg``) for these samples of a study."""
    series_uid = stable_uid(kind, "series", algorithm.weights_sha256, study_uid)
    instance_uid = stable_uid(kind, "instance", algorithm.weights_sha256, study_uid, *sorted(sample_ids))
    return series_uid, instance_uid


def read_header(path: str | os.PathLike[str]) -> Dataset:
    """One DICOM file without its pixel data.

    Raises:
        DicomError: the file is missing or not DICOM.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, InvalidDicomError) as e:
        raise DicomError(f"{path}: cannot read as DICOM ({e}); pass the files of the scored series") from e


def read_image(path: str | os.PathLike[str]) -> Dataset:
    """One DICOM file with its pixel data (a SEG needs its source images whole).

    Raises:
        DicomError: the file is missing or not DICOM.
    """
    try:
        return pydicom.dcmread(path)
    except (OSError, InvalidDicomError) as e:
        raise DicomError(f"{path}: cannot read as DICOM ({e}); pass the files of the scored series") from e


def read_series_headers(result: SeriesResult) -> list[Dataset]:
    """The headers of a result's source files, checked to form one series.

    Raises:
        DicomError: a file is unreadable, or the files belong to more than one series.
    """
    headers = [read_header(path) for path in result.source_files]
    check_one_series(headers, result.source_files, result.sample_id)
    return headers


def check_one_series(datasets: Sequence[Dataset], paths: Sequence[Path], sample_id: str) -> None:
    """Raise :class:`DicomError` unless every dataset has the first one's SeriesInstanceUID."""
    first = datasets[0].SeriesInstanceUID
    for dataset, path in zip(datasets, paths, strict=True):
        if dataset.SeriesInstanceUID != first:
            raise DicomError(
                f"sample {sample_id}: {path} belongs to series {dataset.SeriesInstanceUID}, not {first} like "
                f"{paths[0]}; source_files must be the files of one series"
            )
