"""Small hand-built DICOM inputs for the index tests (a few 8x8 slices each)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT_UID = "1.2.826.0.1.3680043.10.9999."


def uid(*parts: object) -> str:
    """A deterministic valid UID."""
    return generate_uid(prefix=ROOT_UID, entropy_srcs=[str(p) for p in parts])


def make_slice(
    position: Sequence[float],
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    *,
    series_uid: str,
    study_uid: str,
    patient_id: str | None = "P001",
    sop_uid: str | None = None,
    instance_number: int = 1,
    rows: int = 8,
    cols: int = 8,
    modality: str = "CT",
    image_type: str = "ORIGINAL\\PRIMARY\\AXIAL",
    description: str = "",
    accession: str = "ACC1",
    frames: int = 1,
    pixel_value: int = 0,
) -> Dataset:
    """One CT-like image dataset with known geometry and 16-bit pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or uid(series_uid, *position)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.PatientName = "Secret^Name"
    ds.PatientSex = "F"
    ds.PatientAge = "063Y"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.Manufacturer = "Acme"
    ds.SeriesDescription = description
    ds.ImageType = image_type
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [0.7, 0.8]
    ds.SliceThickness = 2.0
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.full((frames, rows, cols), pixel_value, dtype=np.uint16).tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    n: int = 8,
    *,
    spacing: float = 2.0,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (-5.0, -5.0, 10.0),
    series_uid: str | None = None,
    study_uid: str | None = None,
    skip: Sequence[int] = (),
    name: str = "IM{index:04d}",
    positions_along: Sequence[float] | None = None,
    in_plane_shift: Sequence[float] = (0.0, 0.0, 0.0),
    **slice_kw: object,
) -> list[Path]:
    """Write an n-slice stack; file names and InstanceNumbers run opposite to the slice order.

    Returns the paths in ascending position along the slice normal (skipped slices left out).
    """
    series_uid = series_uid or uid(folder, "series")
    study_uid = study_uid or uid(folder, "study")
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    along = positions_along if positions_along is not None else [k * spacing for k in range(n)]
    paths = []
    for k, distance in enumerate(along):
        if k in skip:
            continue
        position = np.asarray(origin, dtype=float) + distance * normal + k * np.asarray(in_plane_shift, dtype=float)
        # names and instance numbers descend while positions ascend: sorting must use the geometry
        index = len(along) - k
        ds = make_slice(
            position,
            orientation,
            series_uid=series_uid,
            study_uid=study_uid,
            sop_uid=uid(series_uid, k),
            instance_number=index,
            **slice_kw,
        )
        paths.append(save(ds, folder / name.format(index=index)))
    return paths


def truncate(path: Path, keep_fraction: float = 0.9) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


def read_uid(path: Path, keyword: str) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).get(keyword))
