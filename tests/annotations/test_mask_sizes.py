"""Lesion masks written by ``medrec synth --masks`` and the lesion sizes read back from masks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medrec.annotations import mask_lesion_diameters, read_annotations
from medrec.errors import AnnotationError
from medrec.index import index_folder
from medrec.manifest import read_manifest
from medrec.synth import generate_cohort

from .builders import SMALL, dice, spheres_by_distance


def _ball(shape: tuple[int, int, int], center: tuple[float, float, float], radius_vox: float) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return (np.linalg.norm(grid - np.array(center), axis=-1) <= radius_vox).astype(np.uint8)


def test_equivalent_diameters_of_two_balls_and_a_disc(tmp_path: Path) -> None:
    spacing = np.array([0.8, 0.8, 1.5])
    voxels = _ball((80, 80, 40), (20, 20, 20), 10.0) | _ball((80, 80, 40), (60, 60, 12), 4.0)
    path = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(voxels, np.diag([*spacing, 1.0])), path)
    found = sorted(mask_lesion_diameters(path))
    volumes = sorted(int(_ball((80, 80, 40), c, r).sum()) * float(np.prod(spacing))
                     for c, r in (((20, 20, 20), 10.0), ((60, 60, 12), 4.0)))
    expected = [(6.0 * v / np.pi) ** (1 / 3) for v in volumes]  # an independent sum of the same balls
    assert found == pytest.approx(expected, rel=1e-3)

    disc = np.zeros((50, 50, 1), dtype=np.uint8)
    disc[_ball((50, 50, 1), (25, 25, 0), 8.0).astype(bool)] = 1
    nib.save(nib.Nifti1Image(disc, np.diag([0.5, 0.5, 1.0, 1.0])), tmp_path / "disc.nii.gz")
    (diameter,) = mask_lesion_diameters(tmp_path / "disc.nii.gz")
    assert diameter == pytest.approx(2 * np.sqrt(disc.sum() * 0.25 / np.pi), rel=1e-3)
    assert diameter == pytest.approx(8.0, rel=0.05)  # 16 pixels of 0.5 mm across

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.uint8), np.eye(4)), tmp_path / "empty.nii.gz")
    assert mask_lesion_diameters(tmp_path / "empty.nii.gz") == []
    with pytest.raises(AnnotationError, match="missing.nii.gz"):
        mask_lesion_diameters(tmp_path / "missing.nii.gz")


@pytest.fixture(scope="module")
def masked_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth_masks") / "scans"
    generate_cohort(root, **{**SMALL, "image_size": 48, "slice_thickness": 6.0}, fmt="nifti", masks=True)
    return root


def test_synth_masks_cover_the_ground_truth_lesions(masked_cohort: Path) -> None:
    labels = pd.read_csv(masked_cohort / "labels.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(masked_cohort / "ground_truth.csv", dtype={"study_uid": str})
    assert list(labels.columns)[-1] == "mask"
    assert set(labels.loc[labels["mask"] != "", "label"]) == {"1"}
    assert set(labels.loc[labels["mask"] == "", "label"]) == {"0"}
    for row in labels[labels["mask"] != ""].itertuples():
        mask_image, image = nib.load(masked_cohort / row.mask), nib.load(masked_cohort / row.path)
        assert mask_image.shape == image.shape and np.allclose(mask_image.affine, image.affine)
        mask = np.asarray(mask_image.dataobj)
        lesions = truth[truth["study_uid"] == row.study_uid]
        centres = lesions[["center_x", "center_y", "center_z"]].to_numpy()
        spheres = spheres_by_distance(mask.shape, image.affine, centres, lesions["diameter_mm"].to_numpy())
        assert dice(mask, spheres) >= 0.7  # lobulated outlines around the stated spheres
        for lesion in lesions.itertuples():
            assert mask[tuple(int(round(v)) for v in (lesion.center_i, lesion.center_j, lesion.center_k))] == 1


def test_masks_column_reads_as_annotations(masked_cohort: Path, tmp_path: Path) -> None:
    result = index_folder(masked_cohort, tmp_path / "index", labels=masked_cohort / "labels.csv", show_progress=False)
    manifest = read_manifest(tmp_path / "index" / "manifest.csv")
    labels = pd.read_csv(masked_cohort / "labels.csv", dtype=str, keep_default_na=False)
    n_masks = int((labels["mask"] != "").sum())
    # the masks lie inside the scan folder: left out as annotations, never indexed as scans
    assert len(manifest) == len(labels) and not manifest["path"].str.contains("/masks/").any()
    qc = pd.read_csv(tmp_path / "index" / "qc.csv")
    assert int((qc["code"] == "lesion_mask").sum()) == n_masks
    assert dict(manifest["annotation"].value_counts()) == {"mask": n_masks, "lesion-free": len(labels) - n_masks}
    assert result.summary["annotations"]["samples_annotated"] == n_masks
    assert result.summary["annotations"]["problems"] == 0
    annotations = read_annotations(manifest, masks=masked_cohort / "labels.csv")
    positives = int((manifest["label"].astype(str) == "1").sum())
    assert len([path for path in annotations.masks.values() if path is not None]) == positives
    assert annotations.counts["positives_without_annotation"] == 0 and not annotations.problems


def test_index_counts_lesion_rows_and_reports_the_bad_ones(masked_cohort: Path, tmp_path: Path) -> None:
    truth = pd.read_csv(masked_cohort / "ground_truth.csv", dtype=str, keep_default_na=False)
    labels = pd.read_csv(masked_cohort / "labels.csv", dtype=str, keep_default_na=False)
    positives = list(labels.loc[labels["label"] == "1", "study_uid"])
    kept = truth[truth["study_uid"] != positives[0]].copy()  # the first positive loses its rows
    unknown = kept.iloc[[0]].assign(study_uid="1.2.3.404")  # a row that matches no study
    pd.concat([kept, unknown]).to_csv(tmp_path / "lesions.csv", index=False)
    no_masks = labels.drop(columns=["mask"])
    no_masks.to_csv(masked_cohort / "labels_only.csv", index=False)
    try:
        result = index_folder(masked_cohort, tmp_path / "index", labels=masked_cohort / "labels_only.csv",
                              match_on="path", lesions=tmp_path / "lesions.csv", show_progress=False)
    finally:
        (masked_cohort / "labels_only.csv").unlink()
    labelled = result.manifest[result.manifest["label"] != ""]
    by_study = dict(zip(labelled["study_uid"], labelled["annotation"], strict=True))
    assert by_study[positives[0]] == "label-only"
    assert all(by_study[uid] == "lesions" for uid in positives[1:])
    counts = result.summary["annotations"]
    assert counts["samples_annotated"] == len(positives) - 1 and counts["positives_label_only"] == 1
    assert counts["lesion_rows_used"] == len(kept)
    problems = pd.read_csv(tmp_path / "index" / "annotations_qc.csv", dtype=str)
    assert counts["problems"] == len(problems) == 1
    assert problems.iloc[0]["source"] == f"lesions.csv line {len(kept) + 2}"  # the header is line 1
    assert "matches no manifest sample" in problems.iloc[0]["reason"]
    # the masks are scans again once no labels file names them: indexed, but they carry no label
    assert (result.manifest["label"] == "").sum() == int((labels["mask"] != "").sum())


def test_a_broken_lesion_table_fails_before_any_header_is_read(masked_cohort: Path, tmp_path: Path) -> None:
    (tmp_path / "lesions.csv").write_text("study,x\n1.2.3,4\n")
    for table, match in (
        (tmp_path / "lesions.csv", r"lesions\.csv: lesion table lacks column\(s\) study_uid or series_uid"),
        (tmp_path / "missing.csv", r"missing\.csv: annotation file not found"),
    ):
        with pytest.raises(AnnotationError, match=match):
            index_folder(masked_cohort, tmp_path / "index", labels=masked_cohort / "labels.csv", lesions=table,
                         show_progress=False)
        assert not (tmp_path / "index").exists()  # failed before reading headers or writing anything
