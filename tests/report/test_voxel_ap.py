"""Voxel-level average precision of finding maps (``lesion_level.voxel_ap`` of the report).

Checked against scikit-learn's ``average_precision_score`` on the same voxels flattened: on random
scores with ties pooled over studies, through lesion spheres drawn on grids with flipped, permuted
and anisotropic axes (against voxel centres measured in LPS mm here), and through ``medrec
report --lesions`` on maps written by the scorer's own NIfTI writer; and without maps, where the
report gives the reason and no number.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from medrec.annotations import Lesion
from medrec.atomicio import write_bytes
from medrec.report.lesions import ThresholdCounts, VoxelStudy, pooled_average_precision, voxel_level_ap
from medrec.report.lesions.voxel_ap import _lesion_mask, read_map
from medrec.score.explain import nifti_bytes, safe_file_stem
from medrec.score.writer import FINDINGS_COLUMNS, write_sidecar

# a RAS affine with permuted, flipped and anisotropic axes: i runs right-to-left (0.7 mm), j runs
# superior (2.5 mm), k runs anterior-to-posterior (1.2 mm)
ODD_AFFINE = np.array([[-0.7, 0.0, 0.0, 12.0], [0.0, 0.0, -1.2, 20.0], [0.0, 2.5, 0.0, -30.0], [0.0, 0.0, 0.0, 1.0]])


def _inside_lps(shape: tuple[int, ...], affine_ras: np.ndarray, lesions: list[Lesion]) -> np.ndarray:
    """Voxels whose centre lies within a lesion's radius, measured in LPS mm (independent of the code)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    ras = index @ affine_ras[:3, :3].T + affine_ras[:3, 3]
    lps = ras * np.array([-1.0, -1.0, 1.0])
    inside = np.zeros(shape, dtype=bool)
    for lesion in lesions:
        inside |= np.linalg.norm(lps - np.array(lesion.center_lps), axis=-1) <= lesion.diameter_mm / 2
    return inside


def _lps_of(index: tuple[int, int, int], affine_ras: np.ndarray) -> tuple[float, float, float]:
    x, y, z = affine_ras[:3, :3] @ np.array(index, dtype=np.float64) + affine_ras[:3, 3]
    return (float(-x), float(-y), float(z))


def test_a_hand_computed_case():
    # scores 0.9 (lesion), 0.8, 0.8 (lesion), 0.1: at 0.9 recall 1/2 precision 1, at 0.8 recall 1 precision 2/3
    scores = np.array([0.9, 0.8, 0.8, 0.1], dtype=np.float32)
    inside = np.array([True, False, True, False])
    assert pooled_average_precision([(scores, inside)]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert pooled_average_precision([(scores, np.zeros(4, dtype=bool))]) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_ap_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    studies = []
    for size in (500, 1, 1200, 333):
        # few distinct values: many ties within and across studies, between lesion and background
        inside = rng.random(size) < 0.08
        scores = np.round(np.clip(rng.normal(0.3 + 0.3 * inside, 0.2), 0, 1) * 20) / 20
        studies.append((scores.astype(np.float32), inside))
    studies.append((np.zeros(50, dtype=np.float32), np.zeros(50, dtype=bool)))  # an all-zero negative map
    labels = np.concatenate([inside for _, inside in studies])
    pooled = np.concatenate([scores for scores, _ in studies])
    expected = average_precision_score(labels, pooled)
    assert pooled_average_precision(studies, chunk_voxels=97) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert pooled_average_precision(studies[::-1]) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # the step-wise sum is not the interpolated area under the PR curve (trapezoids differ on ties)
    from sklearn.metrics import auc, precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, pooled)
    assert abs(auc(recall, precision) - expected) > 1e-6


def test_counts_refuse_lesion_scores_that_were_not_counted():
    from medrec.errors import InputError

    counts = ThresholdCounts(np.array([0.9, 0.5], dtype=np.float32))
    counts.add(np.array([0.9, 0.1], dtype=np.float32))
    with pytest.raises(InputError, match="not among the counted voxels"):
        counts.average_precision()


def test_spheres_land_on_flipped_anisotropic_grids(tmp_path):
    shape = (40, 14, 30)
    centre = _lps_of((9, 4, 21), ODD_AFFINE)  # off-centre: an LPS / RAS or axis mix-up misses it
    lesions = [Lesion((centre[0] + 0.3, centre[1] - 0.2, centre[2] + 0.4), 7.0, "L1"),
               Lesion(_lps_of((30, 10, 5), ODD_AFFINE), 9.0, "L2")]
    path = tmp_path / "map.nii.gz"
    write_bytes(path, nifti_bytes(np.zeros(shape, dtype=np.float32), ODD_AFFINE))
    values, affine = read_map(path)
    np.testing.assert_allclose(affine, ODD_AFFINE)
    mask = _lesion_mask(values, affine, lesions)
    expected = _inside_lps(shape, ODD_AFFINE, lesions)
    assert expected.sum() > 40
    np.testing.assert_array_equal(mask, expected)
    mirrored = [Lesion((-x, -y, z), lesion.diameter_mm, lesion.source) for lesion in lesions for x, y, z in
                [lesion.center_lps]]
    assert not (_lesion_mask(values, affine, mirrored) & expected).any()  # RAS read as LPS lands elsewhere


def _write_maps_cohort(folder: Path, with_maps: bool = True, drop_map_of: str | None = None) -> dict:
    """Predictions of five studies with finding maps written as ``medrec score --explain`` writes them.

    A and B are positive with lesions (A on ODD_AFFINE, with an unsafe sample id whose map name is
    hashed), C is negative with a lesion row (ignored), D is positive without a lesion row (left out),
    E failed scoring. Map values: rounded noise (ties) plus a bump on each lesion.
    """
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    grids = {"A": ((24, 10, 20), ODD_AFFINE), "B": ((16, 16, 8), np.diag([1.0, 1.0, 3.0, 1.0])),
             "C": ((12, 12, 12), np.diag([-1.0, -1.0, 1.0, 1.0])), "D": ((8, 8, 8), np.eye(4)),
             "E": ((8, 8, 8), np.eye(4))}
    labels = {"A": "1", "B": "1", "C": "0", "D": "1", "E": "1"}
    sample_ids = {"A": "smp A/1", "B": "smpB", "C": "smpC", "D": "smpD", "E": "smpE"}
    lesions = {"A": [Lesion(_lps_of((6, 3, 14), ODD_AFFINE), 6.0, "a1"), Lesion(_lps_of((18, 7, 4), ODD_AFFINE),
                                                                                 4.0, "a2")],
               "B": [Lesion(_lps_of((5, 9, 4), grids["B"][1]), 5.0, "b1")],
               "C": [Lesion(_lps_of((6, 6, 6), grids["C"][1]), 5.0, "c1")]}
    truth, rows, findings = {}, [], []
    for study, (shape, affine) in grids.items():
        inside = _inside_lps(shape, affine, lesions.get(study, [])) & (labels[study] == "1")
        values = (np.round(rng.random(shape) * 8) / 10 + 0.2 * inside).astype(np.float32)
        values[rng.random(shape) < 0.3] = 0.0  # many exact zeros, as below a finding map's floor
        uid = f"1.2.840.77.{ord(study)}"
        failed = study == "E"
        rows.append({"sample_id": sample_ids[study], "patient_id": f"MRN{study}", "study_uid": uid,
                     "score": None if failed else 0.7, "prediction": "" if failed else "1", "label": labels[study],
                     "error": "unreadable" if failed else "", "finding_x": 0.0, "finding_y": 0.0, "finding_z": 0.0,
                     "finding_diameter_mm": 5.0, "finding_probability": 0.9})
        findings.append({"sample_id": sample_ids[study], "study_uid": uid, "patient_id": f"MRN{study}", "rank": 1,
                         "x": 0.0, "y": 0.0, "z": 0.0, "diameter_mm": 5.0, "probability": 0.9})
        if with_maps and not failed and study != drop_map_of:
            write_bytes(folder / "maps" / f"{safe_file_stem(sample_ids[study])}.nii.gz", nifti_bytes(values, affine))
        if study in ("A", "B", "C"):
            truth[study] = (values, inside)
    predictions = folder / "pred.csv"
    pd.DataFrame(rows).to_csv(predictions, index=False)
    pd.DataFrame(findings, columns=list(FINDINGS_COLUMNS)).to_csv(folder / "pred.findings.csv", index=False)
    write_sidecar(predictions, {"level": "series", "model_sha256": "0" * 64, "findings_file": "pred.findings.csv",
                                "findings_voxel_mm": 1.0, "explain_dir": "maps"})
    table = folder / "lesions.csv"
    pd.DataFrame([{"study_uid": f"1.2.840.77.{ord(s)}", "center_x": x, "center_y": y, "center_z": z,
                   "diameter_mm": lesion.diameter_mm} for s, found in lesions.items() for lesion in found
                  for x, y, z in [lesion.center_lps]]).to_csv(table, index=False)
    return {"predictions": predictions, "lesions": table, "truth": truth}


def _report(files: dict, out: Path) -> dict:
    from medrec.report.build import write_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_report(files["predictions"], out, threshold=0.5, n_boot=50, lesions=files["lesions"])


def test_report_voxel_ap_equals_sklearn_on_the_flattened_maps(tmp_path):
    files = _write_maps_cohort(tmp_path / "scores")
    truth = files["truth"]
    labels = np.concatenate([inside.ravel() for _, inside in truth.values()])
    scores = np.concatenate([values.ravel() for values, _ in truth.values()])
    report = _report(files, tmp_path / "report")
    voxel = report["lesion_level"]["voxel_ap"]
    assert voxel["value"] == pytest.approx(average_precision_score(labels, scores), rel=1e-12)
    assert voxel["reason"] is None
    assert (voxel["studies"], voxel["positive_studies"], voxel["maps"]) == (3, 2, 3)
    assert (voxel["voxels"], voxel["lesion_voxels"]) == (labels.size, int(labels.sum()))
    assert voxel["positive_without_lesions"] == 1 and voxel["studies_without_map"] == 0
    assert voxel["folders"] == ["maps"]
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "Voxel-level average precision (all voxels pooled)" in html
    assert f"{voxel['value']:.3f}" in html
    assert "voxel-level average precision" in report["methods"]["lesion_level"]
    stored = json.loads((tmp_path / "report" / "report.json").read_text())["lesion_level"]["voxel_ap"]
    assert stored["value"] == pytest.approx(voxel["value"])


def test_maps_read_twice_give_the_same_value(tmp_path):
    files = _write_maps_cohort(tmp_path / "scores")
    folders = [tmp_path / "scores" / "maps"]
    by_study = {"A": "smp A/1", "B": "smpB", "C": "smpC"}
    lesions = pd.read_csv(files["lesions"])
    studies = []
    for study, sample_id in by_study.items():
        own = lesions[lesions["study_uid"] == f"1.2.840.77.{ord(study)}"]
        found = tuple(Lesion((r.center_x, r.center_y, r.center_z), r.diameter_mm, "") for r in own.itertuples())
        studies.append(VoxelStudy(study != "C", found, (sample_id,)))
    in_memory = voxel_level_ap(studies, folders)
    read_twice = voxel_level_ap(studies, folders, cache_voxels=2100, chunk_voxels=333)  # only B's map is kept
    assert read_twice["value"] == in_memory["value"] is not None
    assert read_twice["voxels"] == in_memory["voxels"] == sum(v.size for v, _ in files["truth"].values())


def test_without_maps_the_report_says_why_and_gives_no_number(tmp_path):
    files = _write_maps_cohort(tmp_path / "scores", with_maps=False)
    report = _report(files, tmp_path / "report")
    voxel = report["lesion_level"]["voxel_ap"]
    assert voxel["value"] is None and voxel["voxels"] == 0
    assert "--explain" in voxel["reason"] and "without finding maps" in voxel["reason"]
    html = " ".join((tmp_path / "report" / "report.html").read_text(encoding="utf-8").split())
    assert "Voxel-level average precision was not computed: the predictions come without finding maps" in html
    assert "--explain DIR" in html
    assert "voxel-level average precision" not in report["methods"]["lesion_level"]


def test_a_missing_map_leaves_its_study_out_and_says_so(tmp_path):
    files = _write_maps_cohort(tmp_path / "scores", drop_map_of="B")
    values, inside = zip(*(files["truth"][s] for s in ("A", "C")), strict=True)
    expected = average_precision_score(np.concatenate([m.ravel() for m in inside]),
                                       np.concatenate([v.ravel() for v in values]))
    report = _report(files, tmp_path / "report")
    voxel = report["lesion_level"]["voxel_ap"]
    assert voxel["value"] == pytest.approx(expected, rel=1e-12)
    assert (voxel["studies"], voxel["studies_without_map"]) == (2, 1)
    assert any("without a finding map" in note for note in report["limitations"])


def test_an_unreadable_map_leaves_its_study_out_and_is_named(tmp_path):
    files = _write_maps_cohort(tmp_path / "scores")
    (tmp_path / "scores" / "maps" / "smpB.nii.gz").write_bytes(b"not a NIfTI file")
    values, inside = zip(*(files["truth"][s] for s in ("A", "C")), strict=True)
    expected = average_precision_score(np.concatenate([m.ravel() for m in inside]),
                                       np.concatenate([v.ravel() for v in values]))
    report = _report(files, tmp_path / "report")
    voxel = report["lesion_level"]["voxel_ap"]
    assert voxel["value"] == pytest.approx(expected, rel=1e-12)
    assert voxel["studies_with_unreadable_map"] == 1
    assert len(voxel["unreadable_maps"]) == 1 and voxel["unreadable_maps"][0].startswith("smpB.nii.gz: unreadable")
    html = " ".join((tmp_path / "report" / "report.html").read_text(encoding="utf-8").split())
    assert "Unreadable: smpB.nii.gz: unreadable finding map" in html


def test_evaluating_a_finding_map_run_with_lesions_reports_its_voxel_ap(annotated_ct, annotated_ct_run, tmp_path):
    """``medrec evaluate --lesions`` writes the maps (``evaluation/explain``) and the report pools them."""
    import shutil

    from medrec.cli import main

    run = tmp_path / "run"
    shutil.copytree(annotated_ct_run, run, ignore=shutil.ignore_patterns("evaluation"))
    truth = annotated_ct["cohort"].ground_truth_csv
    with pytest.raises(SystemExit) as done:
        main(["evaluate", str(run), "--lesions", str(truth), "--bootstrap", "200", "--device", "cpu"])
    assert done.value.code in (0, None)
    report = json.loads((run / "evaluation" / "report.json").read_text())
    voxel = report["lesion_level"]["voxel_ap"]
    maps = sorted((run / "evaluation" / "explain").glob("*.nii.gz"))
    assert len(maps) == report["n_samples"] and voxel["maps"] == len(maps)
    assert voxel["studies_without_map"] == 0 and voxel["lesion_voxels"] > 0
    # a model that learned where the lesions are ranks their voxels far above the base rate
    base_rate = voxel["lesion_voxels"] / voxel["voxels"]
    assert voxel["value"] > max(5 * base_rate, 0.2)


def test_evaluate_refuses_a_missing_lesion_table_before_scoring(annotated_ct_run, tmp_path):
    import shutil

    from medrec.errors import InputError
    from medrec.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(annotated_ct_run, run, ignore=shutil.ignore_patterns("evaluation"))
    with pytest.raises(InputError, match=r"nope\.csv: lesion table not found"):
        evaluate_run(run, lesions=tmp_path / "nope.csv", n_boot=200, device="cpu")
    assert not (run / "evaluation" / "predictions.csv").exists()
