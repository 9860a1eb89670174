"""analyse_predictions on hand-made predictions tables, checked against scikit-learn and by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, f1_score, matthews_corrcoef, roc_auc_score

from medrec.errors import ConfigError, InputError, LabelsError
from medrec.report import stats
from medrec.report.analysis import analyse_predictions, choose_threshold

FAST = {"n_boot": 200, "seed": 0}

# sample, patient, score, label, error. P1 has two studies; s12 failed; s13 has no label.
ROWS = [
    ("s1", "P1", 0.90, "tumor", ""),
    ("s2", "P1", 0.20, "tumor", ""),
    ("s3", "P2", 0.80, "normal", ""),
    ("s4", "P3", 0.30, "normal", ""),
    ("s5", "P4", 0.60, "tumor", ""),
    ("s6", "P5", 0.10, "normal", ""),
    ("s7", "P6", 0.40, "tumor", ""),
    ("s8", "P7", 0.70, "normal", ""),
    ("s9", "P8", 0.05, "normal", ""),
    ("s10", "P9", 0.95, "tumor", ""),
    ("s11", "P10", 0.50, "tumor", ""),  # exactly at the threshold: positive
    ("s12", "P11", None, "tumor", "DicomError: unreadable"),
    ("s13", "P12", 0.30, "", ""),
]


def _frame(rows=ROWS) -> pd.DataFrame:
    return pd.DataFrame(
        [{"sample_id": s, "patient_id": p, "study_uid": f"st-{s}", "score": score,
          "prediction": "" if score is None else ("tumor" if score >= 0.5 else "normal"), "label": label,
          "error": error} for s, p, score, label, error in rows])


def _manifest() -> pd.DataFrame:
    return pd.DataFrame({
        "sample_id": [row[0] for row in ROWS],
        "manufacturer": ["GE", "GE", "Siemens", "GE", "Siemens", "GE", "Philips", "GE", "Siemens", "GE", "GE", "GE",
                         "GE"],
        "sex": ["F", "F", "M", "F", "M", "", "F", "M", "F", "M", "F", "M", "F"],
        "age": [35, 35, 45, 61, 82, 50, np.nan, 70, 39, 65, 59, 40, 41],
        "site": ["A"] * 6 + ["B"] * 7,
    })


def _included():
    kept = [row for row in ROWS if row[4] == "" and row[3] != ""]
    labels = np.array([1 if row[3] == "tumor" else 0 for row in kept])
    scores = np.array([row[2] for row in kept])
    return kept, labels, scores


@pytest.fixture(scope="module")
def report():
    return analyse_predictions(_frame(), 0.5, "run: chosen on validation by youden", manifest=_manifest(),
                               subgroups=["site"], prevalence=0.05, **FAST)


def test_counts_and_exclusions(report):
    assert report["task"] == "binary"
    assert report["classes"] == ["normal", "tumor"] and report["positive_label"] == "tumor"
    assert report["n_rows"] == 13
    assert report["n_samples"] == 11 and report["n_patients"] == 10
    assert report["n_positive"] == 6 and report["n_negative"] == 5
    assert report["n_excluded"] == 2
    assert report["excluded_reasons"] == {"error": 1, "no label": 1}
    assert report["confusion_matrix"] == {"tp": 4, "fp": 2, "tn": 3, "fn": 2}
    assert report["threshold"] == 0.5
    assert report["threshold_source"] == "run: chosen on validation by youden"
    assert report["prevalence"] == pytest.approx(6 / 11)


def test_metric_values_match_sklearn_and_hand(report):
    _, labels, scores = _included()
    predictions = (scores >= 0.5).astype(int)
    metrics = report["metrics"]
    expected = {
        "sensitivity": 4 / 6, "specificity": 3 / 5, "ppv": 4 / 6, "npv": 3 / 5, "accuracy": 7 / 11,
        "balanced_accuracy": (4 / 6 + 3 / 5) / 2, "f1": f1_score(labels, predictions),
        "mcc": matthews_corrcoef(labels, predictions), "auc": roc_auc_score(labels, scores),
        "brier": np.mean((scores - labels) ** 2),
        "ece": stats.expected_calibration_error(labels, scores),
    }
    for name, value in expected.items():
        assert metrics[name]["value"] == pytest.approx(value), name
    for name in stats.BOOTSTRAP_STATISTICS:
        entry = metrics[name]
        assert set(entry) >= {"value", "ci95", "method"}
        lower, upper = entry["ci95"]
        assert lower <= entry["value"] <= upper, name
    # Patient P1 has two positive studies: Wilson at the effective sample size n / DE (was: the union with a
    # bootstrap interval). Positives per patient P1 1/2, P4 1/1, P6 0/1, P9 1/1, P10 1/1; p = 4/6; ratio-estimator
    # variance 5/4 * (1/9 + 1/9 + 4/9 + 1/9 + 1/9) / 36 over p(1 - p)/5 gives DE = 25/36, floored at 1.
    assert metrics["sensitivity"]["ci95"] == pytest.approx(list(stats.proportion_ci(4, 6)))
    assert metrics["sensitivity"]["design_effect"] == 1.0
    assert "Wilson" in metrics["sensitivity"]["method"]
    assert "6 samples from 5 patients" in metrics["sensitivity"]["method"]
    assert "estimate 0.69 floored at 1" in metrics["sensitivity"]["method"]
    assert (metrics["sensitivity"]["numerator"], metrics["sensitivity"]["denominator"]) == (4, 6)
    # Negatives are one per patient: plain Wilson.
    assert metrics["specificity"]["ci95"] == pytest.approx(list(stats.proportion_ci(3, 5)))
    assert metrics["auc"]["method"].startswith("Obuchowski clustered variance on the logit scale")
    assert "Obuchowski (1997)" in metrics["auc"]["method"]
    assert "BCa" in metrics["f1"]["method"]
    assert "bootstrap" in metrics["brier"]["method"] and "percentile" in metrics["brier"]["method"]


def test_one_study_per_patient_uses_plain_wilson_and_delong():
    frame = _frame()
    frame.loc[frame["sample_id"] == "s2", "patient_id"] = "P99"
    result = analyse_predictions(frame, 0.5, "given", **FAST)
    assert result["metrics"]["sensitivity"]["ci95"] == pytest.approx(list(stats.proportion_ci(4, 6)))
    assert result["metrics"]["specificity"]["ci95"] == pytest.approx(list(stats.proportion_ci(3, 5)))
    _, labels, scores = _included()
    # Logit-scale Wald interval from the DeLong variance (was: the Wald interval on the AUC scale).
    auc, variance = stats.delong_auc_variance(labels, scores)
    half = 1.959963984540054 * np.sqrt(variance) / (auc * (1 - auc))
    expected = 1 / (1 + np.exp(-(np.log(auc / (1 - auc)) + np.array([-half, half]))))
    assert result["metrics"]["auc"]["ci95"] == pytest.approx(list(expected))
    assert result["metrics"]["auc"]["method"].startswith("DeLong variance")
    exact = analyse_predictions(frame, 0.5, "given", ci_method="clopper-pearson", **FAST)
    assert exact["metrics"]["sensitivity"]["ci95"] == pytest.approx(
        list(stats.proportion_ci(4, 6, "clopper-pearson")))
    assert "Clopper-Pearson" in exact["metrics"]["sensitivity"]["method"]


def test_patient_level_aggregation(report):
    patient = report["patient_level"]
    assert patient["n_samples"] == 10 and patient["n_patients"] == 10
    assert patient["n_positive"] == 5 and patient["n_negative"] == 5
    # P1: studies 0.90 and 0.20 -> one positive patient with score 0.90, a true positive.
    assert patient["confusion_matrix"] == {"tp": 4, "fp": 2, "tn": 3, "fn": 1}
    patient_labels = np.array([1, 0, 0, 1, 0, 1, 0, 0, 1, 1])
    patient_scores = np.array([0.90, 0.80, 0.30, 0.60, 0.10, 0.40, 0.70, 0.05, 0.95, 0.50])
    assert patient["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(patient_labels, patient_scores))
    assert patient["metrics"]["sensitivity"]["ci95"] == pytest.approx(list(stats.proportion_ci(4, 5)))
    assert "max" in patient["aggregation"]


def test_threshold_table(report):
    table = report["threshold_table"]
    thresholds = [row["threshold"] for row in table]
    assert thresholds == sorted(thresholds)
    for grid in (0.1, 0.3, 0.9):
        assert grid in thresholds
    operating = next(row for row in table if row["threshold"] == 0.5)
    assert operating["note"] == "operating threshold"
    assert (operating["tp"], operating["fp"], operating["tn"], operating["fn"]) == (4, 2, 3, 2)
    assert operating["sensitivity"] == pytest.approx(4 / 6) and operating["npv"] == pytest.approx(3 / 5)
    # Sensitivity >= 0.90 needs all six positives: the highest such threshold is the lowest positive score.
    target = [row for row in table if "0.90" in row["note"]]
    assert len(target) == 1 and target[0]["threshold"] == pytest.approx(0.20)
    assert "chosen on the test data" in target[0]["note"]
    assert target[0]["sensitivity"] == 1.0 and target[0]["specificity"] == pytest.approx(2 / 5)
    row_01 = next(row for row in table if row["threshold"] == 0.1)
    assert row_01["tp"] == 6 and row_01["tn"] == 1


def test_prevalence_adjusted(report):
    adjusted = report["prevalence_adjusted"]
    ppv, npv = stats.adjusted_ppv_npv(4 / 6, 3 / 5, 0.05)
    assert adjusted["prevalence"] == 0.05
    assert adjusted["ppv"]["value"] == pytest.approx(ppv) and adjusted["npv"]["value"] == pytest.approx(npv)
    # Mercaldo et al. (2007) logit interval (was: Bayes' rule at the sensitivity / specificity bounds), by hand:
    # Se = 4/6 of n1 = 6 (design effect 1), Sp = 3/5 of n0 = 5, no zero cell.
    z, se, sp = 1.959963984540054, 4 / 6, 3 / 5
    centre = np.log(se * 0.05 / ((1 - sp) * 0.95))
    half = z * np.sqrt((1 - se) / (se * 6) + sp / ((1 - sp) * 5))
    assert adjusted["ppv"]["ci95"] == pytest.approx(list(1 / (1 + np.exp(-(centre + np.array([-half, half]))))))
    assert adjusted["ppv"]["ci95"][0] <= ppv <= adjusted["ppv"]["ci95"][1]
    assert "Mercaldo" in adjusted["ppv"]["method"]
    assert adjusted["ppv"]["prevalence"] == 0.05 and adjusted["prevalence_source"].startswith("stated")
    assert report["metrics"]["ppv"]["prevalence"] == pytest.approx(6 / 11)
    assert report["metrics"]["ppv"]["prevalence_source"] == "test set"


def test_subgroups_flag_small_groups_and_keep_them(report):
    groups = report["subgroups"]
    assert set(groups) == {"manufacturer", "sex", "age_band", "site"}
    manufacturer = {group["group"]: group for group in groups["manufacturer"]}
    assert set(manufacturer) == {"GE", "Siemens", "Philips"}  # the failed / unlabelled rows are not counted
    ge = manufacturer["GE"]
    assert ge["n"] == 7 and ge["n_positive"] == 4 and ge["n_patients"] == 6 and ge["small"] is True
    assert ge["metrics"]["sensitivity"]["value"] == pytest.approx(3 / 4)
    philips = manufacturer["Philips"]  # one positive only: AUC undefined, still listed
    assert philips["n"] == 1 and philips["metrics"]["auc"]["value"] is None
    sex = {group["group"]: group["n"] for group in groups["sex"]}
    assert sex == {"F": 6, "M": 4, "unknown": 1}
    bands = [group["group"] for group in groups["age_band"]]
    assert bands == ["<40", "40-59", "60-79", ">=80", "unknown"]
    assert {group["group"]: group["n"] for group in groups["age_band"]} == {
        "<40": 3, "40-59": 3, "60-79": 3, ">=80": 1, "unknown": 1}


def test_large_subgroup_not_flagged():
    rng = np.random.default_rng(0)
    n = 120
    labels = np.tile([0, 1], n // 2)
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                          "score": np.clip(rng.normal(0.3 + 0.4 * labels, 0.2), 0, 1), "label": labels,
                          "error": "", "scanner": np.where(np.arange(n) < 108, "big", "tiny")})
    result = analyse_predictions(frame, 0.5, "given", subgroups=["scanner"], **FAST)
    scanners = {group["group"]: group for group in result["subgroups"]["scanner"]}
    assert scanners["big"]["small"] is False and scanners["tiny"]["small"] is True
    assert scanners["big"]["metrics"]["auc"]["value"] == pytest.approx(
        roc_auc_score(labels[:108], frame["score"][:108]))
    with pytest.raises(ConfigError, match="nowhere"):
        analyse_predictions(frame, 0.5, "given", subgroups=["nowhere"], **FAST)


def test_flagged_cases(report):
    assert [row["sample_id"] for row in report["flagged"]["false_negatives"]] == ["s2", "s7"]
    assert [row["sample_id"] for row in report["flagged"]["false_positives"]] == ["s3", "s8"]
    assert report["flagged"]["false_negatives"][0] == {"sample_id": "s2", "patient_id": "P1", "score": 0.2}


def test_report_is_strict_json(report):
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    # A degenerate table (one class only) still serialises: undefined values are None.
    one_class = _frame([row for row in ROWS if row[3] == "tumor"])
    degenerate = analyse_predictions(one_class, 0.5, "given", **FAST)
    json.dumps(degenerate, allow_nan=False)
    assert degenerate["metrics"]["auc"]["value"] is None
    assert degenerate["metrics"]["specificity"]["value"] is None


def test_curves_are_small_lists():
    rng = np.random.default_rng(1)
    n = 3000
    labels = (rng.random(n) < 0.3).astype(int)
    frame = pd.DataFrame({"sample_id": np.arange(n).astype(str), "patient_id": np.arange(n).astype(str),
                          "score": rng.random(n) * 0.5 + 0.5 * labels * rng.random(n), "label": labels, "error": ""})
    result = analyse_predictions(frame, 0.5, "given", **FAST)
    roc = result["curves"]["roc"]
    assert 2 < len(roc["fpr"]) <= 500 and len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"])
    assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0
    assert len(result["curves"]["pr"]["recall"]) <= 500
    calibration = result["curves"]["calibration"]
    assert sum(calibration["count"]) == n and len(calibration["bin_lower"]) == 10
    histogram = result["curves"]["histogram"]
    assert sum(histogram["positive"]) == labels.sum() and sum(histogram["negative"]) == n - labels.sum()


def _youden_by_hand(labels, scores):
    best, best_cut = -np.inf, None
    for cut in sorted(set(scores), reverse=True):
        predicted = scores >= cut
        j = predicted[labels == 1].mean() + (~predicted[labels == 0]).mean() - 1
        if j > best + 1e-12:
            best, best_cut = j, cut
    return best_cut


def test_exploratory_threshold_is_labelled():
    with pytest.raises(ConfigError, match="--threshold"):
        analyse_predictions(_frame(), None, "", **FAST)
    with pytest.raises(ConfigError, match="not both"):
        analyse_predictions(_frame(), 0.5, "", exploratory_threshold="youden", **FAST)
    result = analyse_predictions(_frame(), None, "", exploratory_threshold="youden", **FAST)
    _, labels, scores = _included()
    assert result["threshold"] == pytest.approx(_youden_by_hand(labels, scores))
    assert result["threshold_source"].startswith("EXPLORATORY: chosen on the test data")
    sens95 = analyse_predictions(_frame(), None, "", exploratory_threshold="sensitivity:0.95", **FAST)
    assert sens95["threshold"] == pytest.approx(0.20)
    assert sens95["metrics"]["sensitivity"]["value"] == 1.0
    assert choose_threshold(labels, scores, "specificity:0.8") == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="exploratory_threshold"):
        analyse_predictions(_frame(), None, "", exploratory_threshold="magic", **FAST)


def test_positive_label_resolution():
    numeric = _frame()
    numeric["label"] = numeric["label"].map({"tumor": 1, "normal": 0, "": None})
    result = analyse_predictions(numeric, 0.5, "given", **FAST)
    assert result["confusion_matrix"] == {"tp": 4, "fp": 2, "tn": 3, "fn": 2}
    pets = _frame()
    pets["label"] = pets["label"].map({"tumor": "dog", "normal": "cat", "": ""})
    with pytest.raises(LabelsError, match="--positive-label"):
        analyse_predictions(pets, 0.5, "given", **FAST)
    result = analyse_predictions(pets, 0.5, "given", positive_label="dog", **FAST)
    assert result["confusion_matrix"] == {"tp": 4, "fp": 2, "tn": 3, "fn": 2}


def test_comparison_paired():
    first = _frame()
    second = _frame()
    second["score"] = [0.7, 0.6, 0.4, 0.35, 0.55, 0.2, 0.45, 0.3, 0.1, 0.8, 0.65, None, 0.3]
    result = analyse_predictions(first, 0.5, "given", compare=second, **FAST)["comparison"]
    _, labels, scores_a = _included()
    scores_b = np.array([0.7, 0.6, 0.4, 0.35, 0.55, 0.2, 0.45, 0.3, 0.1, 0.8, 0.65])
    # P1 has two studies: the Obuchowski clustered paired test (was: paired DeLong, samples as independent).
    patients = np.array([row[1] for row in _included()[0]])
    direct = stats.obuchowski_paired_test(labels, scores_a, scores_b, patients)
    assert result["n_samples"] == 11
    assert result["auc"]["difference"] == pytest.approx(direct["difference"])
    assert result["auc"]["p_value"] == pytest.approx(direct["p_value"])
    assert "Obuchowski" in result["auc"]["method"]
    # Positives: A correct on s1 s5 s10 s11, B on s1 s2 s5 s10 s11 -> b = 0, c = 1.
    assert (result["sensitivity"]["b"], result["sensitivity"]["c"]) == (0, 1)
    assert result["sensitivity"]["p_value"] == pytest.approx(1.0)
    assert "exact" in result["sensitivity"]["method"]
    # Negatives: A correct on s4 s6 s9, B on s3 s4 s6 s8 s9 -> b = 0, c = 2.
    assert (result["specificity"]["b"], result["specificity"]["c"]) == (0, 2)
    other = second[second["sample_id"] != "s4"]
    with pytest.raises(InputError, match="s4"):
        analyse_predictions(first, 0.5, "given", compare=other, **FAST)


def test_multiclass():
    classes = ["benign", "glioma", "meningioma"]
    labels = ["benign", "glioma", "meningioma", "glioma", "benign", "meningioma", "glioma", "benign", "glioma",
              "meningioma", "benign", "glioma"]
    probs = np.array([
        [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1], [0.1, 0.5, 0.4],
        [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.1, 0.6, 0.3], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1], [0.3, 0.5, 0.2],
    ])
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(12)], "patient_id": [f"p{i}" for i in range(12)],
                          **{f"score_{name}": probs[:, k] for k, name in enumerate(classes)},
                          "prediction": [classes[k] for k in probs.argmax(axis=1)], "label": labels, "error": ""})
    frame.loc[12] = ["s12", "p12", None, None, None, "", "glioma", "timeout"]
    result = analyse_predictions(frame, None, "", **FAST)
    json.dumps(result, allow_nan=False)
    assert result["task"] == "multiclass" and result["classes"] == classes
    assert result["n_samples"] == 12 and result["excluded_reasons"] == {"error": 1}
    predicted = [classes[k] for k in probs.argmax(axis=1)]
    expected = confusion_matrix(labels, predicted, labels=classes).tolist()
    assert result["multiclass"]["confusion_matrix"] == expected
    assert result["confusion_matrix"] == expected
    glioma = result["multiclass"]["per_class"][1]
    assert glioma["class"] == "glioma" and glioma["n"] == 5
    is_glioma = np.array(labels) == "glioma"
    assert glioma["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(is_glioma, probs[:, 1]))
    assert glioma["metrics"]["sensitivity"]["value"] == pytest.approx(expected[1][1] / 5)
    macro_auc = np.mean([roc_auc_score(np.array(labels) == name, probs[:, k]) for k, name in enumerate(classes)])
    assert result["multiclass"]["macro"]["auc"]["value"] == pytest.approx(macro_auc)
    assert result["metrics"]["accuracy"]["value"] == pytest.approx(np.trace(expected) / 12)


def test_a_class_named_none_is_a_class_not_a_missing_label():
    classes = ["hyperdense", "hypodense", "none"]
    labels = ["none", "hypodense", "hyperdense", "none", "hypodense", "none", "hyperdense", "none"]
    probs = np.array([[0.1, 0.2, 0.7], [0.2, 0.6, 0.2], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3],
                      [0.1, 0.1, 0.8], [0.5, 0.3, 0.2], [0.4, 0.2, 0.4]])
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(8)], "patient_id": [f"p{i}" for i in range(8)],
                          **{f"score_{name}": probs[:, k] for k, name in enumerate(classes)},
                          "prediction": [classes[k] for k in probs.argmax(axis=1)], "label": labels, "error": ""})
    result = analyse_predictions(frame, None, "", **FAST)
    assert result["n_samples"] == 8 and result["n_excluded"] == 0
    none = next(row for row in result["multiclass"]["per_class"] if row["class"] == "none")
    assert none["n"] == 4
    assert none["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(np.array(labels) == "none", probs[:, 2]))

