"""The run's validation split beside the test metrics (medrec.report.validation_split)."""

from __future__ import annotations

import json
import math
import shutil
from html import unescape

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medrec.report.validation_split import validation_results


def _write_validation(folder, labels, scores) -> None:
    pd.DataFrame({"sample_id": [f"v{i}" for i in range(len(labels))], "label": labels,
                  "score": scores}).to_csv(folder / "val_predictions.csv", index=False)


def _wilson(x: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_validation_metrics_match_an_independent_computation(tmp_path) -> None:
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 2, 40)
    scores = np.clip(0.35 * truth + rng.normal(0.35, 0.2, truth.size), 0, 1)
    _write_validation(tmp_path, np.where(truth == 1, "tumor", "normal"), scores)
    result = validation_results(tmp_path, 0.5, "tumor")
    called = scores >= 0.5
    tp, fn = int((called & (truth == 1)).sum()), int((~called & (truth == 1)).sum())
    tn, fp = int((~called & (truth == 0)).sum()), int((called & (truth == 0)).sum())
    assert (result["n"], result["n_positive"], result["n_negative"]) == (40, tp + fn, tn + fp)
    metrics = result["metrics"]
    assert metrics["auc"]["value"] == pytest.approx(roc_auc_score(truth, scores))
    assert metrics["auc"]["ci95"][0] < metrics["auc"]["value"] < metrics["auc"]["ci95"][1]
    assert metrics["sensitivity"]["value"] == pytest.approx(tp / (tp + fn))
    assert metrics["sensitivity"]["ci95"] == pytest.approx(list(_wilson(tp, tp + fn)))
    assert metrics["specificity"]["value"] == pytest.approx(tn / (tn + fp))
    assert metrics["specificity"]["ci95"] == pytest.approx(list(_wilson(tn, tn + fp)))


def test_no_validation_result_without_a_file_a_threshold_or_both_classes(tmp_path) -> None:
    assert validation_results(tmp_path, 0.5, "1") is None  # no val_predictions.csv
    _write_validation(tmp_path, ["1", "1", "1"], [0.2, 0.6, 0.9])
    assert validation_results(tmp_path, 0.5, "1") is None  # one class only
    _write_validation(tmp_path, ["1", "0", "1"], [0.2, 0.6, 0.9])
    assert validation_results(tmp_path, None, "1") is None  # multi-class: no threshold
    assert validation_results(None, 0.5, "1") is None


@pytest.fixture()
def trained_report(report_inputs, tmp_path_factory, run_medrec):
    """The fixture run with a validation file, and its report."""
    root = tmp_path_factory.mktemp("validation_split")
    run = root / "run"
    shutil.copytree(report_inputs.run, run)
    rng = np.random.default_rng(8)
    truth = rng.integers(0, 2, 30)
    _write_validation(run, truth.astype(str), np.clip(0.4 * truth + rng.normal(0.3, 0.2, truth.size), 0, 1))
    out = root / "report"
    code, output = run_medrec(["report", str(report_inputs.predictions), "-o", str(out), "--run", str(run),
                            "--bootstrap", "100"])
    assert code == 0, output
    return out, run


def test_a_report_with_its_run_prints_the_validation_split_beside_the_test(trained_report) -> None:
    out, run = trained_report
    report = json.loads((out / "report.json").read_text())
    validation = report["validation_split"]
    expected = validation_results(run, report["threshold"], str(report["positive_label"]))
    assert validation["n"] == expected["n"]
    assert validation["metrics"]["auc"]["value"] == pytest.approx(expected["metrics"]["auc"]["value"])
    html = " ".join(unescape((out / "report.html").read_text()).split())
    assert "The run's validation split" in html and "optimistic" in html
