"""Intervals near the boundary: no interval of width zero anywhere in a report.

Newcombe's AUC interval is checked against the roots of its polynomial form, BCa against Efron &
Tibshirani's formulas, and every interval of reports on perfect, all-wrong and one-error fixtures
is swept for width; so are comparisons of two models that rank alike (the variance of the AUC
difference is 0) and multi-class reports of perfect and one-class models.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from numpy.polynomial import Polynomial
from scipy.stats import norm

from medrec.report import stats
from medrec.report.analysis import analyse_predictions
from medrec.report.document import fmt_ci

Z95 = 1.959963984540054


def _newcombe_reference(auc: float, m: int, n: int) -> tuple[float, float]:
    """Newcombe (2006, method 5): the real roots in [0, 1] of
    mn (A - t)^2 (2 - t)(1 + t) - z^2 t (1 - t) [(2 - t)(1 + t) + f (1 - t)(1 + t) + f t (2 - t)] = 0,
    f = (m + n)/2 - 1 (the Hanley-McNeil variance with N* for both sizes, cleared of denominators)."""
    t = Polynomial([0.0, 1.0])
    f = (m + n) / 2 - 1
    bracket = (2 - t) * (1 + t) + f * (1 - t) * (1 + t) + f * t * (2 - t)
    poly = m * n * (auc - t) ** 2 * (2 - t) * (1 + t) - Z95**2 * t * (1 - t) * bracket
    roots = sorted(r.real for r in poly.roots() if abs(r.imag) < 1e-9 and -1e-9 <= r.real <= 1 + 1e-9)
    below = [r for r in roots if r <= auc + 1e-12]
    above = [r for r in roots if r >= auc - 1e-12]
    # At the edge the estimate itself is a root; the bound is the other one.
    lower = 0.0 if auc == 0 else max(r for r in below if r < auc - 1e-9)
    upper = 1.0 if auc == 1 else min(r for r in above if r > auc + 1e-9)
    return lower, upper


@pytest.mark.parametrize(("auc", "m", "n"), [(1.0, 4, 5), (0.0, 4, 5), (0.95, 4, 5), (0.7, 20, 30), (1.0, 9, 16)])
def test_newcombe_interval_matches_its_polynomial(auc, m, n):
    assert stats.newcombe_auc_ci(auc, m, n) == pytest.approx(_newcombe_reference(auc, m, n), abs=1e-9)


def test_perfect_auc_on_four_against_five_has_a_low_lower_bound():
    labels = np.r_[np.zeros(5, int), np.ones(4, int)]
    scores = np.r_[0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9]
    result = stats.auc_ci(labels, scores)
    assert result.value == 1.0 and result.boundary
    assert result.ci[0] < 0.75 and result.ci[1] == 1.0
    assert "Newcombe (2006" in result.method and "perfect separation" in result.method
    # The old Wald interval on the AUC scale was 1.000-1.000.
    assert stats.delong_ci(labels, scores)[1:] == (1.0, 1.0)


def test_logit_interval_stays_inside_zero_one_and_is_asymmetric():
    labels = np.r_[np.zeros(5, int), np.ones(4, int)]
    scores = np.r_[0.1, 0.2, 0.3, 0.4, 0.75, 0.6, 0.7, 0.8, 0.9]  # one reversed pair: AUC 0.9
    result = stats.auc_ci(labels, scores)
    auc, variance = stats.delong_auc_variance(labels, scores)
    logit = math.log(auc / (1 - auc))
    half = Z95 * math.sqrt(variance) / (auc * (1 - auc))
    assert result.ci == pytest.approx((1 / (1 + math.exp(-(logit - half))), 1 / (1 + math.exp(-(logit + half)))))
    assert 0 < result.ci[0] < auc < result.ci[1] < 1
    assert auc - result.ci[0] > result.ci[1] - auc


def _bca_reference(point, replicates, jackknife, level=0.95):
    """Efron & Tibshirani (1993), equations 14.14-14.15, ties counted one half in z0."""
    z0 = norm.ppf(np.mean(replicates < point) + 0.5 * np.mean(replicates == point))
    d = np.mean(jackknife) - jackknife
    a = np.sum(d**3) / (6 * np.sum(d**2) ** 1.5)
    alpha = 1 - level
    out = []
    for z in (norm.ppf(alpha / 2), norm.ppf(1 - alpha / 2)):
        out.append(np.quantile(replicates, norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))))
    return tuple(out)


def test_bca_matches_efron_and_tibshirani():
    rng = np.random.default_rng(4)
    data = rng.exponential(size=40)
    replicates = np.array([rng.choice(data, data.size).mean() for _ in range(4000)])
    jackknife = np.array([np.delete(data, i).mean() for i in range(data.size)])
    assert stats.bca_interval(data.mean(), replicates, jackknife) == pytest.approx(
        _bca_reference(data.mean(), replicates, jackknife), abs=1e-12)
    # A skewed statistic: BCa moves both bounds up relative to the percentile interval.
    percentile = np.quantile(replicates, [0.025, 0.975])
    lower, upper = stats.bca_interval(data.mean(), replicates, jackknife)
    assert lower > percentile[0] and upper > percentile[1]
    assert stats.bca_interval(1.0, np.ones(100), np.ones(10)) is None  # every replicate equal: undefined


def _predictions(kind: str, clustered: bool = False) -> pd.DataFrame:
    """15 positives and 16 negatives (31 samples): perfect, all wrong, or one false negative."""
    positives, negatives = np.linspace(0.6, 0.95, 15), np.linspace(0.05, 0.4, 16)
    if kind == "all-wrong":
        positives, negatives = 1 - positives, 1 - negatives
    if kind == "one-error":
        positives = positives.copy()
        positives[0] = 0.3
    scores = np.r_[positives, negatives]
    n = scores.size
    return pd.DataFrame({
        "sample_id": [f"s{i:02d}" for i in range(n)],
        "patient_id": [f"P{(i // 2) if clustered else i:02d}" for i in range(n)],
        "score": scores,
        "label": ["tumor"] * 15 + ["normal"] * 16,
        "manufacturer": ["GE" if i % 3 else "Siemens" for i in range(n)],
    })


def _intervals(node, path=""):
    """Every (path, lower, upper, value) of a METRIC-like dict with a filled ci95, anywhere in the report."""
    if isinstance(node, dict):
        ci = node.get("ci95")
        if isinstance(ci, list) and len(ci) == 2 and ci[0] is not None and ci[1] is not None:
            yield path, ci[0], ci[1], node.get("value")
        for key, value in node.items():
            yield from _intervals(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _intervals(value, f"{path}[{index}]")


@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("kind", ["perfect", "all-wrong", "one-error"])
def test_no_interval_of_width_zero_in_any_report(kind, clustered):
    report = analyse_predictions(_predictions(kind, clustered), 0.5, "given", prevalence=0.1, n_boot=200, seed=1)
    found = list(_intervals(report))
    assert len(found) > 25  # metrics, patient level, subgroups, predictive values, calibration
    degenerate = [(path, lower, upper) for path, lower, upper, _ in found if not upper > lower]
    assert not degenerate, degenerate
    # Analytic, BCa and posterior intervals hold their estimate (a percentile bootstrap interval need not:
    # the bootstrap distribution of average precision is biased in small samples).
    for path, lower, upper, value in found:
        if value is not None and not path.endswith(("pr_auc", "brier", "ece")) and ".calibration" not in path:
            assert lower <= value <= upper, (path, lower, value, upper)
    # The subgroups hold about 10 samples each; a perfect AUC there keeps a lower bound well below 1.
    if kind == "perfect":
        for group in report["subgroups"]["manufacturer"]:
            assert group["metrics"]["auc"]["ci95"][0] < 0.9


def _compare_scores(kind: str, first: pd.DataFrame) -> pd.DataFrame:
    """A second model on the same samples: the same scores, a monotone transform, or a constant."""
    scores = {"identical": first["score"], "monotone": first["score"] ** 3,
              "constant": pd.Series(0.5, index=first.index)}[kind]
    return pd.DataFrame({"sample_id": first["sample_id"], "score": scores})


@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("kind", ["identical", "monotone", "constant"])
def test_no_interval_of_width_zero_in_a_comparison(kind, clustered):
    # The perfect model against itself, a monotone transform of itself (the same ranking: the DeLong /
    # Obuchowski variance of the difference is 0), and a constant model (AUC 0.5; the difference 0.5 on
    # every positive-negative pair, so again variance 0).
    first = _predictions("perfect", clustered)
    report = analyse_predictions(first, 0.5, "given", compare=_compare_scores(kind, first), n_boot=200, seed=1)
    degenerate = [(path, lower, upper) for path, lower, upper, _ in _intervals(report) if not upper > lower]
    assert not degenerate, degenerate
    auc = report["comparison"]["auc"]
    # N disjoint pairs of distinct units, one with a positive and one with a negative sample: 15 positives
    # against 16 negatives; clustered, patients P00-P07 hold positives and P07-P15 negatives (16 in all), so 8.
    n_pairs = 8 if clustered else 15
    bound = 1 - 0.025 ** (1 / n_pairs)  # Clopper-Pearson 97.5% upper bound for 0 events in n_pairs trials
    d = 0.5 if kind == "constant" else 0.0
    assert auc["difference"] == d and auc["se"] == 0.0
    assert auc["ci95"] == pytest.approx([d - bound * (1 + d), d + bound * (1 - d)], abs=1e-12)
    assert auc["ci95"][0] < d < auc["ci95"][1]
    assert auc["p_value"] == (1.0 if d == 0 else pytest.approx(2 * 1.5 ** -n_pairs, rel=1e-12))
    assert ("Obuchowski" if clustered else "DeLong") in auc["method"] and "Clopper-Pearson" in auc["method"]
    assert "comparison" in report["methods"] and "Clopper-Pearson" in report["methods"]["comparison"]


def test_paired_difference_with_zero_variance_but_discordant_pairs_uses_the_bootstrap():
    # Three positives, three negatives: every placement value differs between the models by the same
    # -1/3, so the DeLong variance of the difference is 0, yet the pairs' differences vary
    # (psi_a - psi_b = [[-1/2, -1/2, 0], [0, 0, -1], [-1/2, -1/2, 0]]): the paired bootstrap has a width.
    labels = np.array([1, 1, 1, 0, 0, 0])
    first, second = np.array([0.0, 1, 0, 0, 0, 3]), np.array([1.0, 3, 1, 0, 0, 2])
    result = stats.delong_paired_test(labels, first, second, n_boot=500, seed=0)
    assert result["se"] == 0.0 and result["difference"] == pytest.approx(-1 / 3)
    lower, upper = result["ci95"]
    assert lower <= result["difference"] <= upper and upper - lower > 0.1
    assert math.isnan(result["p_value"]) and "bootstrap" in result["ci_method"]
    assert "not computed" in result["ci_method"]


def test_paired_difference_keeps_the_wald_interval_where_it_has_a_variance():
    frame = _predictions("one-error")
    labels = frame["label"].eq("tumor").astype(int).to_numpy()
    result = stats.delong_paired_test(labels, frame["score"], np.linspace(0, 1, labels.size))
    assert result["se"] > 0 and result["ci_method"].startswith("Wald")
    assert result["ci95"] == pytest.approx([result["difference"] - Z95 * result["se"],
                                            result["difference"] + Z95 * result["se"]])


def _multiclass_frame(kind: str) -> pd.DataFrame:
    """Three classes of five samples: all right, or every sample called the last class; "clustered":
    all right with two studies per patient (six per class)."""
    classes = ["benign", "glioma", "meningioma"]
    truth = np.repeat(np.arange(9) % 3, 2) if kind == "perfect-clustered" else np.arange(15) % 3
    called = np.full(truth.size, 2) if kind == "one-class" else truth
    probs = np.eye(3)[called] * 0.8 + 0.1
    return pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(truth.size)],
        "patient_id": [f"p{i // 2 if kind == 'perfect-clustered' else i}" for i in range(truth.size)],
        **{f"score_{name}": probs[:, k] for k, name in enumerate(classes)},
        "label": [classes[k] for k in truth]})


@pytest.mark.parametrize("kind", ["perfect", "one-class", "perfect-clustered"])
def test_no_interval_of_width_zero_in_a_multiclass_report(kind):
    report = analyse_predictions(_multiclass_frame(kind), None, "", n_boot=200, seed=1)
    found = list(_intervals(report))
    degenerate = [(path, lower, upper) for path, lower, upper, _ in found if not upper > lower]
    assert not degenerate, degenerate
    for name in ("sensitivity", "specificity", "ppv", "npv", "balanced_accuracy"):
        metric = report["metrics"][name]
        if metric["value"] is None:  # PPV of a class never predicted (one-class model)
            continue
        assert metric["ci95"][0] <= metric["value"] <= metric["ci95"][1], (name, metric)
        assert "MOVER" in metric["method"] and "union" not in metric["method"], name


def test_multiclass_perfect_model_keeps_its_widths():
    classes = ["benign", "glioma", "meningioma"]
    rng = np.random.default_rng(0)
    truth = np.arange(18) % 3
    probs = np.full((18, 3), 0.1)
    probs[np.arange(18), truth] = 0.8
    probs += rng.uniform(0, 0.05, probs.shape)
    probs /= probs.sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(18)], "patient_id": [f"p{i // 2}" for i in range(18)],
                          **{f"score_{name}": probs[:, k] for k, name in enumerate(classes)},
                          "label": [classes[k] for k in truth]})
    report = analyse_predictions(frame, None, "", n_boot=200)
    degenerate = [(path, lower, upper) for path, lower, upper, _ in _intervals(report) if not upper > lower]
    assert not degenerate, degenerate
    assert "posterior" in report["metrics"]["f1"]["method"]


def test_one_error_in_31_gives_a_bca_interval_with_width():
    report = analyse_predictions(_predictions("one-error"), 0.5, "given", n_boot=500, seed=2)
    for name in ("f1", "mcc", "balanced_accuracy"):
        metric = report["metrics"][name]
        lower, upper = metric["ci95"]
        assert lower < metric["value"] <= upper and upper - lower > 0.02, name
        assert "BCa" in metric["method"], name


def test_no_error_falls_back_to_the_posterior_and_says_so():
    report = analyse_predictions(_predictions("perfect"), 0.5, "given", n_boot=200)
    for name in ("f1", "mcc", "balanced_accuracy"):
        metric = report["metrics"][name]
        assert metric["value"] == 1.0 and metric["ci95"][1] == 1.0 and metric["ci95"][0] < 0.97, name
        assert "Jeffreys Dirichlet" in metric["method"], name
    # The posterior by hand: F1 = 2 p_tp / (2 p_tp + p_fp + p_fn) under Dirichlet(15.5, 0.5, 16.5, 0.5).
    draws = np.random.default_rng(99).dirichlet([15.5, 0.5, 16.5, 0.5], size=200_000)
    f1 = 2 * draws[:, 0] / (2 * draws[:, 0] + draws[:, 1] + draws[:, 3])
    assert report["metrics"]["f1"]["ci95"][0] == pytest.approx(np.quantile(f1, 0.025), abs=0.005)


def test_interval_bounds_that_differ_never_print_alike():
    assert fmt_ci([0.9996, 1.0]) == "0.9996\u20131.0000"
    assert fmt_ci([0.99996, 1.0], "pct") == "99.996\u2013100.000%"
    assert fmt_ci([0.80, 0.92], "pct") == "80.0\u201392.0%"
