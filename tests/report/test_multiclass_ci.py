"""Multi-class macro metrics keep an honest interval where the bootstrap alone has none."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from medrec.report.analysis import analyse_predictions
from medrec.report.stats import cluster_bootstrap_multiclass, mean_proportion_ci

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


def _jeffreys_mean_interval(successes: list[int], totals: list[int], draws: int = 400_000) -> np.ndarray:
    """Independent check: Monte Carlo quantiles of the mean of the Jeffreys Beta distributions."""
    rng = np.random.default_rng(0)
    mean = np.mean([rng.beta(x + 0.5, n - x + 0.5, draws) for x, n in zip(successes, totals, strict=True)], axis=0)
    return np.quantile(mean, [0.025, 0.975])


def test_a_model_that_predicts_one_class_has_a_macro_interval_with_width() -> None:
    # Every study is called "none": sensitivities 0, 0, 1 in every bootstrap replicate.
    constant = np.tile([0.2, 0.3, 0.5], (3 * PER_CLASS, 1))
    report = analyse_predictions(_predictions(constant), None, "", n_boot=400, seed=0)
    sensitivity = report["metrics"]["sensitivity"]
    assert sensitivity["value"] == pytest.approx(1 / 3)
    low, high = sensitivity["ci95"]
    assert high - low > 0.05
    expected = _jeffreys_mean_interval([0, 0, PER_CLASS], [PER_CLASS] * 3)
    assert (low, high) == pytest.approx(tuple(expected), abs=0.004)
    assert "Jeffreys" in sensitivity["method"] and "bootstrap" in sensitivity["method"]
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
    # The Jeffreys interval's lower bound of the mean of three 12/12 proportions.
    assert report["metrics"]["sensitivity"]["ci95"][0] == pytest.approx(
        _jeffreys_mean_interval([PER_CLASS] * 3, [PER_CLASS] * 3)[0], abs=0.004)


def test_an_ordinary_macro_interval_contains_the_bootstrap_interval() -> None:
    rng = np.random.default_rng(3)
    y = np.array([i % 3 for i in range(3 * PER_CLASS)])
    logits = rng.normal(0, 1, (y.size, 3)) + 1.5 * np.eye(3)[y]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    report = analyse_predictions(_predictions(probabilities), None, "", n_boot=400, seed=0)
    boot = cluster_bootstrap_multiclass(["sensitivity"], y, probabilities, probabilities.argmax(axis=1),
                                        np.arange(y.size).astype(str), n_boot=400, seed=0)["macro"]["sensitivity"]
    low, high = report["metrics"]["sensitivity"]["ci95"]
    assert low <= boot.ci[0] and high >= boot.ci[1]
    assert report["metrics"]["sensitivity"]["value"] == pytest.approx(boot.value)


def test_mean_proportion_ci_of_one_proportion_is_the_jeffreys_interval() -> None:
    low, high = mean_proportion_ci([7], [12])
    assert (low, high) == pytest.approx(tuple(sps.beta.ppf([0.025, 0.975], 7.5, 5.5)), abs=0.002)
    assert mean_proportion_ci([0, 0], [5, 9])[0] == 0.0 and mean_proportion_ci([5, 9], [5, 9])[1] == 1.0
    assert np.isnan(mean_proportion_ci([1, 0], [4, 0])).all()
    with pytest.raises(ValueError, match="successes <= total"):
        mean_proportion_ci([5], [4])
