"""DICOM series loading: values, geometry, per-slice rescale, MONOCHROME1, multi-frame, broken files."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.utils import MetaKeys, SpaceKeys
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from medrec.errors import DicomError, ManifestError, ResourceBudgetError
from medrec.loader import content_hash, load_sample

RNG = np.random.default_rng(0)


def hu_volume(shape=(6, 5, 4), low=-1000, high=2000, step=1) -> np.ndarray:
    return (RNG.integers(low // step, high // step, size=shape) * step).astype(np.float64)


def test_ct_series_values_affine_and_meta(ct_series, make_dicom_row):
    volume = hu_volume()
    files, affine_ras = ct_series(volume)
    image = load_sample(make_dicom_row(files))
    assert isinstance(image, MetaTensor)
    assert image.dtype == torch.float32
    assert tuple(image.shape) == (1, 6, 5, 4)
    np.testing.assert_array_equal(image[0].numpy(), volume)
    assert image.affine.dtype == torch.float64
    np.testing.assert_allclose(image.affine.numpy(), affine_ras, atol=1e-9)
    np.testing.assert_allclose(image.meta[MetaKeys.ORIGINAL_AFFINE], affine_ras, atol=1e-9)
    np.testing.assert_allclose(image.meta["spacing"], [0.8, 0.7, 2.5])
    assert image.meta[MetaKeys.SPACE] == SpaceKeys.RAS == "RAS"
    assert image.meta["sample_id"] == "s1"
    assert image.meta["format"] == "dicom"
    assert image.meta["modality"] == "CT"
    assert image.meta["notes"] == ""


def test_per_slice_rescale_gives_right_hu(ct_series, make_dicom_row):
    volume = hu_volume(step=2)
    intercepts = [-1024.0, -1000.0, -500.0, 0.0]
    slopes = [1.0, 2.0, 1.0, 2.0]
    files, _ = ct_series(volume, slopes=slopes, intercepts=intercepts)
    image = load_sample(make_dicom_row(files))
    np.testing.assert_array_equal(image[0].numpy(), volume)


def test_shuffled_files_are_sorted_along_the_normal(ct_series, make_dicom_row):
    volume = hu_volume(shape=(4, 4, 7))
    files, affine_ras = ct_series(volume)
    shuffled = files[:]
    random.Random(3).shuffle(shuffled)
    image = load_sample(make_dicom_row(shuffled))
    np.testing.assert_array_equal(image[0].numpy(), volume)
    np.testing.assert_allclose(image.affine.numpy(), affine_ras, atol=1e-9)
    assert "re-sorted" in image.meta["notes"]


@pytest.mark.parametrize("iop", [
    (1, 0, 0, 0, 0, -1),  # coronal
    (0, 1, 0, 0, 0, -1),  # sagittal
    (0.8660254, 0.5, 0, -0.5, 0.8660254, 0),  # oblique axial
])
def test_non_axial_orientations(ct_series, make_dicom_row, iop):
    volume = hu_volume(shape=(5, 4, 3))
    files, affine_ras = ct_series(volume, iop=iop, slice_spacing=3.0)
    files.reverse()
    image = load_sample(make_dicom_row(files))
    np.testing.assert_array_equal(image[0].numpy(), volume)
    np.testing.assert_allclose(image.affine.numpy(), affine_ras, atol=1e-6)
    np.testing.assert_allclose(image.meta["spacing"], [0.8, 0.7, 3.0], atol=1e-6)


def test_monochrome1_and_monochrome2_twins_load_identically(tmp_path, slice_writer):
    stored2 = RNG.integers(0, 4096, size=(5, 6))
    stored1 = 4095 - stored2  # the twin: (smin + smax) - p with BitsStored = 12, unsigned
    common = dict(ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0), bits_stored=12, signed=False, slope=2.0, intercept=-100.0)
    m2 = slice_writer(tmp_path / "m2.dcm", stored2, photometric="MONOCHROME2", **common)
    m1 = slice_writer(tmp_path / "m1.dcm", stored1, photometric="MONOCHROME1", **common)
    image2 = load_sample({"format": "dicom", "files": [str(m2)], "sample_id": "a"})
    image1 = load_sample({"format": "dicom", "files": [str(m1)], "sample_id": "b"})
    np.testing.assert_array_equal(image1.numpy(), image2.numpy())
    np.testing.assert_array_equal(image2[0].numpy(), (stored2 * 2.0 - 100.0).T)
    assert image1.meta["photometric"] == "MONOCHROME1"


def _enhanced_ct(write_dicom_slice, path: Path, frames_hu: list[np.ndarray], positions, intercepts) -> Path:
    """An Enhanced-CT-like multi-frame file with per-frame position and rescale."""
    def add_groups(ds: Dataset) -> None:
        del ds.ImagePositionPatient
        del ds.ImageOrientationPatient
        del ds.RescaleSlope
        del ds.RescaleIntercept
        del ds.PixelSpacing
        ds.NumberOfFrames = len(frames_hu)
        shared = Dataset()
        orientation = Dataset()
        orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        shared.PlaneOrientationSequence = DicomSequence([orientation])
        measures = Dataset()
        measures.PixelSpacing = [0.5, 0.6]
        measures.SliceThickness = 3
        shared.PixelMeasuresSequence = DicomSequence([measures])
        ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
        per_frame = []
        for position, intercept in zip(positions, intercepts, strict=True):
            group = Dataset()
            plane = Dataset()
            plane.ImagePositionPatient = list(position)
            group.PlanePositionSequence = DicomSequence([plane])
            rescale = Dataset()
            rescale.RescaleSlope = 1
            rescale.RescaleIntercept = intercept
            group.PixelValueTransformationSequence = DicomSequence([rescale])
            per_frame.append(group)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
        stored = np.stack([(f.T - b) for f, b in zip(frames_hu, intercepts, strict=True)]).astype(np.int16)
        ds.PixelData = stored.tobytes()

    return write_dicom_slice(path, np.zeros(frames_hu[0].T.shape), ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0),
                             extra=add_groups)


def test_enhanced_multiframe_uses_per_frame_geometry_and_rescale(tmp_path, slice_writer):
    volume = hu_volume(shape=(4, 3, 3))
    # frames stored in reverse slice order, each with its own intercept
    positions = [(1.0, 2.0, 9.0), (1.0, 2.0, 6.0), (1.0, 2.0, 3.0)]
    frames = [volume[:, :, 2], volume[:, :, 1], volume[:, :, 0]]
    path = _enhanced_ct(slice_writer, tmp_path / "enhanced.dcm", frames, positions, intercepts=[-1024, -1000, 0])
    image = load_sample({"format": "dicom", "files": json.dumps([str(path)]), "sample_id": "e"})
    np.testing.assert_array_equal(image[0].numpy(), volume)
    expected = np.diag([-0.6, -0.5, 3.0, 1.0])
    expected[:3, 3] = [-1.0, -2.0, 3.0]
    np.testing.assert_allclose(image.affine.numpy(), expected, atol=1e-9)


def test_legacy_multiframe_is_a_frame_stack():
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    path = get_testdata_file("emri_small.dcm")
    image = load_sample({"format": "dicom", "files": [path], "sample_id": "m"})
    reference = dcmread(path).pixel_array  # (frames, rows, cols)
    assert tuple(image.shape) == (1, 64, 64, 10)
    np.testing.assert_array_equal(image[0].numpy(), np.transpose(reference, (2, 1, 0)).astype(np.float32))
    assert "multi-frame" in image.meta["notes"]


def test_truncated_file_in_a_series_names_the_file(ct_series, make_dicom_row):
    files, _ = ct_series(hu_volume(shape=(8, 8, 3)))
    data = Path(files[1]).read_bytes()
    Path(files[1]).write_bytes(data[:-40])
    with pytest.raises(DicomError, match=r"slice_001\.dcm: truncated pixel data"):
        load_sample(make_dicom_row(files))


def test_missing_file_and_empty_series(make_dicom_row, tmp_path):
    with pytest.raises(DicomError, match="does not exist"):
        load_sample(make_dicom_row([str(tmp_path / "gone.dcm")]))
    with pytest.raises(ManifestError, match="no 'files'"):
        load_sample({"format": "dicom", "files": "", "path": str(tmp_path), "sample_id": "x"})
    with pytest.raises(ManifestError, match="format"):
        load_sample({"format": "png", "path": "x.png", "sample_id": "x"})


def test_duplicate_slice_positions_are_refused(ct_series, make_dicom_row):
    files, _ = ct_series(hu_volume(shape=(4, 4, 3)))
    with pytest.raises(DicomError, match="duplicates"):
        load_sample(make_dicom_row([files[0], files[1], files[1]]))


def test_inconsistent_bits_stored_and_high_bit(tmp_path, slice_writer):
    def bad_high_bit(ds: Dataset) -> None:
        ds.HighBit = 7

    def bad_bits_stored(ds: Dataset) -> None:
        ds.BitsStored = 20
        ds.HighBit = 19

    for name, extra, pattern in (("hb.dcm", bad_high_bit, "HighBit=7"), ("bs.dcm", bad_bits_stored, "BitsStored=20")):
        path = slice_writer(tmp_path / name, np.zeros((4, 4)), ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0), extra=extra)
        with pytest.raises(DicomError, match=pattern):
            load_sample({"format": "dicom", "files": [str(path)], "sample_id": "x"})


def test_size_bomb_header_is_refused_before_allocation(tmp_path, slice_writer):
    def bomb(ds: Dataset) -> None:
        ds.Rows = 65535
        ds.Columns = 65535
        ds.NumberOfFrames = 1000
        ds.PixelData = b"\0" * 64

    path = slice_writer(tmp_path / "bomb.dcm", np.zeros((4, 4)), ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0),
                             extra=bomb)
    tracemalloc.start()
    try:
        with pytest.raises(ResourceBudgetError) as caught:
            load_sample({"format": "dicom", "files": [str(path)], "sample_id": "x"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "bomb.dcm" in message and str(65535 * 65535 * 1000 * 4) in message and str(8 * 1024**3) in message
    assert peak < 50 * 1024**2


def test_budget_from_argument_and_environment(ct_series, make_dicom_row, monkeypatch):
    files, _ = ct_series(hu_volume(shape=(8, 8, 4)))
    row = make_dicom_row(files)
    needed = 8 * 8 * 4 * 4
    assert load_sample(row, max_bytes=needed).shape == (1, 8, 8, 4)
    with pytest.raises(ResourceBudgetError, match=f"over the budget of {needed - 1} bytes"):
        load_sample(row, max_bytes=needed - 1)
    monkeypatch.setenv("MEDREC_MAX_BYTES", "1000B")
    with pytest.raises(ResourceBudgetError, match="MEDREC_MAX_BYTES"):
        load_sample(row)


def test_content_hash_follows_pixels_not_headers(ct_series, make_dicom_row):
    volume = hu_volume(shape=(4, 4, 3))
    files_a, _ = ct_series(volume, folder="a")
    files_b, _ = ct_series(volume, folder="b", origin=(5, 5, 5), intercepts=[-1000.0] * 3)
    changed = volume.copy()
    changed[0, 0, 0] += 1
    files_c, _ = ct_series(changed, folder="c")
    hash_a = content_hash(make_dicom_row(files_a))
    assert len(hash_a) == 64
    assert hash_a == content_hash(make_dicom_row(files_b, sample_id="other"))
    assert hash_a != content_hash(make_dicom_row(files_c))
