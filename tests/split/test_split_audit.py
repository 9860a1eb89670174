"""The leakage audit catches each kind of leak and names the offenders (never raw patient ids)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from medrec.errors import LeakageError
from medrec.split import audit_leakage, make_splits, patient_pseudonym, pseudonym_key


def splits_of(assignments: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """``{sample_id: (patient_id, split)}`` -> splits table."""
    return pd.DataFrame([{"sample_id": s, "patient_id": p, "split": split} for s, (p, split) in assignments.items()])


def test_clean_splits_pass(make_cohort):
    manifest = make_cohort(30, studies_per_patient=2, seed=0)
    audit = audit_leakage(manifest, make_splits(manifest, seed=0), check_pixels=False)
    assert audit.n_samples == 60 and not audit.pixel_checked


def test_patient_in_two_splits(make_manifest):
    manifest = make_manifest([
        {"sample_id": "a", "patient_id": "MRN-123", "study_uid": "1", "label": "1"},
        {"sample_id": "b", "patient_id": "MRN-123", "study_uid": "2", "label": "1"},
        {"sample_id": "c", "patient_id": "MRN-456", "study_uid": "3", "label": "0"},
    ])
    splits = splits_of({"a": ("MRN-123", "train"), "b": ("MRN-123", "test"), "c": ("MRN-456", "val")})
    with pytest.raises(LeakageError) as caught:
        audit_leakage(manifest, splits, check_pixels=False)
    message = str(caught.value)
    assert "1 patient(s) in more than one partition" in message
    assert patient_pseudonym("MRN-123", pseudonym_key(manifest)) in message
    assert "test: b" in message and "train: a" in message
    assert "MRN-123" not in message  # raw patient ids never appear


def test_study_under_two_patient_ids(make_manifest):
    manifest = make_manifest([
        {"sample_id": "a", "patient_id": "P1", "study_uid": "1.2.3", "label": "1"},
        {"sample_id": "b", "patient_id": "P2", "study_uid": "1.2.3", "label": "1"},
        {"sample_id": "c", "patient_id": "P3", "study_uid": "7", "label": "0"},
    ])
    leaking = splits_of({"a": ("P1", "train"), "b": ("P2", "test"), "c": ("P3", "val")})
    with pytest.raises(LeakageError, match=r"study_uid\(s\) under several patient ids") as caught:
        audit_leakage(manifest, leaking, check_pixels=False)
    key = pseudonym_key(manifest)
    assert patient_pseudonym("P1", key) in str(caught.value) and patient_pseudonym("P2", key) in str(caught.value)
    together = splits_of({"a": ("P1", "train"), "b": ("P2", "train"), "c": ("P3", "val")})
    audit_leakage(manifest, together, check_pixels=False)


def test_identical_pixels_in_two_splits(nifti_cohort):
    manifest = nifti_cohort(4)
    shutil.copyfile(manifest.loc[1, "path"], manifest.loc[3, "path"])  # patient P3's file = P1's content
    splits = splits_of({"n0": ("P0", "train"), "n1": ("P1", "train"), "n2": ("P2", "val"), "n3": ("P3", "test")})
    with pytest.raises(LeakageError, match="identical pixel content") as caught:
        audit_leakage(manifest, splits, workers=1)
    message = str(caught.value)
    assert "train: n1" in message and "test: n3" in message
    same_split = splits_of({"n0": ("P0", "train"), "n1": ("P1", "train"), "n2": ("P2", "val"), "n3": ("P3", "train")})
    audit = audit_leakage(manifest, same_split, workers=1)
    assert audit.hashes["n1"] == audit.hashes["n3"] and len(set(audit.hashes.values())) == 3
    audit_leakage(manifest, splits, check_pixels=False)  # the pixel check can be skipped


def test_all_leaks_are_reported_together(make_manifest, nifti_cohort):
    manifest = nifti_cohort(4)
    manifest.loc[2, "patient_id"] = "P0"  # P0 now has n0 and n2
    manifest.loc[3, "study_uid"] = manifest.loc[1, "study_uid"]
    shutil.copyfile(manifest.loc[0, "path"], manifest.loc[1, "path"])
    splits = splits_of({"n0": ("P0", "train"), "n1": ("P1", "val"), "n2": ("P0", "test"), "n3": ("P3", "test")})
    with pytest.raises(LeakageError) as caught:
        audit_leakage(manifest, splits, workers=1)
    message = str(caught.value)
    assert "patient(s) in more than one partition" in message
    assert "under several patient ids" in message
    assert "identical pixel content" in message


def test_unreadable_samples_are_reported_not_fatal(nifti_cohort):
    manifest = nifti_cohort(3)
    with open(manifest.loc[2, "path"], "wb") as handle:
        handle.write(b"broken")
    splits = splits_of({"n0": ("P0", "train"), "n1": ("P1", "val"), "n2": ("P2", "test")})
    audit = audit_leakage(manifest, splits, workers=1)
    assert set(audit.unreadable) == {"n2"} and "case2.nii.gz" in audit.unreadable["n2"]


def test_process_pool_hashing_matches_in_process(nifti_cohort):
    manifest = nifti_cohort(5)
    splits = make_splits(manifest, val=0.2, test=0.2, seed=0)
    pooled = audit_leakage(manifest, splits, workers=2)
    serial = audit_leakage(manifest, splits, workers=1)
    assert pooled.hashes == serial.hashes and len(pooled.hashes) == 5
