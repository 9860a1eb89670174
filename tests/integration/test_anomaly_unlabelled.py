"""An anomaly detector trained from a scan folder without labels (``data.unlabelled: normal``).

Every study is assumed normal, so validation holds no positive: the epochs are judged on the
validation studies against copies with a synthetic anomaly, the threshold is set at a stated
false-positive rate on the normal validation studies, and the report says so. Tiny and short
(the pipeline, not what it learns, is under test).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medrec.config import parse_config
from medrec.errors import ConfigError, LabelsError

RECIPE = {
    "name": "unlabelled",
    "task": "anomaly",
    "data": {"scans": "scans", "unlabelled": "normal"},
    "split": {"val": 0.25, "test": 0.25, "seed": 0, "check_pixels": False},
    "preprocessing": {"preset": "mr", "augment": True},
    "model": {"name": "finding_fcn"},
    "training": {"epochs": 2, "steps_per_epoch": 4, "batch_size": 8, "anomaly_diameter_mm": [24, 48],
                 "device": "cpu"},
    "threshold": {"method": "specificity:0.9"},
    "evaluation": {"bootstrap": 200},
}


@pytest.fixture(scope="module")
def unlabelled_run(tmp_path_factory) -> Path:
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("unlabelled")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate_cohort(root / "scans", kind="mri-tumor", patients=24, prevalence=0.0, fmt="nifti", seed=1,
                        image_size=48, slice_thickness=6.0, follow_up_fraction=0.0)
    (root / "scans" / "labels.csv").unlink()  # a folder of scans, nothing else
    (root / "recipe.yaml").write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "medrec", "run", "recipe.yaml", "-o", "run"], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run"


def test_every_study_is_assumed_normal_and_marked_so(unlabelled_run):
    manifest = pd.read_csv(unlabelled_run / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(manifest) == 24
    assert set(manifest["label"]) == {"normal"} and set(manifest["label_assumed"]) == {"1"}
    log = (unlabelled_run / "train.log").read_text(encoding="utf-8")
    assert "the 24 without a label are assumed normal" in log


def test_epochs_are_judged_on_synthetic_copies_of_the_validation_studies(unlabelled_run):
    records = [json.loads(line) for line in (unlabelled_run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(0.0 <= r["val_auc"] <= 1.0 for r in records)


def test_the_threshold_gives_the_stated_false_positive_rate_on_normal_validation_studies(unlabelled_run):
    info = json.loads((unlabelled_run / "model.json").read_text())
    threshold, calibration = info["threshold"], info["calibration"]
    assert threshold["method"] == "specificity:0.9" and threshold["chosen_on"] == "validation"
    assert threshold.get("val_sensitivity") is None and "no labelled positive" in threshold["note"]
    assert calibration["method"] == "none"
    scores = pd.read_csv(unlabelled_run / "val_predictions.csv")["score"].to_numpy()
    # the lowest normal score that leaves at least 90 % of the normals below it (or just above them all)
    below = [(s, (scores < s).mean()) for s in sorted(set(scores)) if (scores < s).mean() >= 0.9 - 1e-12]
    expected = below[0] if below else (None, 1.0)
    if expected[0] is None:
        assert scores.max() < threshold["value"] <= scores.max() + 1e-9
    else:
        assert threshold["value"] == pytest.approx(expected[0])
    assert threshold["val_specificity"] == pytest.approx(expected[1])


def test_the_report_states_the_assumption_and_the_threshold(unlabelled_run):
    report = json.loads((unlabelled_run / "evaluation" / "report.json").read_text())
    text = " ".join(report["limitations"])
    assert "Studies without a label were assumed normal" in text
    assert "validation held no labelled positive" in text
    assert "No reference-positive sample: sensitivity cannot be measured." in text


def test_unlabelled_rows_are_normal_only_for_anomaly_detection(tmp_path):
    with pytest.raises(ConfigError, match="data.unlabelled: normal .* is for task: anomaly"):
        parse_config({"data": {"manifest": str(tmp_path / "m.csv"), "unlabelled": "normal"}})


def test_labelled_and_unlabelled_rows_share_the_labelled_classes():
    from medrec.train.inputs import _with_assumed_normals

    manifest = pd.DataFrame({"sample_id": list("abcd"), "label": ["tumor", "normal", "", None]})
    config = parse_config({"task": "anomaly", "data": {"manifest": "m.csv", "unlabelled": "normal"}})
    rows, assumed, classes = _with_assumed_normals(manifest, config, lambda _: None)
    assert classes == ("normal", "tumor") and assumed == {"c", "d"}
    assert rows["label"].tolist() == ["tumor", "normal", "normal", "normal"]
    only_tumors = manifest.assign(label=["tumor", "", "", ""])
    with pytest.raises(LabelsError, match=r"labels \['tumor'\] are not among data.classes"):
        _with_assumed_normals(only_tumors, config, lambda _: None)
    named = parse_config({"task": "anomaly", "data": {"manifest": "m.csv", "unlabelled": "normal",
                                                      "classes": ["none", "tumor"]}})
    rows, assumed, classes = _with_assumed_normals(only_tumors, named, lambda _: None)
    assert classes == ("none", "tumor") and rows["label"].tolist() == ["tumor", "none", "none", "none"]


def test_the_tta_threshold_is_chosen_by_the_same_rule_on_the_normals(unlabelled_run):
    root = unlabelled_run.parent
    done = subprocess.run([sys.executable, "-m", "medrec", "score", "run", "scans/P0001", "--tta", "-o", "tta.csv"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    entry = json.loads((unlabelled_run / "model.json").read_text())["threshold_tta"]
    assert entry["method"] == "specificity:0.9" and entry["val_sensitivity"] is None and entry["n_val"] == 6
    assert 0.9 <= entry["val_specificity"] <= 1.0
