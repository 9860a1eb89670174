"""Reports on another site's labels: predictions labelled normal / tumor from a run trained on 0 / 1."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import pytest

from medrec.errors import LabelsError
from medrec.report.label_space import label_mapping, run_label_space

THRESHOLD = 0.5  # the frozen threshold in the run's model.json (report_inputs)
SITE_LABELS = {"0": "normal", "1": "tumor"}
COLUMNS = ["sample_id", "patient_id", "study_uid", "score", "prediction", "label", "error"]


def _site_predictions(inputs, folder: Path) -> Path:
    """The fixture's predictions with the site's labels; 'prediction' keeps the run's class names, as scoring writes."""
    frame = inputs.frame.copy()
    frame["label"] = frame["label"].map(SITE_LABELS)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pred.csv"
    frame[COLUMNS].to_csv(path, index=False)
    return path


def _expected_confusion(inputs) -> dict[str, int]:
    usable = inputs.frame[(inputs.frame["error"] == "") & inputs.frame["score"].notna()]
    truth, flagged = usable["label"] == "1", usable["score"] >= THRESHOLD
    return {"tp": int((truth & flagged).sum()), "fp": int((~truth & flagged).sum()),
            "tn": int((~truth & ~flagged).sum()), "fn": int((truth & ~flagged).sum())}


def _check_mapped(report: dict, inputs) -> None:
    assert report["classes"] == ["normal", "tumor"] and report["positive_label"] == "tumor"
    assert report["label_mapping"] == {"normal": "0", "tumor": "1"}
    assert report["confusion_matrix"] == _expected_confusion(inputs)
    assert not [w for w in report["warnings"] if "prediction" in w]
    assert "'normal' -> '0', 'tumor' -> '1'" in report["provenance"]["label_mapping"]


def test_report_maps_site_labels_onto_the_run_classes(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _site_predictions(report_inputs, tmp_path / "site")
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--run", str(report_inputs.run),
                               "--bootstrap", "50"])
    assert code == 0, output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    _check_mapped(report, report_inputs)
    assert json.loads((report_inputs.run / "model.json").read_text())["threshold"]["value"] == THRESHOLD
    assert report["threshold"] == THRESHOLD and report["threshold_kind"] == "validation"
    # The run's manifest and splits name the classes 0 / 1: their positives are counted all the same.
    manifest = pd.read_csv(report_inputs.run / "manifest.csv", dtype=str, keep_default_na=False)
    splits = pd.read_csv(report_inputs.run / "splits.csv", dtype=str, keep_default_na=False)
    merged = manifest.merge(splits[["sample_id", "split"]], on="sample_id")
    counted = {row["split"]: row["n_positive"] for row in report["cohort"]["splits"]}
    assert counted == {name: int((part["label"] == "1").sum()) for name, part in merged.groupby("split")}
    text = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert "they were matched to the run's classes by polarity: 'normal' as '0', 'tumor' as '1'." in text


def test_report_reads_the_run_classes_from_the_sidecar(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _site_predictions(report_inputs, tmp_path / "site")
    sidecar = predictions.with_name(predictions.name + ".json")
    sidecar.write_text(json.dumps({"classes": ["0", "1"], "positive_class": "1", "threshold": THRESHOLD}))
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--threshold", str(THRESHOLD),
                               "--bootstrap", "50"])
    assert code == 0, output
    _check_mapped(json.loads((out / "report.json").read_text(encoding="utf-8")), report_inputs)


def test_label_mapping_decisions() -> None:
    frame = pd.DataFrame({"label": ["normal", "tumor", "", "tumor"]})
    assert label_mapping(frame, None, None, "pred.csv") == ({}, None)
    assert label_mapping(frame, (["0", "1"], "1"), None, "pred.csv") == ({"normal": "0", "tumor": "1"}, "tumor")
    assert label_mapping(frame.assign(label=["0", "1", "", "1"]), (["0", "1"], "1"), None, "pred.csv") == ({}, "1")
    # An all-negative site: the analysis names the positive class by the run's name.
    assert label_mapping(frame.assign(label="normal"), (["0", "1"], "1"), None, "pred.csv") == ({"normal": "0"}, "1")
    with pytest.raises(LabelsError, match=r"pred\.csv: labels \['cat', 'dog'\] cannot be matched to the run's "
                                          r"classes \['0', '1'\]"):
        label_mapping(frame.assign(label=["cat", "dog", "", "cat"]), (["0", "1"], "1"), None, "pred.csv")


@pytest.mark.parametrize(("record", "expected"), [
    ({"classes": ["0", "1"], "positive_class": "1"}, (["0", "1"], "1")),
    ({"classes": ["0", "1"]}, None),
    ({"classes": ["a", "b", "c"], "positive_class": None}, None),
    ({"classes": ["0", "1"], "positive_class": "2"}, None),
    (None, None),
])
def test_run_label_space(record, expected) -> None:
    assert run_label_space(record) == expected
