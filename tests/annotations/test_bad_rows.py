"""Lesion tables with bad, unmatched and shared rows: each counted and listed, nothing else dropped."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medrec.annotations import PROBLEM_COLUMNS, read_annotations, write_problems
from medrec.errors import AnnotationError, InputError

from .builders import IndexedCohort


def test_bad_and_unmatched_rows_are_counted_and_the_rest_kept(ct_nifti: IndexedCohort, tmp_path: Path) -> None:
    truth = ct_nifti.ground_truth
    first = truth.iloc[0]
    extra = pd.DataFrame([
        {**first.to_dict(), "diameter_mm": -5.0},
        {**first.to_dict(), "center_y": float("nan")},
        {**first.to_dict(), "study_uid": "1.2.3.4.5.6.999", "series_uid": ""},
    ])
    table = pd.concat([truth, extra], ignore_index=True)
    table.to_csv(tmp_path / "lesions.csv", index=False)

    annotations = read_annotations(ct_nifti.manifest, lesions=tmp_path / "lesions.csv")
    counts = annotations.counts
    n = len(truth)
    assert (counts["lesion_rows"], counts["lesion_rows_matched"], counts["lesion_rows_bad"],
            counts["lesion_rows_unmatched"]) == (n + 3, n, 2, 1)
    assert [p["source"] for p in annotations.problems] == [f"lesions.csv line {n + 2 + i}" for i in range(3)]
    assert "diameter_mm -5.0" in annotations.problems[0]["reason"]
    assert "centre" in annotations.problems[1]["reason"]
    assert "1.2.3.4.5.6.999" in annotations.problems[2]["reason"]
    # every ground-truth lesion is still attached, once
    attached = sorted(lesion.source for lesions in annotations.lesions.values() for lesion in lesions)
    assert attached == sorted(f"lesions.csv line {i + 2}" for i in range(n))
    labels = dict(zip(ct_nifti.manifest["sample_id"], ct_nifti.manifest["label"], strict=True))
    assert all(annotations.is_annotated(sample_id) for sample_id in labels)
    assert counts["positives_without_annotation"] == 0
    assert counts["samples_annotated"] == len(labels)
    assert counts["samples_lesion_free"] == sum(label == "0" for label in labels.values())

    write_problems(tmp_path / "problems.csv", annotations)
    written = pd.read_csv(tmp_path / "problems.csv", dtype=str, keep_default_na=False)
    assert tuple(written.columns) == PROBLEM_COLUMNS and len(written) == 3
    assert written["source"].tolist() == [p["source"] for p in annotations.problems]


def test_a_study_row_reaches_every_series_and_a_series_row_only_its_own(
    ct_nifti: IndexedCohort, tmp_path: Path
) -> None:
    manifest = ct_nifti.manifest
    original = manifest[manifest["label"] == "1"].iloc[0]
    second = original.copy()
    second["sample_id"], second["series_uid"] = "second-series", "1.2.3.4.5.6.77"
    manifest = pd.concat([manifest, second.to_frame().T], ignore_index=True)
    rows = pd.DataFrame([
        {"study_uid": original["study_uid"], "series_uid": "", "center_x": 1.0, "center_y": 2.0, "center_z": 3.0,
         "diameter_mm": 10.0},
        {"study_uid": "", "series_uid": "1.2.3.4.5.6.77", "center_x": 4.0, "center_y": 5.0, "center_z": 6.0,
         "diameter_mm": 8.0},
    ])
    rows.to_csv(tmp_path / "lesions.csv", index=False)
    annotations = read_annotations(manifest, lesions=tmp_path / "lesions.csv")
    assert annotations.counts["lesion_rows_multi_sample"] == 1 and annotations.counts["lesion_rows_matched"] == 2
    assert [lesion.center_lps for lesion in annotations.lesions[original["sample_id"]]] == [(1.0, 2.0, 3.0)]
    assert [lesion.center_lps for lesion in annotations.lesions["second-series"]] == [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)]
    # positives without a row are label-only; negatives are annotated all the same
    other_positives = (manifest["label"] == "1").sum() - 2
    assert annotations.counts["positives_without_annotation"] == other_positives


def test_negative_study_with_a_lesion_row_keeps_an_empty_target(ct_nifti: IndexedCohort, tmp_path: Path) -> None:
    negative = ct_nifti.manifest[ct_nifti.manifest["label"] == "0"].iloc[0]
    pd.DataFrame([{"study_uid": negative["study_uid"], "center_x": 0, "center_y": 0, "center_z": 0, "diameter_mm": 9}]
                 ).to_csv(tmp_path / "lesions.csv", index=False)
    annotations = read_annotations(ct_nifti.manifest, lesions=tmp_path / "lesions.csv")
    assert annotations.counts["negatives_with_lesions"] == 1
    assert annotations.is_annotated(negative["sample_id"]) and negative["sample_id"] not in annotations.lesions
    assert [p["sample_id"] for p in annotations.problems] == [negative["sample_id"]]


def test_missing_columns_raise_naming_the_file_and_the_columns(ct_nifti: IndexedCohort, tmp_path: Path) -> None:
    pd.DataFrame([{"study_uid": "1.2", "x": 1, "center_y": 2, "center_z": 3, "diameter_mm": 4}]).to_csv(
        tmp_path / "lesions.csv", index=False)
    with pytest.raises(AnnotationError, match=r"lesions\.csv.*center_x.*columns found: study_uid, x, center_y") as e:
        read_annotations(ct_nifti.manifest, lesions=tmp_path / "lesions.csv")
    assert isinstance(e.value, InputError)
    pd.DataFrame([{"label": "1", "path": "a.nii.gz"}]).to_csv(tmp_path / "masks.csv", index=False)
    with pytest.raises(AnnotationError, match=r"masks\.csv.*no 'mask' column"):
        read_annotations(ct_nifti.manifest, masks=tmp_path / "masks.csv")


def test_problems_file_has_a_header_when_empty(ct_nifti: IndexedCohort, tmp_path: Path) -> None:
    annotations = read_annotations(ct_nifti.manifest, lesions=ct_nifti.root / "ground_truth.csv")
    assert annotations.problems == []
    assert "samples_annotated=" in annotations.summary() and "\n" not in annotations.summary()
    write_problems(tmp_path / "problems.csv", annotations)
    assert (tmp_path / "problems.csv").read_text() == ",".join(PROBLEM_COLUMNS) + "\n"
