"""Fixtures for the loader tests: tiny hand-made DICOM series and NIfTI files with known geometry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_affine(iop: Sequence[float], pixel_spacing: Sequence[float], slice_spacing: float,
               origin: Sequence[float]) -> np.ndarray:
    """The convention's LPS affine, built independently of the loader."""
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    affine = np.eye(4)
    affine[:3, 0] = row * pixel_spacing[1]
    affine[:3, 1] = col * pixel_spacing[0]
    affine[:3, 2] = normal * slice_spacing
    affine[:3, 3] = origin
    return affine


def write_dicom_slice(path: Path, stored: np.ndarray, *, ipp: Sequence[float] | None, iop: Sequence[float] | None,
                      pixel_spacing: Sequence[float] = (0.7, 0.8), slope: float = 1.0, intercept: float = -1024.0,
                      photometric: str = "MONOCHROME2", bits_stored: int = 16, signed: bool = True,
                      instance: int = 1, series_uid: str = "1.2.3.4", modality: str = "CT",
                      extra: Callable[[Dataset], None] | None = None) -> Path:
    """Write one uncompressed single-frame slice whose pixel array is ``stored`` (rows x cols)."""
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = CTImageStorage
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=file_meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = "P001"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
    ds.SliceThickness = "2.5"
    if iop is not None:
        ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
    if ipp is not None:
        ds.ImagePositionPatient = [f"{v:g}" for v in ipp]
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.PixelData = np.ascontiguousarray(stored.astype(np.int16 if signed else np.uint16)).tobytes()
    if extra is not None:
        extra(ds)
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.fixture
def ct_series(tmp_path: Path):
    """Factory: write a CT series from a HU volume ``vol[i, j, k]``; returns (files in slice order, affine_ras).

    Each slice gets its own intercept (``intercepts``) and slope (``slopes``); the stored value is
    ``(HU - intercept) / slope``, so the HU must be representable.
    """

    def make(volume_hu: np.ndarray, *, iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.7, 0.8), slice_spacing=2.5,
             origin=(-20.0, -30.0, 40.0), slopes=None, intercepts=None, folder: str = "series",
             photometric: str = "MONOCHROME2") -> tuple[list[str], np.ndarray]:
        out = tmp_path / folder
        out.mkdir(parents=True, exist_ok=True)
        n_slices = volume_hu.shape[2]
        slopes = slopes if slopes is not None else [1.0] * n_slices
        intercepts = intercepts if intercepts is not None else [-1024.0] * n_slices
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        files = []
        for k in range(n_slices):
            stored = (volume_hu[:, :, k].T - intercepts[k]) / slopes[k]
            if not np.array_equal(stored, np.round(stored)):
                raise ValueError("HU not representable with this slope/intercept")
            ipp = np.asarray(origin, float) + k * slice_spacing * normal
            files.append(str(write_dicom_slice(
                out / f"slice_{k:03d}.dcm", stored.astype(np.int64), ipp=ipp, iop=iop,
                pixel_spacing=pixel_spacing, slope=slopes[k], intercept=intercepts[k], instance=k + 1,
                photometric=photometric)))
        return files, LPS_TO_RAS @ lps_affine(iop, pixel_spacing, slice_spacing, origin)

    return make


def patch_nifti_header(path: Path, offset: int, fmt: str, *values: float) -> None:
    """Overwrite raw header bytes of a saved NIfTI-1 file (gzip or not), bypassing nibabel's fixes."""
    import gzip
    import struct

    packed = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    data = bytearray(packed)
    struct.pack_into(fmt, data, offset, *values)
    path.write_bytes(gzip.compress(bytes(data)) if path.suffix == ".gz" else bytes(data))


@pytest.fixture
def nifti_patcher():
    """:func:`patch_nifti_header` as a fixture."""
    return patch_nifti_header


@pytest.fixture
def nifti_file(tmp_path: Path):
    """Factory: write ``array`` with ``affine`` as NIfTI-1; optional stored dtype and scaling."""

    def make(array: np.ndarray, affine: np.ndarray | None = None, name: str = "image.nii.gz",
             dtype=None, slope: float | None = None, inter: float | None = None) -> str:
        affine = np.diag([0.9, 1.1, 2.0, 1.0]) if affine is None else affine
        stored = array if dtype is None else array.astype(dtype)
        image = nib.Nifti1Image(stored, affine)
        image.header.set_sform(affine, code=1)
        image.header.set_qform(affine, code=1)
        path = tmp_path / name
        nib.save(image, str(path))
        if slope is not None:
            # nibabel recomputes the scaling on save; patch scl_slope / scl_inter afterwards
            patch_nifti_header(path, 112, "<2f", slope, inter or 0.0)
        return str(path)

    return make


def dicom_row(files: list[str], sample_id: str = "s1", modality: str = "CT") -> dict:
    """A manifest row for a DICOM series (the ``files`` column is a JSON list, as in manifest.csv)."""
    import json

    return {"sample_id": sample_id, "patient_id": "P001", "study_uid": "1.2.3", "series_uid": "1.2.3.4",
            "format": "dicom", "path": str(Path(files[0]).parent), "files": json.dumps(files),
            "modality": modality, "label": "1"}


def nifti_row(path: str, sample_id: str = "n1", modality: str = "MR") -> dict:
    return {"sample_id": sample_id, "patient_id": "P002", "study_uid": "9.9", "series_uid": "9.9.1",
            "format": "nifti", "path": path, "files": "", "modality": modality, "label": "0"}


@pytest.fixture
def make_dicom_row():
    return dicom_row


@pytest.fixture
def make_nifti_row():
    return nifti_row


@pytest.fixture
def slice_writer():
    """The single-slice writer (:func:`write_dicom_slice`) as a fixture."""
    return write_dicom_slice
