"""Calibration (intercept, slope, observed / expected, scaled Brier) and decision curves against values
computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from medrec.report import stats
from medrec.report.analysis import analyse_predictions
from medrec.report.document import calibration_table, performance_section

Z95 = 1.959963984540054


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _expit(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def _two_scores():
    """Ten samples scored 0.2 (3 positive) and ten scored 0.7 (6 positive)."""
    probs = np.r_[np.full(10, 0.2), np.full(10, 0.7)]
    labels = np.r_[np.ones(3, int), np.zeros(7, int), np.ones(6, int), np.zeros(4, int)]
    return labels, probs


def test_calibration_slope_of_a_binary_score_is_a_log_odds_ratio():
    # With two score values the recalibration model is saturated: the fitted probabilities are the observed
    # fractions 0.3 and 0.6, so b = (logit 0.6 - logit 0.3) / (logit 0.7 - logit 0.2), and its standard error is
    # the log odds ratio's, sqrt(1/3 + 1/7 + 1/6 + 1/4), over the same spacing.
    labels, probs = _two_scores()
    result = stats.logistic_calibration(labels, probs)
    spacing = _logit(0.7) - _logit(0.2)
    slope = (_logit(0.6) - _logit(0.3)) / spacing
    se = math.sqrt(1 / 3 + 1 / 7 + 1 / 6 + 1 / 4) / spacing
    assert result["slope"]["value"] == pytest.approx(slope, abs=1e-9)
    assert result["slope"]["se"] == pytest.approx(se, abs=1e-9)
    assert result["slope"]["ci"] == pytest.approx((slope - Z95 * se, slope + Z95 * se), abs=1e-9)
    assert result["slope"]["intercept"] == pytest.approx(_logit(0.3) - slope * _logit(0.2), abs=1e-9)


def test_calibration_in_the_large_solves_observed_equals_expected():
    labels, probs = _two_scores()
    result = stats.logistic_calibration(labels, probs)
    # The score equation of the offset model: sum y = sum expit(a + logit p).
    a = brentq(lambda t: 10 * _expit(t + _logit(0.2)) + 10 * _expit(t + _logit(0.7)) - 9, -5, 5, xtol=1e-14)
    mu1, mu2 = _expit(a + _logit(0.2)), _expit(a + _logit(0.7))
    se = 1 / math.sqrt(10 * mu1 * (1 - mu1) + 10 * mu2 * (1 - mu2))
    assert result["intercept"]["value"] == pytest.approx(a, abs=1e-9)
    assert result["intercept"]["se"] == pytest.approx(se, abs=1e-9)
    assert result["intercept"]["ci"] == pytest.approx((a - Z95 * se, a + Z95 * se), abs=1e-9)
    # Observed 9, expected 2 + 7 = 9; log-scale binomial interval; Brier and scaled Brier by hand.
    assert result["oe_ratio"]["value"] == pytest.approx(1.0)
    half = Z95 * math.sqrt((1 - 9 / 20) / 9)
    assert result["oe_ratio"]["ci"] == pytest.approx((math.exp(-half), math.exp(half)), abs=1e-12)
    brier = (3 * 0.8**2 + 7 * 0.2**2 + 6 * 0.3**2 + 4 * 0.7**2) / 20
    assert result["brier"] == pytest.approx(brier)
    assert result["scaled_brier"] == pytest.approx(1 - brier / (0.45 * 0.55))


def test_clustered_calibration_uses_the_sandwich():
    # Every score 0.3: the offset model's intercept is logit(ybar) - logit(0.3) in closed form; its robust variance
    # is k/(k-1) sum_c (sum_{i in c} (y_i - ybar))^2 / (n ybar (1 - ybar))^2.
    labels = np.array([1, 1, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0])
    patients = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    result = stats.logistic_calibration(labels, np.full(12, 0.3), patients)
    ybar = 5 / 12
    assert result["intercept"]["value"] == pytest.approx(_logit(ybar) - _logit(0.3), abs=1e-9)
    sums = [labels[patients == c].sum() - 2 * ybar for c in range(6)]
    variance = 6 / 5 * sum(s * s for s in sums) / (12 * ybar * (1 - ybar)) ** 2
    assert result["intercept"]["se"] == pytest.approx(math.sqrt(variance), abs=1e-9)
    assert "sandwich" in result["intercept"]["method"]
    assert math.isnan(result["slope"]["value"]) and "every score is the same" in result["slope"]["method"]


def test_separated_scores_have_no_slope_and_say_why():
    labels = np.r_[np.zeros(5, int), np.ones(5, int)]
    result = stats.logistic_calibration(labels, np.r_[np.linspace(0.1, 0.4, 5), np.linspace(0.6, 0.9, 5)])
    assert math.isnan(result["slope"]["value"]) and "separate the outcomes" in result["slope"]["method"]
    assert math.isfinite(result["intercept"]["value"])


def test_decision_curve_by_hand():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05])
    curve = stats.decision_curve(labels, scores, thresholds=[0.1, 0.25, 0.5])
    # t = 0.1: 3 TP, 4 FP; t = 0.25: 3 TP, 2 FP; t = 0.5: 2 TP, 1 FP; NB = TP/8 - FP/8 * t/(1 - t).
    assert curve["net_benefit"] == pytest.approx([3 / 8 - 4 / 8 / 9, 3 / 8 - 2 / 8 / 3, 2 / 8 - 1 / 8])
    assert curve["treat_all"] == pytest.approx([3 / 8 - 5 / 8 / 9, 3 / 8 - 5 / 8 / 3, 3 / 8 - 5 / 8])
    assert curve["treat_none"] == [0.0, 0.0, 0.0] and curve["prevalence"] == pytest.approx(3 / 8)
    # At a stated prevalence of 10%: NB = Se pi - (1 - Sp)(1 - pi) t/(1 - t); at t = 0.5 Se = 2/3, 1 - Sp = 1/5.
    stated = stats.decision_curve(labels, scores, thresholds=[0.5], prevalence=0.1)
    assert stated["net_benefit"] == pytest.approx([2 / 3 * 0.1 - 1 / 5 * 0.9])
    assert stated["treat_all"] == pytest.approx([0.1 - 0.9])


def _clustered_frame() -> pd.DataFrame:
    rng = np.random.default_rng(12)
    patients = np.repeat(np.arange(30), 2)
    labels = (rng.random(60) < 0.4).astype(int)
    scores = np.clip(0.25 + 0.4 * labels + rng.normal(0, 0.2, 60), 0.01, 0.99)
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(60)], "patient_id": [f"P{p}" for p in patients],
                         "score": scores, "label": labels})


def test_report_has_sample_calibration_and_says_why_patient_level_is_omitted():
    frame = _clustered_frame()
    report = analyse_predictions(frame, 0.5, "given", prevalence=0.2, n_boot=100)
    calibration = report["calibration"]
    direct = stats.logistic_calibration(frame["label"].to_numpy(), frame["score"].to_numpy(),
                                        frame["patient_id"].to_numpy())
    assert calibration["level"] == "sample" and calibration["n_samples"] == 60
    for key in ("intercept", "slope", "oe_ratio"):
        assert calibration[key]["value"] == pytest.approx(direct[key]["value"])
        assert calibration[key]["ci95"] == pytest.approx(list(direct[key]["ci"]))
        assert calibration[key]["ci95"][1] > calibration[key]["ci95"][0]
    assert calibration["scaled_brier"]["value"] == pytest.approx(direct["scaled_brier"])
    assert "bootstrap" in calibration["scaled_brier"]["method"]
    patient = report["patient_level"]
    assert patient["calibration_omitted"].startswith("omitted") and "maximum" in patient["calibration_omitted"]
    assert patient["metrics"]["brier"]["value"] is None and patient["metrics"]["ece"]["value"] is None
    # The decision curve, at the test set's prevalence and at the stated one.
    decision = report["curves"]["decision"]
    assert len(decision["thresholds"]) == 99 and decision["stated"]["prevalence"] == 0.2
    direct_curve = stats.decision_curve(frame["label"].to_numpy(), frame["score"].to_numpy(), prevalence=0.2)
    assert decision["stated"]["net_benefit"] == pytest.approx(direct_curve["net_benefit"])
    assert "decision_curve" in report["methods"] and "Vickers" in report["methods"]["decision_curve"]
    # The document prints the calibration table.
    table = calibration_table(calibration)
    assert table is not None and [row[0].split(" (")[0] for row in table.rows] == [
        "Calibration intercept", "Calibration slope", "Observed / expected events", "Scaled Brier score"]
    assert any(block is not None and getattr(block, "caption", "").startswith("Calibration")
               for block in performance_section(report).blocks)


def test_bootstrap_engine_scaled_brier_is_the_weighted_formula():
    labels, probs = _two_scores()
    weights = np.random.default_rng(3).integers(0, 3, size=(5, labels.size))
    fast = stats.weighted_statistics(["scaled_brier"], labels, probs, weights)["scaled_brier"]
    for row, w in zip(fast, weights, strict=True):
        brier = np.average((probs - labels) ** 2, weights=w)
        prevalence = np.average(labels, weights=w)
        assert row == pytest.approx(1 - brier / (prevalence * (1 - prevalence)), abs=1e-12)
