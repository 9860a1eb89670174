"""The DICOM loader's fast path: bit-identical to the pydicom path, or it falls back to it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from medrec.errors import DicomError, MedrecError, ResourceBudgetError
from medrec.loader import dicom, load_sample
from medrec.loader.dicom import read_dicom_series, read_dicom_series_fast
from medrec.loader.volume import Volume
from medrec.manifest import series_files
from medrec.synth import generate_cohort

BUDGET = 1 << 30
IOP = (1, 0, 0, 0, 1, 0)


def pydicom_path(files: list[str], max_bytes: int = BUDGET) -> Volume:
    return read_dicom_series(files, max_bytes, fast_path=False)


def assert_identical(fast: Volume, reference: Volume) -> None:
    assert fast.array.dtype == reference.array.dtype == np.float32
    assert fast.array.shape == reference.array.shape
    assert fast.array.tobytes() == reference.array.tobytes()  # bit for bit (NaN, -0.0 included)
    assert fast.affine_ras.tobytes() == reference.affine_ras.tobytes()
    assert fast.spacing.tobytes() == reference.spacing.tobytes()
    assert (fast.modality, fast.photometric, fast.notes, fast.extra) == (
        reference.modality, reference.photometric, reference.notes, reference.extra)


def assert_same_meta(row: dict, monkeypatch) -> None:
    """load_sample through the fast path and the forced pydicom path: same tensor, affine and meta."""
    monkeypatch.setattr(dicom, "FAST_PATH", True)
    fast = load_sample(row)
    monkeypatch.setattr(dicom, "FAST_PATH", False)
    reference = load_sample(row)
    monkeypatch.setattr(dicom, "FAST_PATH", True)
    assert fast.numpy().tobytes() == reference.numpy().tobytes()
    assert fast.affine.numpy().tobytes() == reference.affine.numpy().tobytes()
    assert fast.meta.keys() == reference.meta.keys()
    for key, value in reference.meta.items():
        if isinstance(value, (np.ndarray, torch.Tensor)):
            assert np.asarray(fast.meta[key]).tobytes() == np.asarray(value).tobytes(), key
        else:
            assert fast.meta[key] == value, key


def same_outcome(files: list[str], max_bytes: int = BUDGET) -> Volume | None:
    """The default read (fast path first) and the forced pydicom read agree, values or error."""
    try:
        reference = pydicom_path(files, max_bytes)
    except MedrecError as expected:
        with pytest.raises(type(expected)) as raised:
            read_dicom_series(files, max_bytes)
        assert str(raised.value) == str(expected)
        assert read_dicom_series_fast(files, max_bytes) is None
        return None
    assert_identical(read_dicom_series(files, max_bytes), reference)
    return reference


# ------------------------------------------------------------------------------------ synthetic cohorts

COHORT_SEED = 2  # this seed's six patients include Philips MR (slope 2.5, 12 bits) and FUJI CR (MONOCHROME1)
EXPECTED_SCANNERS = {"ct-lesion": {"SIEMENS", "GE MEDICAL SYSTEMS", "TOSHIBA"},
                     "mri-tumor": {"Philips Medical Systems"}, "xr-nodule": {"FUJIFILM Corporation"}}


@pytest.mark.parametrize("quirks", [False, True], ids=["plain", "quirks"])
@pytest.mark.parametrize("kind", ["ct-lesion", "mri-tumor", "xr-nodule"])
def test_synthetic_series_take_the_fast_path_bit_identically(tmp_path, kind, quirks, monkeypatch):
    from medrec.index import index_folder

    cohort = generate_cohort(tmp_path / "scans", kind=kind, patients=6, seed=COHORT_SEED, quirks=quirks,
                             image_size=32 if kind == "xr-nodule" else 24,
                             slice_thickness=None if kind == "xr-nodule" else 20.0)
    assert EXPECTED_SCANNERS[kind] <= {study.manufacturer for study in cohort.studies}
    for study in cohort.studies:
        fast = read_dicom_series_fast(study.files, BUDGET)
        assert fast is not None, f"{study.manufacturer} series fell back to pydicom"
        assert_identical(fast, pydicom_path(study.files))
    # every series the index selects (with quirks: shuffled instance numbers, extension-less names, ...)
    manifest = index_folder(tmp_path / "scans", tmp_path / "index", workers=1).manifest
    for row in manifest.to_dict("records"):
        files = series_files(row)
        fast = read_dicom_series_fast(files, BUDGET)
        assert fast is not None
        assert_identical(fast, pydicom_path(files))
    assert_same_meta(manifest.iloc[0].to_dict(), monkeypatch)


def test_fujifilm_monochrome1_is_inverted_like_the_pydicom_path(tmp_path):
    cohort = generate_cohort(tmp_path, kind="xr-nodule", patients=6, seed=COHORT_SEED, image_size=32)
    study = next(s for s in cohort.studies if s.manufacturer.startswith("FUJIFILM"))
    assert dcmread(study.files[0], stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    fast = read_dicom_series_fast(study.files, BUDGET)
    assert fast is not None and fast.photometric == "MONOCHROME1"
    assert_identical(fast, pydicom_path(study.files))


# ------------------------------------------------------------------------------ pydicom's test files

def _testdata_files() -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sorted(get_testdata_files())


def test_pydicom_test_files_match_exactly_or_fall_back(tmp_path):
    taken = 0
    for path in _testdata_files():
        try:
            fast = read_dicom_series_fast([path], BUDGET)
        except Exception as e:  # noqa: BLE001 - a crash is a failure; name the file
            pytest.fail(f"{path}: fast path raised {type(e).__name__}: {e}")
        if fast is None:
            continue  # the pydicom path reads it, as before
        taken += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert_identical(fast, pydicom_path([path]))
    assert taken >= 30  # CT_small, MR_small, 693_UNCR, RG*_UNCR, ... are plain explicit VR little endian (42 of them)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "RG3_UNCR.dcm", "MR_small_implicit.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_RLE.dcm", "emri_small.dcm"])
def test_known_pydicom_files(name, monkeypatch):
    path = next((p for p in _testdata_files() if Path(p).name == name), None)
    if path is None:
        pytest.skip(f"{name} is not installed")
    fast = read_dicom_series_fast([path], BUDGET)
    plain = name in ("CT_small.dcm", "MR_small.dcm", "RG3_UNCR.dcm")
    assert (fast is not None) == plain  # implicit VR, big endian, RLE, multi-frame: pydicom path
    same_outcome([path])
    assert_same_meta({"format": "dicom", "files": [path], "sample_id": name}, monkeypatch)


# ------------------------------------------------------------------------------------ crafted slices

def _series(tmp_path: Path, slice_writer, stored: list[np.ndarray], **kw) -> list[str]:
    files = []
    for k, pixels in enumerate(stored):
        per_slice = {key: value[k] if isinstance(value, list) else value for key, value in kw.items()}
        files.append(str(slice_writer(tmp_path / f"s{k:02d}.dcm", pixels, ipp=(0.0, 0.0, 2.5 * k), iop=IOP,
                                      instance=k + 1, **per_slice)))
    return files


def test_bits_stored_12_with_garbage_in_the_high_bits_is_masked(tmp_path, slice_writer):
    rng = np.random.default_rng(0)
    values = [rng.integers(0, 4096, (6, 5)) for _ in range(3)]
    garbage = [v | (rng.integers(0, 16, v.shape) << 12) for v in values]
    files = _series(tmp_path, slice_writer, garbage, bits_stored=12, signed=False, intercept=0.0)
    fast = read_dicom_series_fast(files, BUDGET)
    assert fast is not None
    assert_identical(fast, pydicom_path(files))
    np.testing.assert_array_equal(fast.array, np.stack([v.T for v in values], axis=-1).astype(np.float32))


@pytest.mark.parametrize("bits_stored", [9, 12, 15])
def test_signed_data_with_bits_stored_below_16_is_sign_extended(tmp_path, slice_writer, bits_stored):
    rng = np.random.default_rng(bits_stored)
    low, high = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1)
    values = [rng.integers(low, high, (5, 7)) for _ in range(3)]
    # two's complement in bits_stored bits, random bits above it
    garbage = [(v & (2**bits_stored - 1)) | (rng.integers(0, 2 ** (16 - bits_stored), v.shape) << bits_stored)
               for v in values]
    garbage = [g.astype(np.uint16).view(np.int16).astype(np.int64) for g in garbage]
    files = _series(tmp_path, slice_writer, garbage, bits_stored=bits_stored, signed=True, intercept=0.0)
    fast = read_dicom_series_fast(files, BUDGET)
    assert fast is not None
    assert_identical(fast, pydicom_path(files))
    np.testing.assert_array_equal(fast.array, np.stack([v.T for v in values], axis=-1).astype(np.float32))


def test_odd_rescale_per_slice(tmp_path, slice_writer):
    rng = np.random.default_rng(1)
    stored = [rng.integers(-2000, 3000, (8, 6)) for _ in range(4)]
    slopes = [0.123457, 2.5, 1.0, 3.0e-3]  # as the writer formats them ("%g")
    intercepts = [-1024.33, 0.0, -7.25e2, 1e-05]
    files = _series(tmp_path, slice_writer, stored, slope=slopes, intercept=intercepts)
    fast = read_dicom_series_fast(files, BUDGET)
    assert fast is not None
    assert_identical(fast, pydicom_path(files))
    expected = (stored[0].astype(np.float64) * slopes[0] + intercepts[0]).astype(np.float32)
    np.testing.assert_array_equal(fast.array[:, :, 0], expected.T)


@pytest.mark.parametrize("signed", [False, True])
def test_monochrome1_with_12_bits_and_rescale(tmp_path, slice_writer, signed):
    rng = np.random.default_rng(2)
    stored = [rng.integers(-2048 if signed else 0, 2048 if signed else 4096, (4, 6)) for _ in range(2)]
    files = _series(tmp_path, slice_writer, stored, bits_stored=12, signed=signed, photometric="MONOCHROME1",
                    slope=[2.5, 0.5], intercept=[-10.0, 3.0])
    fast = read_dicom_series_fast(files, BUDGET)
    assert fast is not None
    assert_identical(fast, pydicom_path(files))


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("shape", [(5, 7), (6, 4)], ids=["odd-length", "even-length"])
def test_8_bit_data(tmp_path, slice_writer, signed, shape):
    rng = np.random.default_rng(3)

    def eight_bit(pixels: np.ndarray, bits_stored: int):
        def patch(ds: Dataset) -> None:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, bits_stored, bits_stored - 1
            ds.PixelData = pixels.astype(np.int8 if signed else np.uint8).tobytes()
        return patch

    stored = [rng.integers(-128 if signed else 0, 128 if signed else 256, shape) for _ in range(3)]
    files = [str(slice_writer(tmp_path / f"s{k}.dcm", np.zeros(shape, np.int64), ipp=(0.0, 0.0, 1.0 * k), iop=IOP,
                              signed=signed, intercept=0.0, extra=eight_bit(stored[k], 7 if k == 1 else 8)))
             for k in range(3)]
    fast = read_dicom_series_fast(files, BUDGET)
    assert fast is not None
    assert_identical(fast, pydicom_path(files))


def test_truncated_pixel_element_raises_the_pydicom_paths_error(tmp_path, slice_writer):
    stored = [np.full((8, 8), k, np.int64) for k in range(3)]
    files = _series(tmp_path, slice_writer, stored)
    data = Path(files[1]).read_bytes()
    Path(files[1]).write_bytes(data[:-10])
    assert read_dicom_series_fast(files, BUDGET) is None
    with pytest.raises(DicomError, match="truncated") as raised:
        read_dicom_series(files, BUDGET)
    with pytest.raises(DicomError) as reference:
        pydicom_path(files)
    assert str(raised.value) == str(reference.value)


def test_over_budget_raises_the_pydicom_paths_error(tmp_path, slice_writer):
    files = _series(tmp_path, slice_writer, [np.zeros((16, 16), np.int64)] * 3)
    with pytest.raises(ResourceBudgetError):
        read_dicom_series(files, 16 * 16 * 4 * 2)
    same_outcome(files, 16 * 16 * 4 * 2)
    assert read_dicom_series_fast(files, 16 * 16 * 4 * 3) is not None


def _rewrite(path: str, change) -> None:  # callable(Dataset)
    ds = dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def _implicit(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian


def _modality_lut(ds: Dataset) -> None:
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0, 16])  # LUTDescriptor
    item.add_new(0x00283006, "US", [0, 100, 200, 300])  # LUTData
    ds.ModalityLUTSequence = [item]
    ds.BitsStored, ds.HighBit = 2, 1
    ds.PixelRepresentation = 0


def _private_after_pixels(ds: Dataset) -> None:
    ds.add_new(0xFFFB0010, "OB", b"\0" * 8)


def _excess_pixels(ds: Dataset) -> None:
    ds.PixelData = ds.PixelData + b"\0\0\0\0"


def _rgb(ds: Dataset) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.arange(ds.Rows * ds.Columns * 3, dtype=np.uint8).tobytes()


def _lowercase_photometric(ds: Dataset) -> None:
    ds.PhotometricInterpretation = "monochrome2"


def _two_frames(ds: Dataset) -> None:
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2


def _no_pixel_representation(ds: Dataset) -> None:
    del ds.PixelRepresentation


@pytest.mark.parametrize("change", [_implicit, _modality_lut, _private_after_pixels, _excess_pixels, _rgb,
                                    _lowercase_photometric, _two_frames, _no_pixel_representation])
def test_one_unusual_file_sends_the_whole_series_to_pydicom(tmp_path, slice_writer, change):
    files = _series(tmp_path, slice_writer, [np.full((6, 6), k, np.int64) for k in range(3)])
    assert read_dicom_series_fast(files, BUDGET) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _rewrite(files[2], change)
        assert read_dicom_series_fast(files, BUDGET) is None
        same_outcome(files)


def test_trailing_padding_after_the_pixels(tmp_path, slice_writer):
    files = _series(tmp_path, slice_writer, [np.full((6, 6), k, np.int64) for k in range(3)])
    _rewrite(files[1], lambda ds: ds.add_new(0xFFFCFFFC, "OB", b"\0" * 8))  # DataSetTrailingPadding
    fast = read_dicom_series_fast(files, BUDGET)
    assert fast is not None
    assert_identical(fast, pydicom_path(files))
    data = Path(files[1]).read_bytes()
    Path(files[1]).write_bytes(data[:-8] + b"\0" * 4)  # padding element shorter than it says
    assert read_dicom_series_fast(files, BUDGET) is None
    same_outcome(files)


def test_missing_file_and_forced_flag(tmp_path, slice_writer, monkeypatch):
    files = _series(tmp_path, slice_writer, [np.full((6, 6), k, np.int64) for k in range(2)])
    same_outcome([*files, str(tmp_path / "gone.dcm")])
    calls = []
    monkeypatch.setattr(dicom, "read_dicom_series_fast", lambda *a: calls.append(a))
    monkeypatch.setattr(dicom, "FAST_PATH", False)
    read_dicom_series(files, BUDGET)
    assert calls == []
    monkeypatch.setattr(dicom, "FAST_PATH", True)
    read_dicom_series(files, BUDGET)
    read_dicom_series(files, BUDGET, fast_path=False)
    assert len(calls) == 1
