"""Grouping, slice order and geometry checks on hand-built series."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medrec.index import SelectionRules, index_folder, parse_age

from .builders import make_slice, save, uid, write_series


def _run(scans: Path, tmp_path: Path, **kw: object):
    return index_folder(scans, tmp_path / "out", show_progress=False, **kw)


def _files(row) -> list[str]:
    return json.loads(row["files"])


def test_slices_sorted_along_oblique_normal_not_by_instance_number(scans: Path, tmp_path: Path) -> None:
    angle = np.deg2rad(45)
    orientation = (1, 0, 0, 0, np.cos(angle), np.sin(angle))  # oblique: normal has y and z parts
    expected = write_series(scans / "x" / "y", n=7, spacing=1.5, orientation=orientation)
    result = _run(scans, tmp_path)
    assert len(result.manifest) == 1 and len(result.qc) == 0
    row = result.manifest.iloc[0]
    assert _files(row) == [str(p) for p in expected]
    normal = np.cross(orientation[:3], orientation[3:])
    along = [float(np.dot(pydicom.dcmread(p).ImagePositionPatient, normal)) for p in _files(row)]
    assert along == sorted(along)
    assert row["n_slices"] == 7 and row["rows"] == 8 and row["cols"] == 8
    assert row["spacing_x"] == pytest.approx(0.8) and row["spacing_y"] == pytest.approx(0.7)
    assert row["spacing_z"] == pytest.approx(1.5)
    assert row["orientation"] == "oblique"
    assert row["sex"] == "F" and row["age"] == 63.0 and row["manufacturer"] == "Acme"
    assert row["sample_id"] == hashlib.sha1(row["series_uid"].encode()).hexdigest()[:12]
    assert row["warnings"] == ""


def test_two_series_in_one_folder_are_never_stacked(scans: Path, tmp_path: Path) -> None:
    study = uid("study-two")
    a = write_series(scans / "mixed", n=6, study_uid=study, series_uid=uid("A"), name="a{index}")
    b = write_series(scans / "mixed", n=9, study_uid=study, series_uid=uid("B"), name="b{index}", spacing=1.0)
    result = _run(scans, tmp_path, rules=SelectionRules(all_series=True))
    assert sorted(result.manifest["n_slices"]) == [6, 9]
    by_series = {row["series_uid"]: _files(row) for _, row in result.manifest.iterrows()}
    assert by_series[uid("A")] == [str(p) for p in a]
    assert by_series[uid("B")] == [str(p) for p in b]


def test_series_spread_over_folders_is_one_series(scans: Path, tmp_path: Path) -> None:
    series = uid("spread")
    study = uid("spread-study")
    first = write_series(scans / "part1", n=8, series_uid=series, study_uid=study, skip=range(4, 8))
    second = write_series(scans / "part2", n=8, series_uid=series, study_uid=study, skip=range(0, 4))
    result = _run(scans, tmp_path)
    assert len(result.manifest) == 1
    row = result.manifest.iloc[0]
    assert _files(row) == [str(p) for p in first + second]
    assert row["path"] == str(scans)


def test_missing_middle_slice_is_excluded_or_warned(scans: Path, tmp_path: Path) -> None:
    write_series(scans / "gap", n=10, skip=[5])
    result = _run(scans, tmp_path)
    assert len(result.manifest) == 0
    assert set(result.qc["code"]) == {"missing_slices"}
    assert len(result.qc) == 9
    assert "gap of 4.00 mm" in result.qc["reason"].iloc[0]
    kept = _run(scans, tmp_path, rules=SelectionRules(allow_missing_slices=True))
    assert len(kept.manifest) == 1 and "missing slices" in kept.manifest["warnings"].iloc[0]


def test_spacing_jitter_warns_and_irregular_spacing_excludes(scans: Path, tmp_path: Path) -> None:
    write_series(scans / "jitter", n=8, positions_along=[0, 2, 4.06, 6, 8, 10, 12, 14])
    result = _run(scans, tmp_path)
    assert len(result.manifest) == 1
    assert "spacing jitter" in result.manifest["warnings"].iloc[0]
    (tmp_path / "other").mkdir()
    write_series(tmp_path / "other" / "s", n=8, positions_along=[0, 2, 4, 6.5, 8, 10, 12, 14])
    irregular = index_folder(tmp_path / "other", tmp_path / "out2", show_progress=False)
    assert set(irregular.qc["code"]) == {"inconsistent_spacing"}


def test_duplicate_positions_excluded(scans: Path, tmp_path: Path) -> None:
    write_series(scans / "dup", n=8, positions_along=[0, 2, 4, 4, 6, 8, 10, 12])
    result = _run(scans, tmp_path)
    assert set(result.qc["code"]) == {"duplicate_position"}


def test_inconsistent_orientation_excluded(scans: Path, tmp_path: Path) -> None:
    series, study = uid("orient"), uid("orient-study")
    write_series(scans / "o", n=6, series_uid=series, study_uid=study)
    save(
        make_slice((0, 0, 50), (1, 0, 0, 0, 0, -1), series_uid=series, study_uid=study, sop_uid=uid("odd")),
        scans / "o" / "odd",
    )
    result = _run(scans, tmp_path)
    assert set(result.qc["code"]) == {"inconsistent_orientation"} and len(result.qc) == 7


def test_gantry_tilt_warns_by_default(scans: Path, tmp_path: Path) -> None:
    # each slice shifts 0.35 mm along y per 2 mm step: about 10 degrees of tilt
    write_series(scans / "tilt", n=8, in_plane_shift=(0, 0.35, 0))
    result = _run(scans, tmp_path)
    assert len(result.manifest) == 1
    assert "gantry tilt 9.9 deg" in result.manifest["warnings"].iloc[0]
    excluded = _run(scans, tmp_path, rules=SelectionRules(exclude_gantry_tilt=True))
    assert set(excluded.qc["code"]) == {"gantry_tilt"}


def test_too_few_slices_for_a_volume(scans: Path, tmp_path: Path) -> None:
    write_series(scans / "few", n=3)
    result = _run(scans, tmp_path)
    assert set(result.qc["code"]) == {"too_few_slices"}
    assert len(_run(scans, tmp_path, rules=SelectionRules(min_slices_3d=3)).manifest) == 1


def test_duplicate_sop_instance_keeps_one(scans: Path, tmp_path: Path) -> None:
    paths = write_series(scans / "s", n=6)
    copy = scans / "zz_copy" / "again.dcm"
    copy.parent.mkdir()
    copy.write_bytes(paths[2].read_bytes())
    result = _run(scans, tmp_path)
    assert len(result.manifest) == 1 and result.manifest["n_slices"].iloc[0] == 6
    assert list(result.qc["path"]) == [str(copy)]
    assert result.qc["code"].iloc[0] == "duplicate_sop" and str(paths[2]) in result.qc["reason"].iloc[0]


def test_multiframe_and_single_images_are_samples(scans: Path, tmp_path: Path) -> None:
    save(make_slice((0, 0, 0), series_uid=uid("mf"), study_uid=uid("mf-st"), frames=5), scans / "mf.dcm")
    for index in range(2):
        ds = make_slice(
            (0, 0, 0), series_uid=uid("dx"), study_uid=uid("dx-st"), modality="DX", sop_uid=uid("dx", index))
        del ds.ImagePositionPatient, ds.ImageOrientationPatient
        save(ds, scans / f"dx{index}")
    save(make_slice((0, 0, 0), series_uid=uid("one"), study_uid=uid("one-st")), scans / "one.dcm")
    result = _run(scans, tmp_path, rules=SelectionRules(all_series=True))
    by_modality = result.manifest.groupby("modality")["n_slices"].apply(sorted).to_dict()
    assert by_modality == {"CT": [1, 5], "DX": [1, 1]}
    assert result.manifest["sample_id"].is_unique
    single = result.manifest[result.manifest["path"].str.len() > 0]
    assert set(single.loc[single["n_slices"] == 1, "spacing_z"]) == {2.0}  # SliceThickness of a single image


def test_missing_patient_id_falls_back_to_study_uid(scans: Path, tmp_path: Path) -> None:
    study = uid("nopid")
    write_series(scans / "s", n=6, study_uid=study, patient_id=None)
    row = _run(scans, tmp_path).manifest.iloc[0]
    assert row["patient_id"] == study
    assert "no PatientID" in row["warnings"]


def test_patient_name_never_written(scans: Path, tmp_path: Path) -> None:
    write_series(scans / "s", n=6)
    _run(scans, tmp_path)
    for name in ("manifest.csv", "qc.csv"):
        assert "Secret" not in (tmp_path / "out" / name).read_text()


@pytest.mark.parametrize(
    ("text", "years"),
    [("063Y", 63.0), ("006M", 0.5), ("052W", pytest.approx(52 * 7 / 365.25, abs=1e-3)),
     ("010D", pytest.approx(0.027, abs=1e-3)), ("", None), ("abc", None),
     ("089Y", 89.0), ("090Y", 90.0), ("104Y", 90.0), ("121Y", 90.0)],
)
def test_parse_age(text: str, years: object) -> None:
    assert parse_age(text) == years
