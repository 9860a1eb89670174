"""NIfTI files: one sample each, header sanity checks, NaN / inf voxels."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medrec.index import index_folder


def _save(path: Path, data: np.ndarray, zooms=(0.9, 0.8, 2.5)) -> Path:
    image = nib.Nifti1Image(data, np.diag([*zooms[:3], 1.0]))
    image.header.set_zooms(zooms[: data.ndim])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def _run(scans: Path, tmp_path: Path, **kw: object):
    return index_folder(scans, tmp_path / "out", show_progress=False, **kw)


def test_good_nifti_indexed_with_geometry(scans: Path, tmp_path: Path) -> None:
    path = _save(scans / "case07" / "t1.nii.gz", np.zeros((6, 5, 4), dtype=np.float32))
    (scans / "case07" / "t1.json").write_text('{"Modality": "MR", "Manufacturer": "Acme"}')
    result = _run(scans, tmp_path)
    qc_codes = set(result.qc["code"])
    assert qc_codes == {"not_dicom"}  # the JSON sidecar is reported, never silently dropped
    row = result.manifest.iloc[0]
    assert row["format"] == "nifti" and row["path"] == str(path) and row["files"] == ""
    assert (row["cols"], row["rows"], row["n_slices"]) == (6, 5, 4)
    assert (row["spacing_x"], row["spacing_y"], row["spacing_z"]) == (0.9, 0.8, 2.5)
    assert row["orientation"] == "axial" and row["modality"] == "MR" and row["manufacturer"] == "Acme"
    assert row["patient_id"] == "case07"
    digest = hashlib.sha1(b"case07/t1.nii.gz").hexdigest()
    assert row["sample_id"] == digest[:12] and row["study_uid"] == f"nifti-{digest[:20]}"


def test_bad_niftis_are_flagged(scans: Path, tmp_path: Path) -> None:
    zero = _save(scans / "zero_pixdim.nii", np.zeros((4, 4, 4), np.float32))
    raw = bytearray(zero.read_bytes())
    raw[84:88] = struct.pack("<f", 0.0)  # pixdim[2]: header bytes 76 + 4 * 2
    zero.write_bytes(bytes(raw))
    nan = np.zeros((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.nan
    _save(scans / "nan.nii.gz", nan)
    slope = _save(scans / "slope.nii", np.zeros((4, 4, 4), np.int16))
    raw = bytearray(slope.read_bytes())
    raw[112:120] = struct.pack("<ff", np.nan, -1024.0)  # scl_slope, scl_inter
    slope.write_bytes(bytes(raw))
    _save(scans / "four_d.nii.gz", np.zeros((4, 4, 4, 3), np.float32), zooms=(1.0, 1.0, 1.0, 1.0))
    (scans / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    result = _run(scans, tmp_path)
    assert len(result.manifest) == 0
    codes = dict(zip(result.qc["path"].map(lambda p: Path(p).name), result.qc["code"], strict=True))
    assert codes == {
        "zero_pixdim.nii": "nifti_pixdim",
        "nan.nii.gz": "nifti_values",
        "slope.nii": "nifti_scaling",
        "four_d.nii.gz": "nifti_geometry",
        "broken.nii.gz": "nifti_unreadable",
    }
    reasons = dict(zip(result.qc["code"], result.qc["reason"], strict=True))
    assert "pixdim[2]=0" in reasons["nifti_pixdim"]
    assert "1 NaN" in reasons["nifti_values"]
    assert "scl_slope=nan" in reasons["nifti_scaling"]


def test_nan_check_can_be_skipped_and_qform_sform_disagreement_warns(scans: Path, tmp_path: Path) -> None:
    nan = np.full((4, 4, 4), np.nan, np.float32)
    path = _save(scans / "p1" / "nan.nii.gz", nan)
    image = nib.load(path)
    shifted = image.affine.copy()
    shifted[0, 3] += 5.0
    image.set_qform(shifted, code=1)
    image.set_sform(image.affine, code=1)
    nib.save(image, path)
    result = _run(scans, tmp_path, check_nifti_values=False)
    assert len(result.manifest) == 1
    assert "qform and sform disagree" in result.manifest["warnings"].iloc[0]


def test_nifti_patient_id_from_labels_matched_by_path(scans: Path, tmp_path: Path) -> None:
    _save(scans / "a.nii.gz", np.zeros((4, 4, 4), np.int16))
    _save(scans / "b.nii.gz", np.zeros((4, 4, 4), np.int16))
    labels = tmp_path / "labels.csv"
    pd.DataFrame([{"image": "a.nii.gz", "patient_id": "SUBJ-1", "label": "tumor"}]).to_csv(labels, index=False)
    result = _run(scans, tmp_path, labels=labels)
    rows = result.manifest.set_index(result.manifest["path"].map(lambda p: Path(p).name))
    assert rows.loc["a.nii.gz", "patient_id"] == "SUBJ-1" and rows.loc["a.nii.gz", "label"] == "tumor"
    assert rows.loc["b.nii.gz", "patient_id"] == "b" and rows.loc["b.nii.gz", "label"] == ""


def test_synthetic_nifti_cohort_labelled_by_path(tmp_path: Path) -> None:
    synth = pytest.importorskip("medrec.synth")
    cohort = synth.generate_cohort(
        tmp_path / "cohort", kind="mri-tumor", patients=2, fmt="nifti", image_size=32, seed=5)
    result = index_folder(cohort.out_dir, tmp_path / "out", labels=cohort.labels_csv, show_progress=False)
    assert len(result.manifest) == len(cohort.studies)
    truth = {Path(f).name: s for s in cohort.studies for f in s.files}
    for _, row in result.manifest.iterrows():
        study = truth[Path(row["path"]).name]
        assert row["patient_id"] == study.patient_id and row["label"] == str(study.label)
        spacing = (row["spacing_x"], row["spacing_y"], row["spacing_z"])
        assert spacing == tuple(round(float(v), 6) for v in study.spacing)
