"""``medrec index`` end to end: corrupt folders, pydicom's real files, synthetic quirky exports."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from medrec.cli import app
from medrec.manifest import read_manifest, series_files

from .builders import truncate, write_series


def _invoke(*args: str):
    return CliRunner().invoke(app, ["index", *args], terminal_width=200)


def _accounted(out: Path) -> tuple[set[str], set[str]]:
    manifest = read_manifest(out / "manifest.csv")
    qc = pd.read_csv(out / "qc.csv", dtype=str, keep_default_na=False)
    in_manifest: set[str] = set()
    for _, row in manifest.iterrows():
        in_manifest |= set(series_files(row)) if row["format"] == "dicom" else {row["path"]}
    return in_manifest, set(qc["path"])


def test_corrupt_inputs_land_in_qc_and_exit_zero(scans: Path, tmp_path: Path) -> None:
    good = write_series(scans / "good", n=6)
    gap = write_series(scans / "gap", n=8, skip=[4])
    truncated = truncate(write_series(scans / "trunc", n=6)[2], 0.8)
    (scans / "empty.dcm").write_bytes(b"")
    (scans / "notes.dcm").write_text("this is a text file, not an image\n" * 10)
    (scans / "noise").write_bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    duplicate = scans / "copy" / "dup"
    duplicate.parent.mkdir()
    duplicate.write_bytes(good[0].read_bytes())
    (scans / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")

    out = tmp_path / "out"
    result = _invoke(str(scans), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "samples kept" in result.output

    qc = pd.read_csv(out / "qc.csv", dtype=str, keep_default_na=False)
    code_of = dict(zip(qc["path"], qc["code"], strict=True))
    assert code_of[str(truncated)] == "truncated"
    assert code_of[str(scans / "empty.dcm")] == "empty_file"
    assert code_of[str(scans / "notes.dcm")] == "not_dicom"
    assert code_of[str(scans / "noise")] == "not_dicom"
    assert code_of[str(duplicate)] == "duplicate_sop"
    assert {code_of[str(p)] for p in gap} == {"missing_slices"}
    # without the truncated file its series has a hole in the middle
    assert {code_of[str(p)] for p in (scans / "trunc").iterdir() if str(p) != str(truncated)} == {"missing_slices"}
    assert (qc["reason"] != "").all()

    manifest = read_manifest(out / "manifest.csv")
    assert len(manifest) == 1 and series_files(manifest.iloc[0]) == [str(p) for p in good]
    in_manifest, in_qc = _accounted(out)
    every_file = {str(p) for p in scans.rglob("*") if p.is_file() and p.name != ".DS_Store"}
    assert in_manifest | in_qc == every_file and not in_manifest & in_qc


def test_missing_label_column_is_a_one_line_error(scans: Path, tmp_path: Path) -> None:
    write_series(scans / "s", n=6)
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,diagnosis\nP001,1\n")
    result = _invoke(str(scans), "-o", str(tmp_path / "out"), "--labels", str(labels))
    assert result.exit_code != 0
    assert "no 'label' column" in str(result.exception)
    ok = _invoke(str(scans), "-o", str(tmp_path / "out"), "--labels", str(labels), "--label-column", "diagnosis")
    assert ok.exit_code == 0, ok.output
    assert read_manifest(tmp_path / "out" / "manifest.csv")["label"].tolist() == ["1"]


def test_pydicom_test_files_are_all_accounted_for(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_files

    sources = [Path(f) for f in get_testdata_files() if os.path.isfile(f)]
    assert len(sources) > 200  # pydicom's test files plus the pydicom-data wheel
    base = Path(os.path.commonpath([str(p) for p in sources]))
    scans = tmp_path / "scans"
    for source in sources:
        target = scans / source.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    out = tmp_path / "out"
    result = _invoke(str(scans), "-o", str(out))
    assert result.exit_code == 0, result.output
    in_manifest, in_qc = _accounted(out)
    every_file = {str(p) for p in scans.rglob("*") if p.is_file()}
    assert in_manifest | in_qc == every_file
    assert not in_manifest & in_qc
    manifest = read_manifest(out / "manifest.csv")
    assert len(manifest) > 20 and manifest["sample_id"].is_unique
    qc = pd.read_csv(out / "qc.csv", dtype=str, keep_default_na=False)
    code_of = dict(zip(qc["path"].map(lambda p: Path(p).name), qc["code"], strict=False))
    assert code_of["MR_truncated.dcm"] == "truncated"
    assert code_of["rtplan_truncated.dcm"] == "truncated"
    assert code_of["rtstruct.dcm"] == "no_pixel_data"
    assert code_of["README.txt"] == "not_dicom"
    # complete header-only files are not images, not truncated ones
    for name in ("IM000000", "priv_SQ.dcm", "UN_sequence.dcm"):
        assert code_of[name] == "no_pixel_data", name
    assert set(qc.loc[qc["code"] == "truncated", "path"].map(lambda p: Path(p).name)) == {
        "MR_truncated.dcm", "rtplan_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm",
    }
    # segmentations and dose grids carry pixel data but are not scans
    non_image = qc[qc["code"] == "non_image_object"]
    for sop_class in ("Segmentation Storage (modality SEG)", "RT Dose Storage (modality RTDOSE)"):
        assert non_image["reason"].str.contains(sop_class, regex=False).any(), sop_class
    assert not manifest["modality"].isin(["SEG", "RTDOSE"]).any()


def test_include_non_image_flag_keeps_segmentations(scans: Path, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    shutil.copyfile(str(get_testdata_file("liver.dcm")), scans / "liver.dcm")
    write_series(scans / "ct", n=6)
    out = tmp_path / "out"
    result = _invoke(str(scans), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert list(read_manifest(out / "manifest.csv")["modality"]) == ["CT"]
    assert "non_image_object" in result.output
    kept = _invoke(str(scans), "-o", str(out), "--include-non-image")
    assert kept.exit_code == 0, kept.output
    assert sorted(read_manifest(out / "manifest.csv")["modality"]) == ["CT", "SEG"]


def _synth():
    synth = pytest.importorskip("medrec.synth")
    if not hasattr(synth, "generate_cohort"):
        pytest.skip("medrec.synth.generate_cohort is not available yet")
    return synth.generate_cohort


def _position_along_normal(path: str) -> float:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), np.cross(orientation[:3], orientation[3:])))


def test_quirky_synthetic_export(tmp_path: Path) -> None:
    generate_cohort = _synth()
    cohort = generate_cohort(tmp_path / "cohort", kind="ct-lesion", patients=3, quirks=True, image_size=32, seed=3)
    out = tmp_path / "out"
    result = _invoke(str(cohort.out_dir), "-o", str(out), "--labels", str(cohort.labels_csv))
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out / "manifest.csv")
    qc = pd.read_csv(out / "qc.csv", dtype=str, keep_default_na=False)

    # one sample per study, labelled, each the study's main series with its files in ascending position
    assert sorted(manifest["study_uid"]) == sorted(s.study_uid for s in cohort.studies)
    truth = {s.study_uid: s for s in cohort.studies}
    for _, row in manifest.iterrows():
        study = truth[row["study_uid"]]
        assert row["series_uid"] == study.series_uid
        assert row["label"] == str(study.label)
        files = series_files(row)
        assert sorted(files) == sorted(str(Path(f).absolute()) for f in study.files)
        positions = [_position_along_normal(f) for f in files]
        assert positions == sorted(positions)

    # localizers are excluded with a reason; series sharing a folder are never stacked
    localizer_rows = qc[qc["code"] == "localizer"]
    assert len(localizer_rows) > 0 and localizer_rows["reason"].str.startswith("not selected: localizer").all()
    dicom_series_by_folder: dict[str, set[str]] = {}
    for path in Path(cohort.out_dir).rglob("*"):
        if path.is_file() and path.suffix not in (".csv", ".json", ".txt"):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except pydicom.errors.InvalidDicomError:
                continue
            dicom_series_by_folder.setdefault(str(path.parent), set()).add(str(ds.SeriesInstanceUID))
    shared = [folder for folder, series in dicom_series_by_folder.items() if len(series) > 1]
    assert shared, "the quirky export should put two series in one folder"
    for _, row in manifest.iterrows():
        uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in series_files(row)}
        assert uids == {row["series_uid"]}
    in_manifest, in_qc = _accounted(out)
    every_file = {str(p) for p in Path(cohort.out_dir).absolute().rglob("*") if p.is_file()}
    assert in_manifest | in_qc == every_file - {str(Path(cohort.labels_csv).absolute())}


def test_quirky_radiographs_prefer_original_over_key_image(tmp_path: Path) -> None:
    generate_cohort = _synth()
    cohort = generate_cohort(tmp_path / "cohort", kind="xr-nodule", patients=3, quirks=True, image_size=32, seed=2)
    result = _invoke(str(cohort.out_dir), "-o", str(tmp_path / "out"), "--labels", str(cohort.labels_csv))
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "out" / "manifest.csv")
    assert sorted(manifest["series_uid"]) == sorted(s.series_uid for s in cohort.studies)
    assert set(manifest["n_slices"]) == {1}
    qc = pd.read_csv(tmp_path / "out" / "qc.csv", dtype=str, keep_default_na=False)
    not_best = qc[qc["code"] == "not_best_series"]
    assert len(not_best) == len(cohort.studies)
    assert not_best["reason"].str.endswith("(original image vs derived/secondary)").all()
