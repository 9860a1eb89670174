"""The hand-written explicit VR LE header walker gives exactly what the pydicom path gives."""

from __future__ import annotations

import random
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files

import medrec.index.headers as headers
import medrec.index.headers.dicom as dicom_header
from medrec.index.fastheader import HEAD_BYTES, read_fast_header
from medrec.index.problems import FileProblem
from medrec.synth import generate_cohort


def _both_paths(path: str, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object, bool]:
    """(result with the fast path allowed, result read by pydicom only, whether the fast path was used)."""
    used = []
    real = dicom_header.read_fast_header

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        used.append(result is not None)
        return result

    monkeypatch.setattr(dicom_header, "read_fast_header", spy)
    fast = headers.inspect_file(path)
    monkeypatch.setattr(dicom_header, "read_fast_header", lambda *args, **kwargs: None)
    slow = headers.inspect_file(path)
    monkeypatch.setattr(dicom_header, "read_fast_header", real)
    return fast, slow, any(used)


def _assert_same(fast: object, slow: object, path: str) -> None:
    assert type(fast) is type(slow), path
    for name in type(slow).__slots__:
        assert getattr(fast, name) == getattr(slow, name), f"{path}: {name}"


def _fast(path: str) -> object:
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    return read_fast_header(head, Path(path).stat().st_size, dicom_header._FAST_SELECTION)


def test_pydicom_test_files_match_the_pydicom_path(monkeypatch: pytest.MonkeyPatch) -> None:
    used = 0
    files = sorted(path for path in get_testdata_files() if Path(path).is_file())
    assert len(files) > 100
    for path in files:
        fast, slow, was_used = _both_paths(path, monkeypatch)
        _assert_same(fast, slow, path)
        used += was_used
    # the walker must actually carry the common case, not fall back everywhere
    assert used >= 40


def test_synthetic_cohort_matches_and_uses_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cohort = generate_cohort(tmp_path / "scans", kind="ct-lesion", patients=3, image_size=32, quirks=True)
    paths = sorted(str(p) for p in (tmp_path / "scans").rglob("*") if p.is_file() and not p.suffix == ".csv")
    assert paths
    used = 0
    for path in paths:
        fast, slow, was_used = _both_paths(path, monkeypatch)
        _assert_same(fast, slow, path)
        used += was_used
    main_files = [f for study in cohort.studies for f in study.files]
    assert used >= len(main_files) // 2


def test_implicit_vr_and_big_endian_fall_back() -> None:
    implicit = pydicom.data.get_testdata_file("MR_small_implicit.dcm")
    big_endian = pydicom.data.get_testdata_file("MR_small_bigendian.dcm")
    explicit = pydicom.data.get_testdata_file("MR_small.dcm")
    assert _fast(implicit) is None
    assert _fast(big_endian) is None
    header = _fast(explicit)
    assert header is not None
    assert header.get("Rows") == 64
    assert header.get("Modality") == "MR"


def test_deflated_and_no_preamble_fall_back() -> None:
    assert _fast(pydicom.data.get_testdata_file("image_dfl.dcm")) is None
    assert _fast(pydicom.data.get_testdata_file("no_meta.dcm")) is None


def test_truncated_header_falls_back(tmp_path: Path) -> None:
    source = Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(source[:600])
    assert _fast(str(cut)) is None
    assert isinstance(headers.inspect_file(str(cut)), FileProblem)


def test_pixel_offset_is_where_pydicom_stops() -> None:
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    with open(path, "rb") as handle:
        pydicom.dcmread(handle, stop_before_pixels=True)
        expected = handle.tell()
    header = _fast(path)
    assert header is not None
    assert header.pixel_offset == expected


def test_damaged_files_give_the_same_result_either_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut files and flipped header bytes: the walker either falls back or agrees with pydicom."""
    rng = random.Random(0)
    sources = [Path(pydicom.data.get_testdata_file(name)).read_bytes() for name in ("CT_small.dcm", "JPEG2000.dcm")]
    for index in range(300):
        data = bytearray(sources[index % len(sources)])
        if index % 3 == 0:
            data = data[: rng.randrange(132, len(data))]
        else:
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(132, min(len(data), 1500))] = rng.randrange(256)
        path = tmp_path / f"damaged_{index}.dcm"
        path.write_bytes(bytes(data))
        fast, slow, _ = _both_paths(str(path), monkeypatch)
        assert fast == slow, path
