"""File-level checks: what one file is, read from its header only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

from medrec.index.headers import DicomHeader, expected_pixel_bytes, inspect_file, walk_files
from medrec.index.problems import FileProblem

from .builders import make_slice, save, truncate, uid


def _slice(tmp_path: Path, name: str = "a.dcm", **kw: object) -> Path:
    ds = make_slice((0, 0, 0), series_uid=uid("s"), study_uid=uid("t"), **kw)
    return save(ds, tmp_path / name)


def test_good_file_reads_geometry_without_patient_name(tmp_path: Path) -> None:
    result = inspect_file(str(_slice(tmp_path)))
    assert isinstance(result, DicomHeader)
    assert result.rows == 8 and result.cols == 8 and result.frames == 1
    assert result.pixel_spacing == (0.7, 0.8)
    assert result.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert result.image_type == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert result.warnings == ()
    assert "Secret" not in repr(result)


@pytest.mark.parametrize(
    ("content", "code", "fragment"),
    [
        (b"", "empty_file", "0 bytes"),
        (b"patient,label\nP1,1\n" * 20, "not_dicom", "text file (named .dcm)"),
        (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not_dicom", "binary"),
        (b"\x1f\x8b" + bytes(300), "not_dicom", "gzip"),
    ],
)
def test_non_dicom_files(tmp_path: Path, content: bytes, code: str, fragment: str) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(content)
    result = inspect_file(str(path))
    assert isinstance(result, FileProblem)
    assert result.code == code
    assert fragment in result.reason


def test_truncated_native_pixel_data(tmp_path: Path) -> None:
    path = truncate(_slice(tmp_path), 0.95)
    result = inspect_file(str(path))
    assert isinstance(result, FileProblem) and result.code == "truncated"
    assert "declares 128 bytes" in result.reason


def test_pixel_element_shorter_than_header_claims(tmp_path: Path) -> None:
    ds = make_slice((0, 0, 0), series_uid=uid("s"), study_uid=uid("t"))
    ds.Rows = 16  # header claims 16x8 pixels, the element holds 8x8
    result = inspect_file(str(save(ds, tmp_path / "short.dcm")))
    assert isinstance(result, FileProblem) and result.code == "truncated"
    assert "holds 128 bytes" in result.reason and "= 256" in result.reason


def test_file_cut_before_pixel_data(tmp_path: Path) -> None:
    path = _slice(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\xe0\x7f\x10\x00")])
    result = inspect_file(str(path))
    assert isinstance(result, FileProblem) and result.code == "truncated"
    assert "ends before the pixel data" in result.reason


def test_encapsulated_cut_and_intact(tmp_path: Path) -> None:
    ds = make_slice((0, 0, 0), series_uid=uid("s"), study_uid=uid("t"))
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([bytes(64), bytes(64)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    intact = save(ds, tmp_path / "rle.dcm")
    assert isinstance(inspect_file(str(intact)), DicomHeader)
    cut = tmp_path / "rle_cut.dcm"
    cut.write_bytes(intact.read_bytes()[:-60])
    result = inspect_file(str(cut))
    assert isinstance(result, FileProblem) and result.code == "truncated"


def test_no_pixel_data_names_the_sop_class(tmp_path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = uid("rt")
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = uid("rt-series")
    result = inspect_file(str(save(ds, tmp_path / "rt.dcm")))
    assert isinstance(result, FileProblem) and result.code == "no_pixel_data"
    assert "RT Structure Set Storage" in result.reason


def _pydicom_file(name: str) -> str:
    from pydicom.data import get_testdata_file, get_testdata_files

    if "/" in name:
        matches = [f for f in get_testdata_files() if f.replace("\\", "/").endswith(name)]
        return matches[0] if matches else pytest.skip(f"{name} is not installed (pydicom-data)")
    return str(get_testdata_file(name))


@pytest.mark.parametrize(
    ("name", "sop_name"),
    [
        ("TINY_ALPHA/PT000000/ST000000/SE000000/IM000000", "CT Image Storage"),
        ("priv_SQ.dcm", "MR Image Storage"),
        ("UN_sequence.dcm", "CT Image Storage"),
    ],
)
def test_complete_header_only_files_are_no_pixel_data_not_truncated(name: str, sop_name: str) -> None:
    result = inspect_file(_pydicom_file(name))
    assert isinstance(result, FileProblem) and result.code == "no_pixel_data", result
    assert result.reason.startswith(f"no pixel data: a complete {sop_name} header")
    assert "without Rows/Columns/Pixel Data: not an image" in result.reason
    assert "truncated" not in result.reason


def test_pixel_data_without_rows_and_columns_names_what_is_there() -> None:
    result = inspect_file(_pydicom_file("meta_missing_tsyntax.dcm"))
    assert isinstance(result, FileProblem) and result.code == "missing_geometry", result
    assert result.reason == (
        "missing Rows/Columns: unknown SOP class with a 2-byte PixelData element but no Rows/Columns; "
        "image size unknown"
    )


@pytest.mark.parametrize("syntax", [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian])
def test_header_only_image_is_not_an_image_but_a_cut_header_is_truncated(tmp_path: Path, syntax: str) -> None:
    ds = make_slice((0, 0, 0), series_uid=uid("s"), study_uid=uid("t"))
    ds.file_meta.TransferSyntaxUID = syntax
    for keyword in ("PixelData", "Rows", "Columns"):
        del ds[keyword]
    whole = save(ds, tmp_path / "header_only.dcm")
    result = inspect_file(str(whole))
    assert isinstance(result, FileProblem) and result.code == "no_pixel_data", result
    assert "complete CT Image Storage header" in result.reason

    data = whole.read_bytes()
    series_tag = b"\x20\x00\x0e\x00"  # (0020,000E) SeriesInstanceUID: cut inside its value
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: data.index(series_tag) + 14])
    result = inspect_file(str(cut))
    assert isinstance(result, FileProblem) and result.code == "truncated", result
    assert "(0020,000E)" in result.reason and f"{len(data[: data.index(series_tag) + 14])} bytes" in result.reason


def test_rows_and_columns_without_pixel_data_is_truncated_with_the_real_size(tmp_path: Path) -> None:
    path = _slice(tmp_path, rows=8, cols=6)
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\xe0\x7f\x10\x00")])
    result = inspect_file(str(path))
    assert isinstance(result, FileProblem) and result.code == "truncated"
    assert "Rows 8 x Columns 6 but no Pixel Data element" in result.reason


def test_bits_stored_above_bits_allocated(tmp_path: Path) -> None:
    ds = make_slice((0, 0, 0), series_uid=uid("s"), study_uid=uid("t"))
    ds.BitsStored = 20
    ds.HighBit = 19
    result = inspect_file(str(save(ds, tmp_path / "bits.dcm")))
    assert isinstance(result, FileProblem) and result.code == "bits_inconsistent"
    assert "BitsStored 20" in result.reason


def test_no_preamble_is_read_with_a_warning(tmp_path: Path) -> None:
    ds = make_slice((0, 0, 0), series_uid=uid("s"), study_uid=uid("t"))
    del ds.file_meta
    path = tmp_path / "raw"
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"
    result = inspect_file(str(path))
    assert isinstance(result, DicomHeader)
    assert any("preamble" in w for w in result.warnings)


@pytest.mark.parametrize("magic", [b"MZ", b"\x7fELF"])
def test_executable_preamble_is_flagged(tmp_path: Path, magic: bytes) -> None:
    ds = make_slice((0, 0, 0), series_uid=uid("s"), study_uid=uid("t"))
    ds.preamble = magic + bytes(128 - len(magic))
    result = inspect_file(str(save(ds, tmp_path / "poly.dcm")))
    assert isinstance(result, FileProblem) and result.code == "executable_preamble"


def test_multiframe_header(tmp_path: Path) -> None:
    result = inspect_file(str(_slice(tmp_path, frames=4)))
    assert isinstance(result, DicomHeader) and result.frames == 4


def test_expected_pixel_bytes() -> None:
    assert expected_pixel_bytes(512, 512, 1, 1, 16) == 512 * 512 * 2
    assert expected_pixel_bytes(10, 10, 1, 1, 1) == 13  # packed bits, rounded up
    assert expected_pixel_bytes(4, 4, 3, 2, 8) == 96
    assert expected_pixel_bytes(4, 4, 3, 1, 8, "YBR_FULL_422") == 32


def test_walk_skips_os_junk_and_output(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "file").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    (tmp_path / "a" / "._file").write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.csv").write_text("x")
    files, junk = walk_files(tmp_path, skip=[tmp_path / "out"])
    assert [Path(f).name for f in files] == ["file"]
    assert junk == 2


def test_process_pool_gives_the_same_results_as_serial(tmp_path: Path) -> None:
    from medrec.index.headers import ReadOptions, read_headers

    from .builders import write_series

    paths = [str(p) for p in write_series(tmp_path / "s", n=4)]
    (tmp_path / "junk.dcm").write_text("not dicom")
    paths.append(str(tmp_path / "junk.dcm"))
    seen: list[int] = []
    parallel = read_headers(paths, ReadOptions(), workers=2, on_progress=seen.append)
    assert parallel == read_headers(paths, ReadOptions(), workers=1)
    assert sum(seen) == len(paths)
    assert isinstance(parallel[-1], FileProblem)


def test_the_default_pool_needs_many_files_and_three_cores(monkeypatch) -> None:
    from medrec.index.headers import reading as headers

    monkeypatch.setattr(headers.os, "sched_getaffinity", lambda pid: set(range(2)))
    assert headers.resolve_workers(None, 50_000) == 1  # two cores: serial is as fast (benchmarks, index)
    assert headers.resolve_workers(2, 50_000) == 2  # asked for: given
    monkeypatch.setattr(headers.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert headers.resolve_workers(None, 50_000) == 8
    assert headers.resolve_workers(None, headers.PARALLEL_MIN_FILES - 1) == 1
    monkeypatch.setattr(headers.os, "sched_getaffinity", lambda pid: set(range(4)))
    assert headers.resolve_workers(None, 50_000) == 4
