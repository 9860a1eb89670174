"""Lesion-level results: hit rate, FROC / CPM and sensitivity by size on a case worked out by hand,
through the pure API, through ``medrec report --lesions`` on hand-written files, the error case,
and end to end on a small trained finding-map run.

The hand-made cohort (tolerance 1 mm, so a finding hits a lesion within radius + 1 mm):

====== ========= ========= ==================================== =====================================
study  reference predicted lesions (centre LPS mm, diameter)    candidates (probability @ point)
====== ========= ========= ==================================== =====================================
A      positive  positive  L1 (0,0,0) 10 mm; L2 (50,0,0) 4 mm   0.9 @ (1,1,0) L1; 0.7 @ (20,0,0) FP;
                                                                0.4 @ (51,0,0) L2; 0.3 @ (2,0,0) L1 again
B      positive  positive  L3 (0,0,0) 20 mm                     0.8 @ (30,0,0) FP; 0.6 @ (10,0,0) L3
C      negative  negative  (none)                               0.5 @ (0,0,0) FP; 0.2 @ (5,5,5) FP
D      positive  negative  L4 (0,0,0) 36 mm                     (none)
====== ========= ========= ==================================== =====================================

Top findings: A's is its 0.9 candidate (inside L1), B's its 0.8 candidate (outside L3): hit rate 1/2.
Lesion scores: L1 0.9, L3 0.6, L2 0.4, L4 never; false positives 0.8, 0.7, 0.5, 0.2 over 4 studies.
Sweeping the threshold (sensitivity, FP per study): inf (0, 0), 0.9 (1/4, 0), 0.8 (1/4, 1/4),
0.7 (1/4, 1/2), 0.6 (2/4, 1/2), 0.5 (2/4, 3/4), 0.4 (3/4, 3/4), 0.2 (3/4, 1).
At 1/8, 1/4, 1/2, 1, 2, 4, 8 FP per study: 1/4, 1/4, 2/4, 3/4, 3/4, 3/4, 3/4; CPM = 4/7.
At 1 FP per study (threshold 0.2) L1, L2, L3 are detected, L4 is not: by diameter <10 mm (L2) 1/1,
10-20 (L1) 1/1, 20-30 (L3) 1/1, >=30 (L4) 0/1. Contrasts 10, -20, 30, 40: tertile edges of |contrast|
at 20 and 30, so low {L1, L2} 2/2, middle {L3} 1/1, high {L4} 0/1.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medrec.annotations import Lesion
from medrec.report.lesions import LesionCase, froc_curve, froc_points, lesion_level_analysis

EXPECTED_SENSITIVITY = {0.125: 0.25, 0.25: 0.25, 0.5: 0.5, 1.0: 0.75, 2.0: 0.75, 4.0: 0.75, 8.0: 0.75}
EXPECTED_CURVE = {  # threshold: (sensitivity, FP per study)
    math.inf: (0.0, 0.0), 0.9: (0.25, 0.0), 0.8: (0.25, 0.25), 0.7: (0.25, 0.5), 0.6: (0.5, 0.5),
    0.5: (0.5, 0.75), 0.4: (0.75, 0.75), 0.2: (0.75, 1.0),
}
LESIONS = {  # name: (study, centre, diameter, contrast)
    "L1": ("A", (0.0, 0.0, 0.0), 10.0, 10.0),
    "L2": ("A", (50.0, 0.0, 0.0), 4.0, -20.0),
    "L3": ("B", (0.0, 0.0, 0.0), 20.0, 30.0),
    "L4": ("D", (0.0, 0.0, 0.0), 36.0, 40.0),
}
CANDIDATES = {  # study: [(probability, point)], most probable first
    "A": [(0.9, (1.0, 1.0, 0.0)), (0.7, (20.0, 0.0, 0.0)), (0.4, (51.0, 0.0, 0.0)), (0.3, (2.0, 0.0, 0.0))],
    "B": [(0.8, (30.0, 0.0, 0.0)), (0.6, (10.0, 0.0, 0.0))],
    "C": [(0.5, (0.0, 0.0, 0.0)), (0.2, (5.0, 5.0, 5.0))],
    "D": [],
}
REFERENCE = {"A": (True, True), "B": (True, True), "C": (False, False), "D": (True, False)}


def _wilson(successes: int, total: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927) score interval, written out from its formula."""
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return centre - half, centre + half


def _hand_cases() -> list[LesionCase]:
    cases = []
    for study, (positive, predicted) in REFERENCE.items():
        lesions = tuple(Lesion(centre, diameter, name, contrast) for name, (s, centre, diameter, contrast)
                        in LESIONS.items() if s == study)
        found = CANDIDATES[study]
        cases.append(LesionCase(positive, predicted, lesions, tuple(found), found[0][1] if found else None))
    return cases


def test_froc_and_hit_rate_match_the_hand_computation():
    result = lesion_level_analysis(_hand_cases(), tolerance_mm=1.0)
    curve = result["froc"]["curve"]
    assert curve["threshold"] == list(EXPECTED_CURVE)
    assert curve["sensitivity"] == pytest.approx([sensitivity for sensitivity, _ in EXPECTED_CURVE.values()])
    assert curve["fp_per_study"] == pytest.approx([rate for _, rate in EXPECTED_CURVE.values()])
    assert {p["fp_per_study_target"]: p["sensitivity"] for p in result["froc"]["points"]} == EXPECTED_SENSITIVITY
    assert result["froc"]["cpm"] == pytest.approx(4 / 7)
    assert result["froc"]["max_fp_per_study"] == 1.0
    assert (result["n_lesions"], result["n_froc_studies"], result["n_candidates"]) == (4, 4, 8)
    assert (result["n_candidates_hit"], result["n_false_positive_candidates"]) == (4, 4)

    hit_rate = result["hit_rate"]
    assert (hit_rate["numerator"], hit_rate["denominator"], hit_rate["value"]) == (1, 2, 0.5)
    assert hit_rate["ci95"] == pytest.approx(list(_wilson(1, 2)))
    assert hit_rate["method"] == "Wilson score interval"

    operating = result["operating_point"]
    assert (operating["threshold"], operating["fp_per_study"], operating["sensitivity"]) == (0.2, 1.0, 0.75)
    by_diameter = {row["band"]: (row["n_detected"], row["n_lesions"]) for row in result["by_diameter"]}
    assert by_diameter == {"<10 mm": (1, 1), "10-20 mm": (1, 1), "20-30 mm": (1, 1), ">=30 mm": (0, 1)}
    assert result["contrast_edges"] == pytest.approx([20.0, 30.0])
    assert [(row["n_detected"], row["n_lesions"]) for row in result["by_contrast"]] == [(2, 2), (1, 1), (0, 1)]
    assert result["by_diameter"][3]["ci95"] == pytest.approx(list(_wilson(0, 1)))


def test_tolerance_decides_a_borderline_hit():
    # 4 mm from the centre of a 4 mm lesion (radius 2): outside with 1 mm of tolerance, inside with 2 mm
    lesion = Lesion((50.0, 0.0, 0.0), 4.0, "L2")
    near = LesionCase(True, True, (lesion,), ((0.4, (54.0, 0.0, 0.0)),), (54.0, 0.0, 0.0))
    assert lesion_level_analysis([near], tolerance_mm=1.0)["hit_rate"]["numerator"] == 0
    assert lesion_level_analysis([near], tolerance_mm=2.0)["hit_rate"]["numerator"] == 1


def test_froc_reads_the_lowest_threshold_within_the_target():
    # two FPs tied at 0.5 over 4 studies jump from 0 to 1/2 FP per study: 1/4 cannot take them
    curve = froc_curve([0.6, 0.5, -np.inf], [0.5, 0.5], n_cases=4)
    assert curve["threshold"] == [math.inf, 0.6, 0.5]
    points = {p["fp_per_study_target"]: (p["sensitivity"], p["threshold"]) for p in froc_points(curve)}
    assert points[0.25] == (pytest.approx(1 / 3), 0.6)
    assert points[0.5] == (pytest.approx(2 / 3), 0.5)


def test_positive_studies_without_lesions_are_left_out():
    cases = [*_hand_cases(), LesionCase(True, True, (), ((0.95, (0.0, 0.0, 0.0)),), (0.0, 0.0, 0.0))]
    result = lesion_level_analysis(cases, tolerance_mm=1.0)
    assert result["n_positive_without_lesions"] == 1
    assert result["froc"]["cpm"] == pytest.approx(4 / 7)
    assert result["hit_rate"]["denominator"] == 2 and result["hit_rate"]["n_without_lesions"] == 1


# ------------------------------------------------------------------------------------------------
# Through the files and ``medrec report``
# ------------------------------------------------------------------------------------------------


def _write_hand_files(folder: Path, with_findings: bool = True, level: str = "series") -> dict[str, Path]:
    """The hand-made cohort as predictions + sidecar + findings file + lesion table.

    Beyond A-D: E is positive and predicted positive but has no annotated lesion (left out), F failed
    scoring (its lesion is ignored), C's lesion row is on a negative study, one row names a study
    not in the predictions and one row has no diameter. At ``level="study"`` the predictions hold
    group rows (``sample_ids``) and the samples file the sample rows, as ``medrec score --level study``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    scores = {"A": 0.9, "B": 0.8, "C": 0.3, "D": 0.2, "E": 0.7, "F": None}
    labels = {"A": "1", "B": "1", "C": "0", "D": "1", "E": "1", "F": "1"}
    candidates = {**CANDIDATES, "E": [(0.95, (0.0, 0.0, 0.0))], "F": []}
    rows, findings = [], []
    for study, score in scores.items():
        top = candidates[study][0][1] if candidates[study] else (100.0, 0.0, 0.0)
        rows.append({"sample_id": f"smp{study}", "patient_id": f"MRN{study}", "study_uid": f"1.2.840.99.{ord(study)}",
                     "score": score, "prediction": "" if score is None else str(int(score >= 0.5)),
                     "label": labels[study], "error": "" if score is not None else "unreadable",
                     "finding_x": top[0], "finding_y": top[1], "finding_z": top[2],
                     "finding_diameter_mm": 5.0, "finding_probability": 0.9})
        for rank, (probability, (x, y, z)) in enumerate(candidates[study], start=1):
            findings.append({"sample_id": f"smp{study}", "study_uid": f"1.2.840.99.{ord(study)}",
                             "patient_id": f"MRN{study}", "rank": rank, "x": x, "y": y, "z": z, "diameter_mm": 5.0,
                             "probability": probability})
    predictions = folder / "pred.csv"
    record = {"level": level, "model_sha256": "0" * 64}
    if level == "study":
        pd.DataFrame(rows).to_csv(folder / "pred.samples.csv", index=False)
        rows = [{**row, "sample_id": f"group{index}", "sample_ids": row["sample_id"], "n_samples": 1,
                 "n_failed": int(bool(row["error"]))} for index, row in enumerate(rows)]
        record["samples_file"] = "pred.samples.csv"
    pd.DataFrame(rows).to_csv(predictions, index=False)
    if with_findings:
        pd.DataFrame(findings).to_csv(folder / "pred.findings.csv", index=False)
        record.update(findings_file="pred.findings.csv", findings_voxel_mm=1.0, findings_min_probability=0.05,
                      findings_max_per_sample=10)
    (folder / "pred.csv.json").write_text(json.dumps(record))
    lesions = [{"study_uid": f"1.2.840.99.{ord(s)}", "center_x": c[0], "center_y": c[1], "center_z": c[2],
                "diameter_mm": d, "contrast": k} for s, c, d, k in LESIONS.values()]
    lesions += [
        {"study_uid": f"1.2.840.99.{ord('C')}", "center_x": 0, "center_y": 0, "center_z": 0, "diameter_mm": 8,
         "contrast": 5},
        {"study_uid": f"1.2.840.99.{ord('F')}", "center_x": 0, "center_y": 0, "center_z": 0, "diameter_mm": 8,
         "contrast": 5},
        {"study_uid": "1.2.840.99.999", "center_x": 0, "center_y": 0, "center_z": 0, "diameter_mm": 8, "contrast": 5},
        {"study_uid": f"1.2.840.99.{ord('A')}", "center_x": 0, "center_y": 0, "center_z": 0, "diameter_mm": "",
         "contrast": 5},
    ]
    table = folder / "lesions.csv"
    pd.DataFrame(lesions).to_csv(table, index=False)
    return {"predictions": predictions, "lesions": table}


@pytest.mark.parametrize("level", ["series", "study"])
def test_report_cli_adds_the_lesion_section(tmp_path, run_medrec, level):
    files = _write_hand_files(tmp_path / "scores", level=level)
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, output = run_medrec(["report", str(files["predictions"]), "-o", str(out), "--threshold", "0.5",
                                "--lesions", str(files["lesions"]), "--bootstrap", "50"])
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    lesion = report["lesion_level"]
    assert lesion["tolerance_mm"] == 1.0 and "one voxel" in lesion["tolerance_source"]
    assert {p["fp_per_study_target"]: p["sensitivity"] for p in lesion["froc"]["points"]} == EXPECTED_SENSITIVITY
    assert lesion["froc"]["cpm"] == pytest.approx(4 / 7)
    assert (lesion["hit_rate"]["numerator"], lesion["hit_rate"]["denominator"]) == (1, 2)
    assert lesion["n_positive_without_lesions"] == 1 and lesion["n_studies"] == 5
    assert lesion["lesion_rows"] == {"total": 8, "bad": 1, "not_in_predictions": 1, "in_negative_studies": 1,
                                     "in_studies_not_analysed": 1, "analysed": 4}
    assert "figures/froc.png" in report["figures"] and (out / "figures" / "froc.png").stat().st_size > 1000
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Lesion-level results" in html and "CPM" in html and "plus 1 mm" in html
    assert "FROC CPM 0.571 over 4 lesions" in " ".join(output.split())
    assert "MRNA" not in html and "1.2.840.99.65" not in html  # no identifier leaves


def test_lesions_without_a_findings_file_name_the_predictions(tmp_path, run_medrec):
    files = _write_hand_files(tmp_path / "scores", with_findings=False)
    code, output = run_medrec(["report", str(files["predictions"]), "-o", str(tmp_path / "report"), "--threshold",
                            "0.5", "--lesions", str(files["lesions"])])
    assert code != 0 and "Traceback" not in output
    assert "pred.csv" in output and "finding-map" in output and "findings" in output
    assert not (tmp_path / "report" / "report.html").exists()


# ------------------------------------------------------------------------------------------------
# End to end on a small trained finding-map run
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored_finding_run(annotated_ct, annotated_ct_run):
    """The shared finding-map run of the annotated CT cohort, its test split scored."""
    from medrec.cli import main

    root, cohort = annotated_ct["root"], annotated_ct["cohort"]
    splits = pd.read_csv(root / "run" / "splits.csv", dtype=str)
    manifest = pd.read_csv(root / "index" / "manifest.csv", dtype=str, keep_default_na=False)
    manifest[manifest["sample_id"].isin(splits.loc[splits["split"] == "test", "sample_id"])].to_csv(
        root / "test.csv", index=False)
    with pytest.raises(SystemExit) as done:
        main(["score", str(root / "run"), str(root / "test.csv"), "-o", str(root / "scores" / "pred.csv"),
              "--workers", "0"])
    assert done.value.code in (0, None)
    return {"root": root, "run": root / "run", "predictions": root / "scores" / "pred.csv",
            "truth": cohort.ground_truth_csv, "manifest": manifest}


def test_report_lesion_section_on_a_trained_run(scored_finding_run, tmp_path, run_medrec):
    run, predictions_csv = scored_finding_run["run"], scored_finding_run["predictions"]
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions_csv), "-o", str(out), "--run", str(run),
                               "--lesions", str(scored_finding_run["truth"]), "--bootstrap", "200"])
    assert code == 0, output
    report = json.loads((out / "report.json").read_text())
    lesion = report["lesion_level"]
    assert "Lesion-level results" in (out / "report.html").read_text(encoding="utf-8")
    assert (out / "figures" / "froc.png").is_file()

    # the tolerance is one voxel of the scoring grid: the plan's largest spacing
    plan = json.loads((run / "plan.json").read_text())["plan"]
    assert lesion["tolerance_mm"] == pytest.approx(max(plan["spacing"]), abs=1e-3)
    tolerance = lesion["tolerance_mm"]

    # recompute from the files: predictions, findings file and ground truth
    predictions = pd.read_csv(predictions_csv, dtype={"label": str, "study_uid": str, "sample_id": str})
    findings = pd.read_csv(predictions_csv.with_name("pred.findings.csv"), dtype={"sample_id": str})
    truth = pd.read_csv(scored_finding_run["truth"], dtype={"study_uid": str})
    positives = predictions[predictions["label"] == report["positive_label"]]
    lesions = truth[truth["study_uid"].isin(positives["study_uid"])]
    assert lesion["n_studies"] == len(predictions) == report["n_samples"]
    assert lesion["n_lesions"] == len(lesions) > 0
    assert lesion["n_candidates"] == len(findings)
    elsewhere = ~truth["study_uid"].isin(predictions["study_uid"])
    assert lesion["lesion_rows"]["not_in_predictions"] == int(elsewhere.sum())

    study_of = dict(zip(predictions["sample_id"], predictions["study_uid"], strict=True))
    centres = lesions[["center_x", "center_y", "center_z"]].to_numpy()
    reach = lesions["diameter_mm"].to_numpy() / 2 + tolerance
    hit_lesions, false_positives = np.zeros(len(lesions), dtype=bool), 0
    for candidate in findings.to_dict("records"):
        same_study = (lesions["study_uid"] == study_of[candidate["sample_id"]]).to_numpy()
        point = np.array([candidate["x"], candidate["y"], candidate["z"]])
        hit = same_study & (np.linalg.norm(centres - point, axis=1) <= reach + 1e-6)
        hit_lesions |= hit
        false_positives += not hit.any()
    assert lesion["n_false_positive_candidates"] == false_positives
    curve = lesion["froc"]["curve"]
    assert curve["sensitivity"][-1] == pytest.approx(hit_lesions.mean())
    assert curve["fp_per_study"][-1] == pytest.approx(false_positives / len(predictions))
    assert lesion["froc"]["cpm"] == pytest.approx(np.mean([p["sensitivity"] for p in lesion["froc"]["points"]]))

    true_positive = positives[positives["score"] >= report["threshold"]]
    inside = 0
    for row in true_positive.to_dict("records"):
        own = lesions[lesions["study_uid"] == row["study_uid"]]
        point = np.array([row["finding_x"], row["finding_y"], row["finding_z"]])
        distances = np.linalg.norm(own[["center_x", "center_y", "center_z"]].to_numpy() - point, axis=1)
        inside += bool((distances <= own["diameter_mm"].to_numpy() / 2 + tolerance + 1e-6).any())
    assert (lesion["hit_rate"]["numerator"], lesion["hit_rate"]["denominator"]) == (inside, len(true_positive))
    # the model learns where lesions are (see tests/train/test_finding_training.py)
    assert lesion["hit_rate"]["denominator"] >= 2 and lesion["hit_rate"]["value"] >= 0.5
    assert sum(row["n_lesions"] for row in lesion["by_diameter"]) == lesion["n_lesions"]
    assert sum(row["n_lesions"] for row in lesion["by_contrast"]) == lesion["n_lesions"]


def test_a_lesion_table_of_other_studies_gives_an_empty_section(tmp_path):
    from medrec.report.build import write_report

    files = _write_hand_files(tmp_path / "scores")
    other = tmp_path / "other.csv"
    pd.DataFrame([{"series_uid": "9.9.9", "center_x": 0, "center_y": 0, "center_z": 0, "diameter_mm": 5}]).to_csv(
        other, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = write_report(files["predictions"], tmp_path / "report", threshold=0.5, n_boot=50, lesions=other)
    lesion = report["lesion_level"]
    assert lesion["n_lesions"] == 0 and lesion["froc"]["cpm"] is None and lesion["hit_rate"]["denominator"] == 0
    assert lesion["lesion_rows"]["not_in_predictions"] == 1 and lesion["n_positive_without_lesions"] == 4
    assert "froc.png" not in " ".join(report["figures"])
    assert "Lesion-level results" in (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
