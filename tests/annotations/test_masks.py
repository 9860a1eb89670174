"""Lesion masks on any grid: resampled through the affines onto the image, bad masks reported, never fatal."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medrec.annotations import annotation_mask, read_annotations, resample_mask
from medrec.loader import load_sample

from .builders import IndexedCohort, dice, spheres_by_distance


def _image_grid(row: pd.Series) -> tuple[tuple[int, ...], np.ndarray]:
    image = load_sample(row)
    return tuple(image.shape[1:]), np.asarray(image.affine, dtype=np.float64)


def _other_grid(center_ras: np.ndarray, half_extent_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """A fine grid around a point: axis 0 along +y, axis 1 along -x, axis 2 along -z (permuted and flipped)."""
    spacing = np.array([1.1, 1.7, 2.3])
    directions = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]).T  # columns
    shape = tuple(int(np.ceil(2 * half_extent_mm / s)) + 1 for s in spacing)
    affine = np.eye(4)
    affine[:3, :3] = directions * spacing
    affine[:3, 3] = center_ras - affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return shape, affine  # type: ignore[return-value]


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path.name


def test_mask_on_another_grid_lands_on_the_lesion(ct_nifti: IndexedCohort, tmp_path: Path) -> None:
    truth = ct_nifti.ground_truth
    rows = []
    for _, sample in ct_nifti.manifest.iterrows():
        lesions = truth[truth["study_uid"] == sample["study_uid"]]
        cell = ""
        if len(lesions):
            centers = lesions[["center_x", "center_y", "center_z"]].to_numpy(float)
            ras = centers[0] * np.array([-1.0, -1.0, 1.0])
            shape, affine = _other_grid(ras, lesions["diameter_mm"].max() / 2 + 6.0)
            reference = spheres_by_distance(shape, affine, centers, lesions["diameter_mm"].to_numpy())
            assert reference.sum() > 100
            cell = _save(tmp_path / f"{sample['sample_id']}.nii.gz", reference, affine)
        rows.append({"path": sample["path"], "label": sample["label"], "mask": cell})
    pd.DataFrame(rows).to_csv(tmp_path / "masks.csv", index=False)

    annotations = read_annotations(ct_nifti.manifest, masks=tmp_path / "masks.csv")
    assert annotations.counts["mask_rows_matched"] == len(ct_nifti.manifest)
    assert annotations.counts["samples_annotated"] == len(ct_nifti.manifest)
    assert annotations.problems == []
    for _, sample in ct_nifti.manifest.iterrows():
        shape, affine = _image_grid(sample)
        mask = annotation_mask(annotations, sample["sample_id"], shape, affine)
        lesions = truth[truth["study_uid"] == sample["study_uid"]]
        expected = spheres_by_distance(shape, affine, lesions[["center_x", "center_y", "center_z"]].to_numpy(float),
                                       lesions["diameter_mm"].to_numpy())
        assert mask is not None
        if len(lesions):
            assert expected.sum() > 0 and dice(mask, expected) >= 0.9
        else:
            assert not mask.any()


def test_resample_mask_keeps_voxels_outside_the_source_at_zero(tmp_path: Path) -> None:
    source = np.zeros((4, 4, 4), dtype=np.uint8)
    source[1:3, 1:3, 1:3] = 1
    path = tmp_path / "m.nii.gz"
    _save(path, source, np.diag([2.0, 2.0, 2.0, 1.0]))
    target_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    target_affine[:3, 3] = -3.0
    result = resample_mask(path, (16, 16, 16), target_affine)
    # a target voxel at world w takes source voxel floor(w / 2 + 0.5); lesion where that index is 1 or 2
    world = np.arange(16) - 3.0
    inside = (np.floor(world / 2 + 0.5) >= 1) & (np.floor(world / 2 + 0.5) <= 2)
    expected = inside[:, None, None] & inside[None, :, None] & inside[None, None, :]
    np.testing.assert_array_equal(result, expected.astype(np.uint8))


def test_bad_masks_are_reported_and_leave_the_rest_annotated(ct_nifti: IndexedCohort, tmp_path: Path) -> None:
    manifest = ct_nifti.manifest
    positives = manifest[manifest["label"] == "1"]["sample_id"].tolist()
    negatives = manifest[manifest["label"] == "0"]["sample_id"].tolist()
    assert len(positives) >= 3 and len(negatives) >= 2
    far, nan_mask, empty_cell = positives[:3]
    by_id = manifest.set_index("sample_id")

    lesion = np.zeros((10, 12, 7), dtype=np.uint8)
    lesion[3:6, 4:8, 2:5] = 1
    far_affine = np.diag([0.7, 1.9, 4.0, 1.0])
    far_affine[:3, 3] = (1000.0, 1000.0, 1000.0)  # another shape, somewhere else
    nan = np.zeros((8, 8, 8), dtype=np.float32)
    nan[2, 3, 4] = np.nan
    rows = [
        {"study_uid": by_id.loc[far, "study_uid"], "label": "1",
         "mask": _save(tmp_path / "far.nii.gz", lesion, far_affine)},
        {"study_uid": by_id.loc[nan_mask, "study_uid"], "label": "1",
         "mask": _save(tmp_path / "nan.nii.gz", nan, np.eye(4))},
        {"study_uid": by_id.loc[empty_cell, "study_uid"], "label": "1", "mask": ""},
        {"study_uid": by_id.loc[negatives[0], "study_uid"], "label": "0", "mask": ""},
        {"study_uid": "1.2.3.4.5.6.999", "label": "1", "mask": "ghost.nii.gz"},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "masks.csv", index=False)

    annotations = read_annotations(manifest, masks=tmp_path / "masks.csv")
    counts = annotations.counts
    assert counts["mask_rows"] == 5 and counts["mask_rows_matched"] == 4 and counts["mask_rows_unmatched"] == 1
    assert counts["positives_without_annotation"] == 1 + (len(positives) - 3)  # the empty cell and the unlisted
    assert counts["masks_bad"] == 0  # overlap and NaN need the image: found by annotation_mask
    assert counts["samples_annotated"] == 2 + len(negatives)
    assert [p["source"] for p in annotations.problems] == ["masks.csv line 6"]
    assert "1.2.3.4.5.6.999" in annotations.problems[0]["reason"]

    for _, sample in manifest.iterrows():
        mask = annotation_mask(annotations, sample["sample_id"], *_image_grid(sample))
        if sample["sample_id"] in negatives:
            assert mask is not None and not mask.any()
        else:
            assert mask is None
    assert counts["masks_bad"] == 2
    assert counts["samples_annotated"] == len(negatives)
    reasons = {p["sample_id"]: (p["source"], p["reason"]) for p in annotations.problems if p["sample_id"]}
    assert set(reasons) == {far, nan_mask}
    assert reasons[far][0] == "masks.csv line 2" and "lies outside the image" in reasons[far][1]
    assert reasons[nan_mask][0] == "masks.csv line 3" and "1 NaN" in reasons[nan_mask][1]
    assert not annotations.is_annotated(far) and not annotations.is_annotated(nan_mask)
    # asking again neither recounts nor repeats the problem
    assert annotation_mask(annotations, far, (4, 4, 4), np.eye(4)) is None
    assert counts["masks_bad"] == 2 and len(annotations.problems) == 3


def test_missing_mask_file_is_reported_at_read(ct_nifti: IndexedCohort, tmp_path: Path) -> None:
    sample = ct_nifti.manifest[ct_nifti.manifest["label"] == "1"].iloc[0]
    rows = [{"path": sample["path"], "label": "1", "mask": "missing.nii.gz"}]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    annotations = read_annotations(ct_nifti.manifest, masks=tmp_path / "m.csv")
    assert annotations.counts["masks_bad"] == 1 and not annotations.is_annotated(sample["sample_id"])
    assert annotations.problems[0]["source"] == "m.csv line 2" and "not found" in annotations.problems[0]["reason"]
