"""Multi-class macro metrics keep an honest interval where the bootstrap alone has none.

Macro sensitivity, specificity, PPV and NPV take the MOVER interval of the mean of the per-class
Wilson intervals (Zou & Donner 2008); the references below are written from the formulas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from medrec.report.analysis import analyse_predictions
from medrec.report.stats import mean_proportion_ci, mover_mean_ci

CLASSES = ["hyperdense", "hypodense", "none"]
PER_CLASS = 12


def _predictions(probabilities: np.ndarray) -> pd.DataFrame:
    labels = [CLASSES[i % 3] for i in range(3 * PER_CLASS)]
    return pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(len(labels))], "patient_id": [f"P{i}" for i in range(len(labels))],
        "study_uid": [f"1.{i}" for i in range(len(labels))],
        **{f"score_{name}": probabilities[:, k] for k, name in enumerate(CLASSES)},
        "prediction": [CLASSES[k] for k in probabilities.argmax(axis=1)], "label": labels, "error": "",
    })


Z95 = 1.959963984540054


def _wilson(x: int, n: float) -> tuple[float, float]:
    """Wilson (1927) score interval: (x + z^2/2 -+ z sqrt(x (n - x) / n + z^2 / 4)) / (n + z^2)."""
    centre, half = x + Z95**2 / 2, Z95 * np.sqrt(x * (n - x) / n + Z95**2 / 4)
    return (centre - half) / (n + Z95**2), (centre + half) / (n + Z95**2)


def _mover_mean(successes: list[int], totals: list[float]) -> tuple[float, float]:
    """Zou & Donner (2008): mean -+ sqrt(sum of squared distances to each Wilson bound) / K."""
    p = np.array(successes) / np.array(totals)
    bounds = np.array([_wilson(x, n) for x, n in zip(successes, totals, strict=True)])
    return (p.mean() - np.sqrt(np.sum((p - bounds[:, 0]) ** 2)) / p.size,
            p.mean() + np.sqrt(np.sum((bounds[:, 1] - p) ** 2)) / p.size)


def test_a_model_that_predicts_one_class_has_a_macro_interval_with_width() -> None:
    # Every study is called "none": sensitivities 0, 0, 1 in every bootstrap replicate.
    constant = np.tile([0.2, 0.3, 0.5], (3 * PER_CLASS, 1))
    report = analyse_predictions(_predictions(constant), None, "", n_boot=400, seed=0)
    sensitivity = report["metrics"]["sensitivity"]
    assert sensitivity["value"] == pytest.approx(1 / 3)
    low, high = sensitivity["ci95"]
    assert high - low > 0.05
    # Wilson 0/12 is [0, 0.2425] and 12/12 is [0.7575, 1]: 1/3 - 0.2425 / 3 to 1/3 + sqrt(2) 0.2425 / 3.
    assert (low, high) == pytest.approx(_mover_mean([0, 0, PER_CLASS], [PER_CLASS] * 3), abs=1e-12)
    assert (low, high) == pytest.approx((0.2525, 0.4477), abs=1e-4)
    assert "MOVER" in sensitivity["method"] and "union" not in sensitivity["method"]
    assert report["metrics"]["balanced_accuracy"]["ci95"] == sensitivity["ci95"]
    assert report["multiclass"]["macro"]["sensitivity"]["ci95"] == sensitivity["ci95"]
    specificity = report["metrics"]["specificity"]["ci95"]
    assert specificity[0] < 2 / 3 < specificity[1]


def test_a_perfect_model_has_a_macro_interval_below_one() -> None:
    perfect = np.eye(3)[[i % 3 for i in range(3 * PER_CLASS)]] * 0.8 + 0.0666
    report = analyse_predictions(_predictions(perfect), None, "", n_boot=400, seed=0)
    for name in ("sensitivity", "specificity", "ppv", "npv"):
        value, (low, high) = report["metrics"][name]["value"], report["metrics"][name]["ci95"]
        assert value == 1.0 and high == 1.0 and low < 0.97, name
    # Three 12/12 proportions: 1 - sqrt(3) (1 - 12 / (12 + z^2)) / 3; specificity: 24/24 each.
    assert report["metrics"]["sensitivity"]["ci95"][0] == pytest.approx(
        1 - np.sqrt(3) * (1 - PER_CLASS / (PER_CLASS + Z95**2)) / 3, abs=1e-12)
    assert report["metrics"]["specificity"]["ci95"][0] == pytest.approx(
        1 - np.sqrt(3) * (1 - 2 * PER_CLASS / (2 * PER_CLASS + Z95**2)) / 3, abs=1e-12)


def test_three_classes_of_five_all_right_keep_a_width_below_their_estimate() -> None:
    truth = np.arange(15) % 3
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(15)], "patient_id": [f"P{i}" for i in range(15)],
                          **{f"score_{name}": np.eye(3)[truth][:, k] * 0.8 + 0.1 for k, name in enumerate(CLASSES)},
                          "label": [CLASSES[k] for k in truth]})
    report = analyse_predictions(frame, None, "", n_boot=200, seed=0)
    # By hand: Wilson 5/5 has lower bound 5 / (5 + 3.8415) = 0.5655; the MOVER lower bound of three of
    # them is 1 - sqrt(3) (1 - 0.5655) / 3 = 0.7492. Specificity: three 10/10, 1 - (1 - 0.7225) / sqrt(3).
    expected = {"sensitivity": 0.74915, "ppv": 0.74915, "specificity": 0.83977, "npv": 0.83977}
    for name, lower in expected.items():
        metric = report["metrics"][name]
        assert metric["value"] == 1.0 and metric["ci95"][1] == 1.0, name
        assert metric["ci95"][0] == pytest.approx(lower, abs=1e-5), name
    assert report["metrics"]["balanced_accuracy"]["ci95"] == report["metrics"]["sensitivity"]["ci95"]
    assert "MOVER" in report["methods"]["macro_average"]


def test_clustered_perfect_model_counts_each_patient_once() -> None:
    # Two studies per patient, three patients per class, all right: the design effect cannot be
    # estimated at a proportion of 1, so each class's Wilson interval is at its number of patients.
    truth = np.repeat(np.arange(9) % 3, 2)
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(18)], "patient_id": [f"P{i // 2}" for i in range(18)],
                          **{f"score_{name}": np.eye(3)[truth][:, k] * 0.8 + 0.1 for k, name in enumerate(CLASSES)},
                          "label": [CLASSES[k] for k in truth]})
    report = analyse_predictions(frame, None, "", n_boot=200, seed=0)
    sensitivity, specificity = report["metrics"]["sensitivity"], report["metrics"]["specificity"]
    assert sensitivity["ci95"][0] == pytest.approx(_mover_mean([3, 3, 3], [3, 3, 3])[0], abs=1e-12)
    assert specificity["ci95"][0] == pytest.approx(_mover_mean([6, 6, 6], [6, 6, 6])[0], abs=1e-12)
    for entry in report["multiclass"]["per_class"]:
        assert tuple(entry["metrics"]["sensitivity"]["ci95"]) == pytest.approx(_wilson(3, 3), abs=1e-12)


def test_an_ordinary_macro_interval_is_the_mover_of_hand_wilson_intervals() -> None:
    rng = np.random.default_rng(3)
    y = np.array([i % 3 for i in range(3 * PER_CLASS)])
    logits = rng.normal(0, 1, (y.size, 3)) + 1.5 * np.eye(3)[y]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    report = analyse_predictions(_predictions(probabilities), None, "", n_boot=400, seed=0)
    pred = probabilities.argmax(axis=1)
    # One-vs-rest counts per class, straight from the labels and predictions.
    counts = {
        "sensitivity": [(np.sum((y == k) & (pred == k)), np.sum(y == k)) for k in range(3)],
        "specificity": [(np.sum((y != k) & (pred != k)), np.sum(y != k)) for k in range(3)],
        "ppv": [(np.sum((y == k) & (pred == k)), np.sum(pred == k)) for k in range(3)],
        "npv": [(np.sum((y != k) & (pred != k)), np.sum(pred != k)) for k in range(3)],
    }
    for name, pairs in counts.items():
        successes, totals = [int(x) for x, _ in pairs], [int(n) for _, n in pairs]
        metric = report["metrics"][name]
        assert metric["value"] == pytest.approx(np.mean(np.array(successes) / np.array(totals)), abs=1e-12), name
        assert tuple(metric["ci95"]) == pytest.approx(_mover_mean(successes, totals), abs=1e-12), name
        assert metric["ci95"][0] < metric["value"] < metric["ci95"][1], name
    assert report["multiclass"]["macro"]["sensitivity"]["ci95"] == report["metrics"]["sensitivity"]["ci95"]


def test_mean_proportion_ci_of_one_proportion_is_the_wilson_interval() -> None:
    assert mean_proportion_ci([7], [12]) == pytest.approx(_wilson(7, 12), abs=1e-12)
    assert mean_proportion_ci([7, 2, 9], [12, 10, 9]) == pytest.approx(_mover_mean([7, 2, 9], [12, 10, 9]), abs=1e-12)
    exact = mean_proportion_ci([7], [12], method="clopper-pearson")
    assert exact == pytest.approx(tuple(sps.beta.ppf([0.025, 0.975], [7, 8], [6, 5])), abs=1e-12)
    assert mean_proportion_ci([0, 0], [5, 9])[0] == 0.0 and mean_proportion_ci([5, 9], [5, 9])[1] == 1.0
    assert np.isnan(mean_proportion_ci([1, 0], [4, 0])).all()
    with pytest.raises(ValueError, match="successes <= total"):
        mean_proportion_ci([5], [4])
    with pytest.raises(ValueError, match="hold its estimate"):
        mover_mean_ci([0.5], [0.6], [0.9])


def test_mean_proportion_ci_covers_the_true_macro_average() -> None:
    # Coverage by simulation: three classes of 10, 15 and 20 with sensitivities 0.6, 0.85 and 0.97.
    rng = np.random.default_rng(7)
    totals, truth = np.array([10, 15, 20]), np.array([0.6, 0.85, 0.97])
    draws = rng.binomial(totals, truth, size=(2000, 3))
    covered = [low <= truth.mean() <= high for low, high in (mean_proportion_ci(x, totals) for x in draws)]
    assert 0.93 <= np.mean(covered) <= 0.99
