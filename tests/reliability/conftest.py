"""Helpers for the reliability tests: tiny hand-built DICOM series and an in-process CLI runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_ct_series(
    folder: Path,
    *,
    patient_id: str = "RELPAT01",
    series_description: str = "AXIAL",
    slices: int = 4,
    size: int = 16,
    seed: int = 0,
) -> list[Path]:
    """Write a tiny valid axial CT series (``slices`` slices of ``size`` x ``size``) and return its paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\x00" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.PatientID = patient_id
        ds.PatientName = "RELIABILITY^TEST"
        ds.StudyDate = "20240101"
        ds.SeriesDescription = series_description
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [0.0, 0.0, float(k) * 2.0]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.0
        ds.Rows = size
        ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = 1
        ds.RescaleIntercept = 0
        ds.PixelData = rng.integers(-100, 100, size=(size, size), dtype=np.int16).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def ct_series() -> Callable[..., list[Path]]:
    return write_ct_series


@pytest.fixture
def run_cli(medrec_cli: Callable[..., tuple[int, str, str]]) -> Callable[[list[str]], tuple[int, str]]:
    """``f(args) -> (exit code, stdout + stderr)``: :func:`medrec_cli` with the two streams together."""

    def _run(args: list[str]) -> tuple[int, str]:
        code, out, err = medrec_cli(*args)
        return code, out + err

    return _run


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """A 10-patient cohort indexed, trained (3 tiny epochs), scored and reported once: see pipeline_faults.py."""
    from .pipeline_faults import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_pipeline"))
