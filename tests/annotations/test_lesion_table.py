"""Lesion tables: LPS spheres land on the voxels that synth's ground truth names, on DICOM, NIfTI and 2D grids."""

from __future__ import annotations

import numpy as np
import pytest

from medrec.annotations import Lesion, annotation_mask, nearest_voxel, rasterise_spheres, read_annotations
from medrec.loader import load_sample

from .builders import IndexedCohort, spheres_by_distance


def _truth_rows(cohort: IndexedCohort, study_uid: str):
    return cohort.ground_truth[cohort.ground_truth["study_uid"] == study_uid]


def test_spheres_land_on_ground_truth_voxels(ct_cohort: IndexedCohort) -> None:
    annotations = read_annotations(ct_cohort.manifest, lesions=ct_cohort.root / "ground_truth.csv")
    positives = ct_cohort.manifest[ct_cohort.manifest["label"] == "1"]
    assert len(positives) >= 2
    for _, row in ct_cohort.manifest.iterrows():
        image = load_sample(row)
        shape, affine = tuple(image.shape[1:]), np.asarray(image.affine, dtype=np.float64)
        mask = annotation_mask(annotations, row["sample_id"], shape, affine)
        assert mask is not None and mask.shape == shape and mask.dtype == np.uint8
        truth = _truth_rows(ct_cohort, row["study_uid"])
        if row["label"] == "0":
            assert len(truth) == 0 and not mask.any()
            continue
        assert len(truth) == 1  # one lesion per positive ct-lesion study
        lesion = truth.iloc[0]
        center = np.array([lesion["center_i"], lesion["center_j"], lesion["center_k"]])
        assert mask[tuple(np.floor(center + 0.5).astype(int))] == 1
        centre_lps = lesion[["center_x", "center_y", "center_z"]].to_numpy(float)
        assert nearest_voxel(centre_lps, shape, affine) == tuple(np.floor(center + 0.5).astype(int))
        assert np.all(np.abs(np.argwhere(mask).mean(axis=0) - center) <= 1.0)
        # the voxels are exactly those whose centres lie within the radius (plus the centre's voxel)
        expected = spheres_by_distance(shape, affine, [lesion[["center_x", "center_y", "center_z"]].to_numpy(float)],
                                       [lesion["diameter_mm"]])
        expected[tuple(np.floor(center + 0.5).astype(int))] = 1
        np.testing.assert_array_equal(mask, expected)


def test_radiograph_lesions_project_onto_the_image(xr_cohort: IndexedCohort) -> None:
    annotations = read_annotations(xr_cohort.manifest, lesions=xr_cohort.root / "ground_truth.csv")
    assert annotations.counts["lesion_rows_matched"] == len(xr_cohort.ground_truth) > 0
    for _, row in xr_cohort.manifest[xr_cohort.manifest["label"] == "1"].iterrows():
        image = load_sample(row)
        shape, affine = tuple(image.shape[1:]), np.asarray(image.affine, dtype=np.float64)
        assert len(shape) == 2
        mask = annotation_mask(annotations, row["sample_id"], shape, affine)
        assert mask is not None and mask.shape == shape
        for _, lesion in _truth_rows(xr_cohort, row["study_uid"]).iterrows():
            center = np.array([lesion["center_i"], lesion["center_j"]])
            assert mask[tuple(np.floor(center + 0.5).astype(int))] == 1
            centre_lps = lesion[["center_x", "center_y", "center_z"]].to_numpy(float)
            assert nearest_voxel(centre_lps, shape, affine) == tuple(np.floor(center + 0.5).astype(int))
            # in-plane distances, computed from the affine's first two columns
            ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
            center_world = affine[:3, :2] @ center + affine[:3, 3]
            world = affine[:3, 0, None, None] * ii + affine[:3, 1, None, None] * jj + affine[:3, 3, None, None]
            inside = np.linalg.norm(world - center_world[:, None, None], axis=0) <= lesion["diameter_mm"] / 2
            assert np.all(mask[inside] == 1)


def test_lesion_smaller_than_a_voxel_marks_the_voxel_holding_its_centre() -> None:
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    affine[:3, 3] = (-10.0, -20.0, 30.0)
    center_ras = np.array([-10.0 + 2.0 * 3.4, -20.0 + 2.0 * 1.6, 30.0 + 5.0 * 2.2])  # index (3.4, 1.6, 2.2)
    tiny = Lesion(center_lps=(-center_ras[0], -center_ras[1], center_ras[2]), diameter_mm=0.2, source="test")
    mask = rasterise_spheres((8, 8, 6), affine, [tiny])
    assert np.argwhere(mask).tolist() == [[3, 2, 2]]
    outside = Lesion(center_lps=(-center_ras[0], -center_ras[1], center_ras[2] + 100.0), diameter_mm=0.2, source="t")
    assert not rasterise_spheres((8, 8, 6), affine, [outside]).any()


@pytest.mark.parametrize("flip", [False, True])
def test_oblique_and_flipped_grids_match_distance_reference(flip: bool) -> None:
    angle = np.deg2rad(25.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.5, 0.8, 3.0 * (-1 if flip else 1)])
    affine[:3, 3] = (-12.0, -9.0, 20.0 if flip else -20.0)
    lesions = [Lesion((4.0, 3.0, -2.0), 9.0, "a"), Lesion((-2.0, 8.0, 1.0), 5.0, "b")]
    shape = (24, 30, 14)
    expected = spheres_by_distance(shape, affine, [lesion.center_lps for lesion in lesions], [9.0, 5.0])
    np.testing.assert_array_equal(rasterise_spheres(shape, affine, lesions), expected)


def test_preprocessed_radiographs_keep_their_patient_geometry(xr_cohort: IndexedCohort) -> None:
    """After resampling, a radiograph's cached affine still places pixels in patient space (so
    lesion marks land on the nodule): the field of view's corners and centre stay where the
    scanner put them, and every ground-truth nodule centre falls inside its rasterised mark."""
    from medrec.data.dataset import PreprocessDataset
    from medrec.planning import fingerprint, make_plan
    from medrec.transforms import PreprocessConfig, build_transforms

    manifest = xr_cohort.manifest
    plan = make_plan(fingerprint(manifest, max_samples=0), PreprocessConfig(spacing=[3.0, 3.0], augment=False))
    deterministic, _ = build_transforms(plan, track_meta=True)
    dataset = PreprocessDataset(manifest.to_dict("records"), deterministic)
    annotations = read_annotations(manifest, lesions=xr_cohort.root / "ground_truth.csv")
    for index, row in manifest.iterrows():
        item, raw = dataset[index], load_sample(row)
        assert not item["error"], item["error"]
        shape, affine = tuple(item["image"].shape[1:]), item["affine"]
        raw_affine, raw_shape = np.asarray(raw.affine, dtype=np.float64), np.array(raw.shape[1:])
        # world centre of the image: (n - 1) / 2 in pixel indices, before and after resampling
        centre = raw_affine[:3, :2] @ ((raw_shape - 1) / 2) + raw_affine[:3, 3]
        assert np.allclose(affine[:3, :2] @ ((np.array(shape) - 1) / 2) + affine[:3, 3], centre, atol=3.0)
        assert np.allclose(np.linalg.norm(affine[:3, :2], axis=0), 3.0, atol=0.2)
        if row["label"] != "1":
            continue
        mask = annotation_mask(annotations, row["sample_id"], shape, affine)
        for _, lesion in _truth_rows(xr_cohort, row["study_uid"]).iterrows():
            raw_centre = raw_affine[:3, :2] @ np.array([lesion["center_i"], lesion["center_j"]]) + raw_affine[:3, 3]
            index_after = np.linalg.lstsq(affine[:3, :2], raw_centre - affine[:3, 3], rcond=None)[0]
            assert mask[tuple(np.floor(index_after + 0.5).astype(int))] == 1


def test_a_point_outside_the_image_has_no_voxel() -> None:
    affine = np.diag([2.0, 2.0, 3.0, 1.0])  # RAS: i -> +x (R), so LPS x = -2 i
    assert nearest_voxel((-4.0, -6.0, 9.0), (10, 10, 5), affine) == (2, 3, 3)
    assert nearest_voxel((4.0, -6.0, 9.0), (10, 10, 5), affine) is None  # i = -2
    assert nearest_voxel((-4.0, -6.0, 30.0), (10, 10, 5), affine) is None  # k = 10
