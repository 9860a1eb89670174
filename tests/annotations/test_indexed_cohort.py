"""A NIfTI cohort indexed with its labels file takes the labels' UIDs, so lesion tables match it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from medrec.annotations import read_annotations
from medrec.index import index_folder

from .builders import IndexedCohort


def test_nifti_samples_take_the_study_uid_of_their_labels_row(ct_nifti: IndexedCohort) -> None:
    manifest = ct_nifti.manifest
    by_path = {str((ct_nifti.root / p).absolute()): uid for p, uid in
               zip(ct_nifti.labels["path"], ct_nifti.labels["study_uid"], strict=True)}
    assert len(manifest) == len(by_path)
    for _, row in manifest.iterrows():
        assert row["study_uid"] == by_path[row["path"]]
        relative = Path(row["path"]).relative_to(ct_nifti.root).as_posix()
        assert row["sample_id"] == hashlib.sha1(relative.encode()).hexdigest()[:12]
        assert row["series_uid"].startswith("nifti-")  # labels.csv names no series


def test_ground_truth_annotates_every_positive_nifti_study(ct_nifti: IndexedCohort) -> None:
    annotations = read_annotations(ct_nifti.manifest, lesions=ct_nifti.root / "ground_truth.csv")
    positives = ct_nifti.manifest[ct_nifti.manifest["label"] == "1"]["sample_id"]
    assert len(positives) >= 2
    assert all(len(annotations.lesions.get(sample_id, [])) >= 1 for sample_id in positives)
    assert annotations.counts["lesion_rows_unmatched"] == 0 and annotations.counts["positives_without_annotation"] == 0


def test_a_series_uid_column_is_recorded_too(ct_nifti: IndexedCohort, tmp_path: Path) -> None:
    labels = ct_nifti.labels.assign(SeriesInstanceUID=[f"1.2.3.{i}" for i in range(len(ct_nifti.labels))])
    labels.to_csv(tmp_path / "labels.csv", index=False)
    result = index_folder(ct_nifti.root, tmp_path / "index", labels=tmp_path / "labels.csv", show_progress=False)
    expected = {str((ct_nifti.root / p).absolute()): uid for p, uid in
                zip(labels["path"], labels["SeriesInstanceUID"], strict=True)}
    assert dict(zip(result.manifest["path"], result.manifest["series_uid"], strict=True)) == expected
    assert sorted(result.manifest["sample_id"]) == sorted(ct_nifti.manifest["sample_id"])
