"""The real DICOM files shipped with pydicom / pydicom-data: values equal pydicom's own decoding."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.pixels import apply_modality_lut

from medrec.errors import DicomError, MedrecError
from medrec.loader import load_sample

GREY_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG2000.dcm",
    "JPEG-LL.dcm",
    "JPGExtended.dcm",
    "693_J2KR.dcm",
    "693_UNCR.dcm",
]


def _path(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return path


def _row(path: str) -> dict:
    return {"format": "dicom", "files": [path], "sample_id": os.path.basename(path)}


@pytest.mark.parametrize("name", GREY_FILES)
def test_grey_values_equal_pydicom_modality_lut(name):
    path = _path(name)
    ds = dcmread(path)
    expected = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64).astype(np.float32).T
    image = load_sample(_row(path))
    assert tuple(image.shape) == (1, *expected.shape)
    np.testing.assert_array_equal(image[0].numpy(), expected)


@pytest.mark.parametrize("compressed", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                        "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm"])
def test_lossless_transfer_syntaxes_decode_to_the_same_volume(compressed):
    reference = load_sample(_row(_path("MR_small.dcm")))
    np.testing.assert_array_equal(load_sample(_row(_path(compressed))).numpy(), reference.numpy())


def test_ct_small_geometry_follows_the_convention():
    path = _path("CT_small.dcm")
    ds = dcmread(path, stop_before_pixels=True)
    image = load_sample(_row(path))
    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    lps = np.eye(4)
    lps[:3, 0] = row * float(ds.PixelSpacing[1])
    lps[:3, 1] = col * float(ds.PixelSpacing[0])
    lps[:3, 2] = np.cross(row, col) * float(ds.SliceThickness)
    lps[:3, 3] = [float(v) for v in ds.ImagePositionPatient]
    np.testing.assert_allclose(image.affine.numpy(), np.diag([-1, -1, 1, 1]) @ lps, atol=1e-6)


def test_monochrome1_radiograph_is_inverted_over_the_bits_stored_range():
    path = _path("RG3_UNCR.dcm")
    ds = dcmread(path)
    values = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    ends = np.asarray(apply_modality_lut(np.array([0, 2**ds.BitsStored - 1]), ds), dtype=np.float64)
    image = load_sample(_row(path))
    np.testing.assert_array_equal(image[0].numpy(), (ends.min() + ends.max() - values).astype(np.float32).T)
    assert image.meta["photometric"] == "MONOCHROME1"


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "SC_rgb_rle.dcm", "SC_ybr_full_uncompressed.dcm", "US1_J2KR.dcm"])
def test_colour_becomes_one_luminance_channel(name):
    path = _path(name)
    rgb = dcmread(path).pixel_array.astype(np.float64)  # pydicom converts YBR to RGB
    expected = (rgb @ np.array([0.299, 0.587, 0.114])).astype(np.float32).T
    image = load_sample(_row(path))
    assert tuple(image.shape) == (1, *expected.shape)
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-4)
    assert "luminance" in image.meta["notes"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns while reading the broken files
@pytest.mark.parametrize("name, pattern", [
    ("MR_truncated.dcm", "truncated pixel data"),
    ("emri_small_jpeg_2k_lossless_too_short.dcm", "truncated pixel data"),
    ("rtplan.dcm", "not a DICOM image"),
    ("badVR.dcm", "NumberOfFrames"),
])
def test_broken_files_raise_dicom_error(name, pattern):
    path = _path(name)
    with pytest.raises(DicomError, match=pattern) as caught:
        load_sample(_row(path))
    assert os.path.basename(path) in str(caught.value)


def test_every_small_test_file_loads_or_raises_a_medrec_error():
    """No file in pydicom's test data makes the loader crash with a foreign exception."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = [p for p in get_testdata_files() if os.path.isfile(p) and os.path.getsize(p) < 600_000]
        loaded = 0
        for path in paths:
            try:
                image = load_sample(_row(path), max_bytes=64 * 1024**2)
            except MedrecError:
                continue
            assert np.isfinite(image.numpy()).all(), path
            loaded += 1
    assert loaded > 50
