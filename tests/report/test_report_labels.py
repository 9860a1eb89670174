"""``medrec report --labels``: the reference standard attached (or refreshed) when the report is made."""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

THRESHOLD = 0.5
COLUMNS = ["sample_id", "patient_id", "study_uid", "score", "prediction", "label", "error"]


def _unlabelled(inputs, folder: Path, label: str = "") -> Path:
    """The fixture's predictions with every label replaced by ``label`` (as scored without --labels)."""
    frame = inputs.frame.copy()
    frame["label"] = label
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pred.csv"
    frame[COLUMNS].to_csv(path, index=False)
    return path


def _confusion(frame: pd.DataFrame) -> dict[str, int]:
    usable = frame[(frame["error"] == "") & frame["score"].notna() & (frame["label"] != "")]
    truth, flagged = usable["label"] == "1", usable["score"] >= THRESHOLD
    return {"tp": int((truth & flagged).sum()), "fp": int((~truth & flagged).sum()),
            "tn": int((~truth & ~flagged).sum()), "fn": int((truth & ~flagged).sum())}


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_labels_by_study_uid_are_attached_at_report_time(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _unlabelled(report_inputs, tmp_path / "scored")
    truth = report_inputs.frame[["study_uid", "label"]].copy()
    left_out = truth["study_uid"].iloc[[5, 9]].tolist()  # two studies the labels file does not know
    labels = truth[~truth["study_uid"].isin(left_out)]
    labels = pd.concat([labels, pd.DataFrame([{"study_uid": "9.9.9", "label": "1"}])])  # matches no row
    labels_csv = tmp_path / "site_labels.csv"
    labels.to_csv(labels_csv, index=False)
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--threshold", str(THRESHOLD),
                               "--labels", str(labels_csv), "--bootstrap", "50"])
    assert code == 0, output
    report = _report(out)
    expected = report_inputs.frame.assign(
        label=report_inputs.frame["label"].where(~report_inputs.frame["study_uid"].isin(left_out), ""))
    assert report["confusion_matrix"] == _confusion(expected)
    assert report["excluded_reasons"]["no label"] == 2
    reference = report["provenance"]["reference_standard"]
    assert "site_labels.csv" in reference and "study_uid" in reference
    assert report["reference_standard"]["match_on"] == "study_uid"
    assert report["reference_standard"]["label_rows_unmatched"] == 1
    text = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert "site_labels.csv" in text and "9.9.9" not in text
    assert "site_labels.csv" in output


def test_labels_given_at_report_time_replace_the_predictions_labels(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _unlabelled(report_inputs, tmp_path / "scored", label="0")  # stale: everything negative
    labels_csv = tmp_path / "labels.tsv"
    report_inputs.frame[["patient_id", "label"]].drop_duplicates().to_csv(labels_csv, sep="\t", index=False)
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--threshold", str(THRESHOLD),
                               "--labels", str(labels_csv), "--match-on", "patient_id", "--bootstrap", "50"])
    assert code == 0, output
    report = _report(out)
    assert report["confusion_matrix"] == _confusion(report_inputs.frame)
    assert report["reference_standard"]["match_on"] == "patient_id"


def _study_level(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """Study-level predictions of four studies (two series each) scored from a manifest CSV, as 'medrec score
    --level study' writes them: group rows, a samples file and a sidecar naming the input manifest."""
    folder = tmp_path / "scored"
    folder.mkdir(parents=True)
    samples, groups = [], []
    for study in range(4):
        members = []
        for series in range(2):
            sample_id = f"s{study}{series}"
            members.append(sample_id)
            samples.append({"sample_id": sample_id, "patient_id": f"P{study}", "study_uid": f"1.2.{study}",
                            "series_uid": f"1.3.{study}.{series}", "accession": f"A{study}{series}",
                            "modality": "MR", "format": "nifti",
                            "path": str(tmp_path / "scans" / f"{sample_id}.nii.gz"), "files": "", "label": "",
                            "score": 0.2 + 0.2 * study, "prediction": "", "error": ""})
        groups.append({"sample_id": hashlib.sha256(f"study:1.2.{study}".encode()).hexdigest()[:16],
                       "patient_id": f"P{study}", "study_uid": f"1.2.{study}", "score": 0.2 + 0.2 * study,
                       "prediction": "1" if 0.2 + 0.2 * study >= THRESHOLD else "0", "label": "", "error": "",
                       "n_samples": 2, "n_failed": 0, "sample_ids": ";".join(members)})
    manifest = pd.DataFrame(samples)
    manifest_path = tmp_path / "manifest.csv"
    manifest.drop(columns=["score", "prediction", "error"]).to_csv(manifest_path, index=False)
    predictions = folder / "study.csv"
    pd.DataFrame(groups).to_csv(predictions, index=False)
    manifest[["sample_id", "patient_id", "study_uid", "score", "prediction", "label", "error"]].to_csv(
        folder / "study.samples.csv", index=False)
    predictions.with_name("study.csv.json").write_text(json.dumps({
        "classes": ["0", "1"], "positive_class": "1", "threshold": THRESHOLD,
        "threshold_source": "command line (--threshold)", "level": "study", "aggregate": "max",
        "samples_file": "study.samples.csv", "input": {"kind": "manifest", "path": str(manifest_path)},
    }))
    return predictions, manifest_path, manifest


def test_study_rows_get_the_label_of_their_series_matched_by_path(tmp_path, run_medrec) -> None:
    predictions, _, manifest = _study_level(tmp_path)
    # per-series labels keyed by file name: study 1 has one positive series, so the study is positive
    series_labels = {"s00": "normal", "s01": "normal", "s10": "normal", "s11": "tumor",
                     "s20": "tumor", "s21": "tumor", "s30": "tumor"}  # s31 unlabelled: study 3 stays positive
    labels_csv = tmp_path / "labels.csv"
    pd.DataFrame([{"path": f"{sample}.nii.gz", "label": label} for sample, label in series_labels.items()]).to_csv(
        labels_csv, index=False)
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--labels", str(labels_csv),
                               "--match-on", "path", "--bootstrap", "50", "--keep-identifiers"])
    assert code == 0, output
    report = _report(out)
    # studies 0..3 score 0.2, 0.4, 0.6, 0.8; labels normal, tumor, tumor, tumor
    assert report["classes"] == ["normal", "tumor"]
    assert report["confusion_matrix"] == {"tp": 2, "fp": 0, "tn": 1, "fn": 1}
    assert report["reference_standard"]["match_on"] == "path"
    assert report["provenance"]["manifest"] == "manifest.csv"  # the manifest scoring read (from the sidecar)
    assert "labels.csv" in report["provenance"]["reference_standard"]


def test_key_that_needs_the_manifest_without_one_is_refused(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _unlabelled(report_inputs, tmp_path / "scored")
    labels_csv = tmp_path / "labels.csv"
    pd.DataFrame({"accession": ["A1"], "label": ["1"]}).to_csv(labels_csv, index=False)
    code, output = run_medrec(["report", str(predictions), "-o", str(tmp_path / "r"), "--threshold", "0.5",
                               "--labels", str(labels_csv)])
    assert code != 0 and "Traceback" not in output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "labels.csv" in lines[0] and "--manifest" in lines[0]


def test_labels_matching_no_prediction_are_refused(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _unlabelled(report_inputs, tmp_path / "scored")
    labels_csv = tmp_path / "labels.csv"
    pd.DataFrame({"study_uid": ["9.9.9", "9.9.8"], "label": ["1", "0"]}).to_csv(labels_csv, index=False)
    code, output = run_medrec(["report", str(predictions), "-o", str(tmp_path / "r"), "--threshold", "0.5",
                               "--labels", str(labels_csv)])
    assert code != 0 and "Traceback" not in output
    assert "labels.csv" in output and "matches none" in output


def test_positive_label_names_the_class_a_vocabulary_does_not(tmp_path, run_medrec) -> None:
    """Labels that do not say which is positive ('hcc' / 'fnh') are an error until --positive-label names it."""
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    score = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.3, 0.2])
    predictions = tmp_path / "pred.csv"
    pd.DataFrame({"sample_id": [f"s{i}" for i in range(y.size)], "patient_id": [f"p{i}" for i in range(y.size)],
                  "label": np.where(y == 1, "hcc", "fnh"), "score": score}).to_csv(predictions, index=False)
    code, output = run_medrec(["report", str(predictions), "-o", str(tmp_path / "none"), "--threshold", "0.5"])
    assert code != 0 and "Traceback" not in output
    assert "'fnh', 'hcc'" in output and "--positive-label" in output

    for positive, truth in (("hcc", y == 1), ("fnh", y == 0)):
        out = tmp_path / positive
        code, output = run_medrec(["report", str(predictions), "-o", str(out), "--threshold", "0.5",
                                   "--positive-label", positive])
        assert code == 0, output
        report = json.loads((out / "report.json").read_text())
        assert report["positive_label"] == positive
        called = score >= 0.5
        assert report["metrics"]["sensitivity"]["value"] == pytest.approx((called & truth).sum() / truth.sum())
        assert report["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(truth, score))
