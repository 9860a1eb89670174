"""Statistics for clinical validation reports: pure functions on numpy arrays.

What lives here and why it is hand-written:

* :func:`proportion_ci`: Wilson score and Clopper-Pearson intervals (scipy gives the beta / normal
  quantiles; the Wald interval is deliberately absent, it fails at 0/n and n/n).
* :func:`delong_auc_variance`, :func:`delong_ci`, :func:`delong_paired_test`: the fast DeLong
  algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21:1389), O(n log n) through midranks.
  Neither scipy nor scikit-learn offers DeLong.
* :func:`mcnemar`, :func:`mcnemar_exact`, :func:`mcnemar_test`: McNemar's test on discordant pairs.
* :func:`brier_score`, :func:`expected_calibration_error`, :func:`reliability_curve`.
* :func:`adjusted_ppv_npv`: predictive values at another prevalence (Bayes' rule).
* :func:`mean_proportion_ci`: the interval of a macro average of proportions (multi-class
  sensitivity, ...): neither scipy nor statsmodels has one, and a percentile bootstrap collapses to
  a point when every class's proportion is 0 or 1.
* :func:`cluster_bootstrap`: a patient-clustered, outcome-stratified percentile bootstrap that
  evaluates all replicates at once from one integer weight matrix. scikit-learn's metrics accept
  ``sample_weight`` but would need one Python call per replicate, far too slow for 2000 replicates of
  100,000 predictions.
* Point metrics (:func:`binary_point_metrics`): scikit-learn where it has the metric
  (``roc_auc_score``, ``average_precision_score``), plain counts otherwise.

Conventions: ``labels`` are 0/1 (1 = positive, the tumor class), ``scores`` are probabilities of the
positive class, ``predictions`` are 0/1. A metric that is undefined on the data (0/0) is ``nan``.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "BOOTSTRAP_STATISTICS",
    "BootstrapResult",
    "adjusted_ppv_npv",
    "binary_point_metrics",
    "bootstrap_cluster_weights",
    "bootstrap_method_text",
    "brier_score",
    "cluster_bootstrap",
    "cluster_bootstrap_multiclass",
    "cluster_bootstrap_shared",
    "confusion_counts",
    "delong_auc_variance",
    "delong_ci",
    "delong_paired_test",
    "expected_calibration_error",
    "mcnemar",
    "mcnemar_exact",
    "mcnemar_table",
    "mcnemar_test",
    "mean_proportion_ci",
    "metrics_from_counts",
    "midranks",
    "proportion_ci",
    "reliability_curve",
    "weighted_statistics",
]

PROPORTION_METHODS: tuple[str, ...] = ("wilson", "clopper-pearson")

# Statistics that cluster_bootstrap evaluates vectorised over replicates.
BOOTSTRAP_STATISTICS: tuple[str, ...] = (
    "sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy", "f1", "mcc",
    "auc", "pr_auc", "brier", "ece",
)
_SCORE_STATISTICS = frozenset({"auc", "pr_auc", "brier", "ece"})
_PREDICTION_STATISTICS = frozenset(BOOTSTRAP_STATISTICS) - _SCORE_STATISTICS

# Exact binomial McNemar below this many discordant pairs (the chi-square approximation is poor there).
MCNEMAR_EXACT_BELOW = 25


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    return float(sps.norm.ppf(0.5 + level / 2.0))


# --------------------------------------------------------------------------------------------------
# Proportions
# --------------------------------------------------------------------------------------------------


def proportion_ci(successes: int, total: int, method: str = "wilson", level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of a binomial proportion.

    Args:
        successes: number of successes (0 <= successes <= total).
        total: number of trials; 0 gives ``(nan, nan)``.
        method: ``"wilson"`` (score interval, the default) or ``"clopper-pearson"`` (exact, from beta
            quantiles; 0 and 1 at the edges).
        level: confidence level, e.g. 0.95.

    Returns:
        ``(lower, upper)``, both within [0, 1]. Wilson's lower bound is exactly 0 for 0/n and its
        upper bound exactly 1 for n/n.

    Raises:
        ValueError: unknown method, or counts out of range.
    """
    x, n = int(successes), int(total)
    if n < 0 or x < 0 or x > n:
        raise ValueError(f"proportion needs 0 <= successes <= total, got {x}/{n}")
    if method not in PROPORTION_METHODS:
        raise ValueError(f"unknown proportion CI method {method!r}; use one of {', '.join(PROPORTION_METHODS)}")
    if n == 0:
        return (math.nan, math.nan)
    if method == "wilson":
        z = _z(level)
        z2 = z * z
        centre = (x + z2 / 2.0) / (n + z2)
        half = z / (n + z2) * math.sqrt(x * (n - x) / n + z2 / 4.0)
        lower = 0.0 if x == 0 else max(0.0, centre - half)
        upper = 1.0 if x == n else min(1.0, centre + half)
        return (lower, upper)
    alpha = 1.0 - level
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    lower = 0.0 if x == 0 else float(sps.beta.ppf(alpha / 2.0, x, n - x + 1))
    upper = 1.0 if x == n else float(sps.beta.ppf(1.0 - alpha / 2.0, x + 1, n - x))
    return (lower, upper)


def mean_proportion_ci(successes: Sequence[int], totals: Sequence[int], level: float = 0.95,
                       bins: int = 1000) -> tuple[float, float]:
    """Interval of the unweighted mean of several binomial proportions (a macro average over classes).

    Each proportion ``x_k / n_k`` gets its Jeffreys distribution ``Beta(x_k + 1/2, n_k - x_k + 1/2)``;
    the distribution of their mean is the convolution of these, each discretised into ``bins`` equal
    bins of [0, 1] (so the bounds are exact to about ``1 / bins``), and the interval is its
    equal-tailed quantiles. For one proportion this is the Jeffreys interval (Brown, Cai & DasGupta
    2001, Statistical Science 16:101), with its edge rule: the lower bound is 0 when every ``x_k`` is
    0 and the upper bound 1 when every ``x_k`` is ``n_k``. Brodersen et al. (2010, ICPR) derive the
    interval of balanced accuracy in the same way. Unlike a percentile bootstrap it keeps a width when
    every proportion is 0 or 1 (a model that always predicts one class, or a perfect one).

    Args:
        successes: ``x_k`` per proportion.
        totals: ``n_k`` per proportion (the proportions are taken as independent, as the
            sensitivities of disjoint classes are).
        level: confidence level.
        bins: grid resolution per proportion.

    Returns:
        ``(lower, upper)`` within [0, 1]; ``(nan, nan)`` when there is no proportion or some ``n_k`` is 0.

    Raises:
        ValueError: counts out of range, mismatched lengths or a level outside (0, 1).
    """
    from scipy.signal import fftconvolve

    x = np.asarray(successes, dtype=np.int64)
    n = np.asarray(totals, dtype=np.int64)
    if x.shape != n.shape or x.ndim != 1:
        raise ValueError(f"need one success count per total, got {x.shape} and {n.shape}")
    if np.any(x < 0) or np.any(x > n):
        raise ValueError(f"proportions need 0 <= successes <= total, got {x.tolist()} of {n.tolist()}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    if x.size == 0 or np.any(n == 0):
        return (math.nan, math.nan)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = np.ones(1)
    for successes_k, total_k in zip(x, n, strict=True):
        mass = np.diff(sps.beta.cdf(edges, successes_k + 0.5, total_k - successes_k + 0.5))
        total = np.clip(fftconvolve(total, mass), 0.0, None)
    cumulative = np.cumsum(total) / total.sum()
    alpha = 1.0 - level
    k = x.size
    # Index j of the summed grid stands for the sum of the K bin centres: (j + K / 2) / bins.
    lower_index = int(np.searchsorted(cumulative, alpha / 2.0))
    upper_index = int(np.searchsorted(cumulative, 1.0 - alpha / 2.0))
    lower = 0.0 if np.all(x == 0) else min(1.0, (lower_index + k / 2.0) / bins / k)
    upper = 1.0 if np.all(x == n) else min(1.0, (upper_index + k / 2.0) / bins / k)
    return (lower, upper)


def adjusted_ppv_npv(sensitivity: float, specificity: float, prevalence: float) -> tuple[float, float]:
    """Positive and negative predictive values at a given prevalence (Bayes' rule).

    ``ppv = se*p / (se*p + (1-sp)*(1-p))``, ``npv = sp*(1-p) / (sp*(1-p) + (1-se)*p)``.

    Returns:
        ``(ppv, npv)``; ``nan`` where the denominator is 0.
    """
    se, sp, p = float(sensitivity), float(specificity), float(prevalence)
    for name, value in (("sensitivity", se), ("specificity", sp), ("prevalence", p)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    true_pos, false_pos = se * p, (1.0 - sp) * (1.0 - p)
    true_neg, false_neg = sp * (1.0 - p), (1.0 - se) * p
    ppv = true_pos / (true_pos + false_pos) if true_pos + false_pos > 0 else math.nan
    npv = true_neg / (true_neg + false_neg) if true_neg + false_neg > 0 else math.nan
    return (ppv, npv)


# --------------------------------------------------------------------------------------------------
# Point metrics
# --------------------------------------------------------------------------------------------------


def _binary_array(values: np.ndarray | Sequence, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and not np.isin(array, (0, 1, True, False)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return array.astype(np.int8)


def _score_array(values: np.ndarray | Sequence, name: str = "scores") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite numbers (found NaN or infinity)")
    return array


def confusion_counts(labels: np.ndarray, predictions: np.ndarray) -> dict[str, int]:
    """``{"tp", "fp", "tn", "fn"}`` for 0/1 labels and predictions."""
    y = _binary_array(labels, "labels")
    p = _binary_array(predictions, "predictions")
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {y.size} vs {p.size}")
    return {
        "tp": int(np.sum((y == 1) & (p == 1))),
        "fp": int(np.sum((y == 0) & (p == 1))),
        "tn": int(np.sum((y == 0) & (p == 0))),
        "fn": int(np.sum((y == 1) & (p == 0))),
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def metrics_from_counts(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray,
                        fn: np.ndarray) -> dict[str, np.ndarray]:
    """Confusion-count metrics, vectorised. Undefined values (0/0) are nan.

    F1 and MCC follow scikit-learn's conventions where only one side is degenerate: F1 is nan only
    when there are neither positives nor positive predictions; MCC is 0 when a marginal is empty
    (``matthews_corrcoef`` returns 0 there).
    """
    tp, fp, tn, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn))
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    marginals = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    mcc = np.zeros(np.broadcast(tp, fp).shape)
    np.divide(tp * tn - fp * fn, np.sqrt(marginals), out=mcc, where=marginals > 0)
    total = tp + fp + tn + fn
    mcc = np.where(total > 0, mcc, np.nan)
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "accuracy": _ratio(tp + tn, total),
        "balanced_accuracy": (sensitivity + specificity) / 2.0,
        "f1": _ratio(2.0 * tp, 2.0 * tp + fp + fn),
        "mcc": mcc,
    }


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean squared difference between predicted probability and the 0/1 outcome."""
    y = _binary_array(labels, "labels")
    p = _score_array(probs, "probs")
    if y.size == 0:
        return math.nan
    return float(np.mean((p - y) ** 2))


def _bin_index(probs: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if probs.size and (probs.min() < 0.0 or probs.max() > 1.0):
        raise ValueError("probabilities must lie in [0, 1] for calibration bins")
    # Edge k is k / n_bins rounded once (so 0.3 is the edge 3/10, not 0.30000000000000004);
    # a value equal to an inner edge belongs to the bin above it; 1.0 belongs to the last bin.
    inner_edges = np.arange(1, n_bins) / n_bins
    return np.searchsorted(inner_edges, probs, side="right")


def reliability_curve(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Reliability diagram data with equal-width bins.

    Bins are ``[0, 1/n), [1/n, 2/n), ..., [(n-1)/n, 1]`` (the last one closed), with edge ``k/n``
    computed as one correctly-rounded division.

    Returns:
        dict of arrays, one entry per bin: ``bin_lower``, ``bin_upper``, ``mean_predicted``,
        ``observed_fraction`` (nan for an empty bin), ``count``.
    """
    y = _binary_array(labels, "labels")
    p = _score_array(probs, "probs")
    index = _bin_index(p, n_bins)
    count = np.bincount(index, minlength=n_bins)
    sum_pred = np.bincount(index, weights=p, minlength=n_bins)
    sum_obs = np.bincount(index, weights=y.astype(np.float64), minlength=n_bins)
    return {
        "bin_lower": np.arange(n_bins) / n_bins,
        "bin_upper": np.arange(1, n_bins + 1) / n_bins,
        "mean_predicted": _ratio(sum_pred, count),
        "observed_fraction": _ratio(sum_obs, count),
        "count": count,
    }


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: ``sum_b (n_b / N) * |mean_pred_b - observed_b|``.

    Equal-width bins as in :func:`reliability_curve`; empty bins contribute nothing.
    """
    y = _binary_array(labels, "labels")
    p = _score_array(probs, "probs")
    if y.size == 0:
        return math.nan
    index = _bin_index(p, n_bins)
    gap = np.bincount(index, weights=p - y, minlength=n_bins)
    return float(np.abs(gap).sum() / y.size)


def binary_point_metrics(labels: np.ndarray, scores: np.ndarray, predictions: np.ndarray,
                         n_bins: int = 10) -> dict[str, float]:
    """Point estimates of every binary metric the report shows.

    AUC and PR-AUC come from scikit-learn (``roc_auc_score``, ``average_precision_score``) and are
    nan when only one class is present.
    """
    y = _binary_array(labels, "labels")
    s = _score_array(scores)
    counts = confusion_counts(y, predictions)
    values = {name: float(v) for name, v in metrics_from_counts(**counts).items()}
    both_classes = 0 < int(y.sum()) < y.size
    values["auc"] = float(roc_auc_score(y, s)) if both_classes else math.nan
    values["pr_auc"] = float(average_precision_score(y, s)) if both_classes else math.nan
    values["brier"] = brier_score(y, s)
    values["ece"] = expected_calibration_error(y, s, n_bins)
    return values


# --------------------------------------------------------------------------------------------------
# DeLong
# --------------------------------------------------------------------------------------------------


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given the mean of the ranks they span (O(n log n))."""
    return sps.rankdata(np.asarray(values, dtype=np.float64), method="average")


def _delong_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and placement values for one or more score vectors (rows of ``scores``).

    Sun & Xu (2014): with midranks ``Tz`` over all samples, ``Tx`` over positives only and ``Ty``
    over negatives only, the placement value of positive i is ``V10_i = (Tz_i - Tx_i) / n`` (the
    fraction of negatives below it, ties counted 1/2) and of negative j is
    ``V01_j = 1 - (Tz_j - Ty_j) / m``.

    Returns:
        ``(auc (k,), v10 (k, m), v01 (k, n))``.
    """
    y = _binary_array(labels, "labels")
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.size:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.shape[1]}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite numbers (found NaN or infinity)")
    positive = y == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise ValueError(f"DeLong needs both classes; got {m} positives and {n} negatives")
    tz = np.apply_along_axis(midranks, 1, s)
    tx = np.apply_along_axis(midranks, 1, s[:, positive])
    ty = np.apply_along_axis(midranks, 1, s[:, ~positive])
    v10 = (tz[:, positive] - tx) / n
    v01 = 1.0 - (tz[:, ~positive] - ty) / m
    auc = (tz[:, positive].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    return auc, v10, v01


def _delong_covariance(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    m, n = v10.shape[1], v01.shape[1]
    # np.cov with ddof=1 as in DeLong et al. (1988); one sample on a side gives no spread there.
    s10 = np.atleast_2d(np.cov(v10, ddof=1)) if m > 1 else np.zeros((v10.shape[0],) * 2)
    s01 = np.atleast_2d(np.cov(v01, ddof=1)) if n > 1 else np.zeros((v01.shape[0],) * 2)
    return s10 / m + s01 / n


def delong_auc_variance(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """ROC AUC and its DeLong variance, by the fast midrank algorithm of Sun & Xu (2014).

    Raises:
        ValueError: only one class present, or lengths differ.
    """
    auc, v10, v01 = _delong_components(labels, scores)
    return float(auc[0]), float(_delong_covariance(v10, v01)[0, 0])


DELONG_METHOD = "DeLong (Sun & Xu 2014), normal approximation on the AUC scale, clipped to [0, 1]"


def delong_ci(labels: np.ndarray, scores: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """AUC with a DeLong confidence interval: ``auc +- z * sqrt(var)`` clipped to [0, 1].

    Returns:
        ``(auc, lower, upper)``.
    """
    auc, variance = delong_auc_variance(labels, scores)
    half = _z(level) * math.sqrt(max(variance, 0.0))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def delong_paired_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                       level: float = 0.95) -> dict[str, float]:
    """DeLong test of two correlated AUCs (both models scored on the same samples).

    Returns:
        dict with ``auc_a, auc_b, difference`` (a - b), ``se`` of the difference (from the 2x2
        DeLong covariance), ``z``, two-sided ``p_value`` and ``ci95`` ``[lo, hi]`` of the difference
        (at ``level``; the key keeps its name).
    """
    a = _score_array(scores_a, "scores_a")
    b = _score_array(scores_b, "scores_b")
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b differ in length: {a.size} vs {b.size}")
    auc, v10, v01 = _delong_components(labels, np.vstack([a, b]))
    cov = _delong_covariance(v10, v01)
    difference = float(auc[0] - auc[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = math.sqrt(max(variance, 0.0))
    if se > 0:
        z = difference / se
        p_value = float(2.0 * sps.norm.sf(abs(z)))
    else:  # identical rankings: no evidence of a difference
        z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
        p_value = 1.0 if difference == 0 else 0.0
    half = _z(level) * se
    return {
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "difference": difference,
        "se": se,
        "z": float(z),
        "p_value": p_value,
        "ci95": [difference - half, difference + half],
    }


# --------------------------------------------------------------------------------------------------
# McNemar
# --------------------------------------------------------------------------------------------------


def mcnemar(b: int, c: int, correction: bool = True) -> tuple[float, float]:
    """McNemar's chi-square test (1 degree of freedom) on the discordant counts b and c.

    ``chi2 = (|b - c| - 1)^2 / (b + c)`` with Edwards' continuity correction, ``(b - c)^2 / (b + c)``
    without. With no discordant pair there is no evidence of a difference: ``(0.0, 1.0)``.

    Returns:
        ``(chi2, p_value)``.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return (0.0, 1.0)
    difference = abs(b - c)
    if correction:
        difference = max(difference - 1, 0)
    chi2 = difference * difference / (b + c)
    return (float(chi2), float(sps.chi2.sf(chi2, 1)))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) McNemar test: two-sided p of ``min(b, c)`` under Binomial(b + c, 1/2)."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * sps.binom.cdf(min(b, c), b + c, 0.5)))


def mcnemar_table(table: Sequence[Sequence[int]] | np.ndarray, correction: bool = True) -> tuple[float, float]:
    """McNemar's chi-square test on a 2x2 paired table ``[[a, b], [c, d]]`` (uses b and c)."""
    array = np.asarray(table)
    if array.shape != (2, 2):
        raise ValueError(f"McNemar needs a 2x2 table, got shape {array.shape}")
    return mcnemar(int(array[0, 1]), int(array[1, 0]), correction=correction)


def mcnemar_test(b: int, c: int, correction: bool = True) -> dict[str, float | int | str]:
    """McNemar's test, exact binomial when ``b + c < 25``, corrected chi-square otherwise.

    Returns:
        dict with ``b, c, statistic`` (chi2, or None for the exact test), ``p_value`` and ``method``.
    """
    if int(b) + int(c) < MCNEMAR_EXACT_BELOW:
        return {"b": int(b), "c": int(c), "statistic": None, "p_value": mcnemar_exact(b, c),
                "method": "exact binomial McNemar test (b + c < 25)"}
    chi2, p_value = mcnemar(b, c, correction=correction)
    label = "with continuity correction" if correction else "without continuity correction"
    return {"b": int(b), "c": int(c), "statistic": chi2, "p_value": p_value,
            "method": f"McNemar chi-square test {label}"}


# --------------------------------------------------------------------------------------------------
# Cluster bootstrap
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    """A percentile bootstrap interval.

    Attributes:
        value: the statistic on the original data.
        ci: ``(lower, upper)`` percentiles of the replicates (nan when no replicate is defined).
        se: standard deviation of the defined replicates.
        n_boot: replicates drawn; n_valid: replicates where the statistic is defined.
        method: one line for the report.
        replicates: the replicate values (nan where undefined).
    """

    value: float
    ci: tuple[float, float]
    se: float
    n_boot: int
    n_valid: int
    method: str
    replicates: np.ndarray = field(repr=False)


def _cluster_codes(clusters: np.ndarray | Sequence | None, n_samples: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n_samples), n_samples
    array = np.asarray(clusters)
    if array.shape != (n_samples,):
        raise ValueError(f"clusters must have one entry per sample ({n_samples}), got shape {array.shape}")
    _, codes = np.unique(array.astype(str) if array.dtype == object else array, return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1 if codes.size else 0


def _cluster_strata(codes: np.ndarray, n_clusters: int, labels: np.ndarray | None,
                    stratify: bool) -> np.ndarray:
    """Stratum per cluster: 1 if the cluster holds any positive, else 0 (all 0 without stratify)."""
    if not stratify or labels is None:
        return np.zeros(n_clusters, dtype=np.int64)
    labels = np.asarray(labels)
    if labels.ndim == 1 and np.isin(labels, (0, 1)).all():
        any_positive = np.zeros(n_clusters, dtype=bool)
        any_positive[codes[labels == 1]] = True
        return any_positive.astype(np.int64)
    # Multi-class: stratum = the set of classes a cluster holds.
    classes, label_codes = np.unique(labels, return_inverse=True)
    membership = np.zeros((n_clusters, classes.size), dtype=bool)
    membership[codes, label_codes.reshape(-1)] = True
    _, strata = np.unique(membership, axis=0, return_inverse=True)
    return strata.reshape(-1)


def _default_chunk(n_boot: int, width: int) -> int:
    # About 12 million entries per (replicates x width) block (~50 MB per int32 array, ~100 MB per
    # float64 one): large enough that per-block overheads vanish, small enough to bound memory.
    return int(max(1, min(n_boot, 12_000_000 // max(width, 1))))


def _prepare_clusters(clusters: np.ndarray | Sequence | None, labels: np.ndarray | None, n_samples: int,
                      stratify: bool) -> tuple[np.ndarray, int, np.ndarray]:
    """Cluster index per sample, number of clusters and stratum per cluster.

    Clusters are numbered stratum by stratum, so that each stratum is a contiguous range of columns
    of the weight matrix.
    """
    codes, n_clusters = _cluster_codes(clusters, n_samples)
    strata = _cluster_strata(codes, n_clusters, labels, stratify)
    order = np.argsort(strata, kind="stable")
    renumber = np.empty(n_clusters, dtype=np.int64)
    renumber[order] = np.arange(n_clusters)
    return renumber[codes], n_clusters, strata[order]


# Replicates per random stream: replicates [16 b, 16 b + 16) come from the b-th child of
# SeedSequence(seed). Chunks are whole multiples of it, so the weights depend only on the seed (never
# on the chunk size or the threads), and chunks can be drawn in any order, in parallel.
_DRAW_BLOCK = 16


def _weight_makers(strata: np.ndarray, n_boot: int, seed: int, chunk: int) -> Iterator[Callable[[], np.ndarray]]:
    """Yield, in replicate order, functions that each draw one (rows, n_clusters) int32 weight block.

    ``strata`` must be sorted (see :func:`_prepare_clusters`). Within each stratum of k clusters,
    every replicate draws k clusters with replacement (uniformly: multinomial(k, 1/k) counts).
    Every ``_DRAW_BLOCK`` replicates have their own random stream, spawned from ``seed``; per
    stratum, the block's draws are one ``rng.integers`` call of shape (block, k), counted row by row
    with ``bincount``. ``chunk`` is rounded up to a multiple of the block.
    """
    n_clusters = strata.size
    values, starts = np.unique(strata, return_index=True)
    bounds = [(int(a), int(b)) for a, b in zip(starts, [*starts[1:], n_clusters], strict=True)]
    streams = np.random.SeedSequence(seed).spawn(-(-n_boot // _DRAW_BLOCK))
    chunk = -(-max(int(chunk), 1) // _DRAW_BLOCK) * _DRAW_BLOCK

    def make(first: int, rows: int) -> np.ndarray:
        weights = np.empty((rows, n_clusters), dtype=np.int32)
        for block_first in range(0, rows, _DRAW_BLOCK):
            rng = np.random.default_rng(streams[(first + block_first) // _DRAW_BLOCK])
            block = min(_DRAW_BLOCK, rows - block_first)
            for start, stop in bounds:
                k = stop - start
                draws = rng.integers(0, k, size=(block, k))
                for row, drawn in enumerate(draws, start=block_first):  # a per-row count array stays in cache
                    weights[row, start:stop] = np.bincount(drawn, minlength=k)
        return weights

    for first in range(0, n_boot, chunk):
        yield lambda first=first: make(first, min(chunk, n_boot - first))


def _weight_chunks(strata: np.ndarray, n_boot: int, seed: int, chunk: int) -> Iterator[np.ndarray]:
    """Yield the (rows, n_clusters) int32 weight blocks of :func:`_weight_makers`, in order."""
    for make in _weight_makers(strata, n_boot, seed, chunk):
        yield make()


# Threads that draw and evaluate weight blocks side by side (numpy releases the GIL in the random
# draws, take, cumsum, einsum and matrix products).
BOOTSTRAP_THREADS = 2


def _map_blocks(func: Callable[[np.ndarray], Any], makers: Iterator[Callable[[], np.ndarray]]) -> list[Any]:
    """``[func(make()) for make in makers]``, in up to :data:`BOOTSTRAP_THREADS` threads.

    At most one block per thread plus one more is in flight, so memory stays bounded; results keep
    the order of the blocks and do not depend on the number of threads.
    """
    workers = max(1, min(BOOTSTRAP_THREADS, os.cpu_count() or 1))
    if workers == 1:
        return [func(make()) for make in makers]
    results: list[Any] = []
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for make in makers:
            pending.append(pool.submit(lambda make=make: func(make())))
            if len(pending) > workers:
                results.append(pending.popleft().result())
        results.extend(future.result() for future in pending)
    return results


def bootstrap_cluster_weights(clusters: np.ndarray | Sequence | None, labels: np.ndarray | None = None,
                              n_boot: int = 2000, seed: int = 0,
                              stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The cluster weight matrix that :func:`cluster_bootstrap` uses, in one piece (for small data).

    Returns:
        ``(codes, weights)``: ``codes[i]`` is sample i's cluster index; ``weights`` is
        (n_boot, n_clusters) int32 draw counts; sample i's weight in replicate r is ``weights[r, codes[i]]``.
    """
    n_samples = len(labels) if labels is not None else len(clusters)  # type: ignore[arg-type]
    codes, n_clusters, strata = _prepare_clusters(clusters, labels, n_samples, stratify)
    chunk = _default_chunk(n_boot, n_samples)
    return codes, np.vstack(list(_weight_chunks(strata, n_boot, seed, chunk)))


class _ReplicateEvaluator:
    """Weighted binary metrics for many replicates at once.

    Per-sample weights are cluster weights, so every additive quantity is summed per cluster once
    and a replicate is one matrix product with its weight row. The ranking metrics sort the scores
    once; per replicate, cumulative negative (and positive) weights in score order are gathered at
    each positive's position:
    ``AUC = sum_i w_i * (N_below(i) + N_tied(i) / 2) / (sum P * sum N)`` over positives i (ties count
    1/2), and average precision ``= sum_i w_i * precision(s_i) / sum P`` with precision at threshold
    ``s_i`` (scores >= s_i flagged), as scikit-learn's ``average_precision_score`` with
    ``sample_weight``.
    """

    def __init__(self, statistics: Sequence[str], labels: np.ndarray, scores: np.ndarray | None,
                 predictions: np.ndarray | None, codes: np.ndarray, n_clusters: int, n_bins: int = 10):
        self.statistics = tuple(statistics)
        y = labels.astype(bool)
        self.needs_counts = any(name in _PREDICTION_STATISTICS for name in self.statistics)
        self.needs_levels = any(name in ("auc", "pr_auc") for name in self.statistics)
        self.needs_calibration = any(name in ("brier", "ece") for name in self.statistics)

        def per_cluster(values: np.ndarray) -> np.ndarray:
            return np.bincount(codes, weights=values.astype(np.float64), minlength=n_clusters)

        # Additive quantities per cluster, one column each: a replicate's sums are one matrix product.
        columns = [per_cluster(np.ones(y.size))]
        if self.needs_counts:
            p = predictions.astype(bool)  # type: ignore[union-attr]
            columns += [per_cluster(y & p), per_cluster(~y & p), per_cluster(~y & ~p), per_cluster(y & ~p)]
        if self.needs_calibration:
            s = scores.astype(np.float64)  # type: ignore[union-attr]
            columns.append(per_cluster((s - y) ** 2))
            bin_gap = np.zeros((n_clusters, n_bins))
            np.add.at(bin_gap, (codes, _bin_index(s, n_bins)), s - y)
            columns += list(bin_gap.T)
        self.additive = np.column_stack(columns)
        if self.needs_levels:
            s = scores.astype(np.float64)  # type: ignore[union-attr]
            order = np.argsort(s, kind="stable")
            pos_order, neg_order = order[y[order]], order[~y[order]]
            pos_sorted, neg_sorted = s[pos_order], s[neg_order]
            # Cluster of each positive / negative in ascending score order.
            self.pos_codes = codes[pos_order]
            self.neg_codes = codes[neg_order]
            # For positive i: negatives strictly below it, negatives at or below it, positives below it.
            # Without ties (continuous scores) the second equals the first and the third is i itself,
            # and those gathers are skipped.
            self.neg_below = np.searchsorted(neg_sorted, pos_sorted, side="left")
            neg_upto = np.searchsorted(neg_sorted, pos_sorted, side="right")
            self.neg_upto = None if np.array_equal(neg_upto, self.neg_below) else neg_upto
            pos_below = np.searchsorted(pos_sorted, pos_sorted, side="left")
            self.pos_below = None if np.array_equal(pos_below, np.arange(pos_below.size)) else pos_below

    def evaluate(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Statistics per row of ``weights`` (rows, n_clusters), integer (exact) or float."""
        out: dict[str, np.ndarray] = {}
        integral = weights.dtype.kind in "iu"
        weights_f = weights.astype(np.float64, copy=False)
        sums = weights_f @ self.additive
        total = sums[:, 0]
        if self.needs_counts:
            out.update(metrics_from_counts(sums[:, 1], sums[:, 2], sums[:, 3], sums[:, 4]))
        if self.needs_levels:
            out.update(self._ranking(weights, weights_f, integral, total))
        if self.needs_calibration:
            out["brier"] = _ratio(sums[:, 5 if self.needs_counts else 1], total)
            first = 6 if self.needs_counts else 2
            out["ece"] = _ratio(np.abs(sums[:, first:]).sum(axis=1), total)
        return {name: out[name] for name in self.statistics}

    def _ranking(self, weights: np.ndarray, weights_f: np.ndarray, integral: bool,
                 total: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        rows = weights.shape[0]
        # Integer weights: gathers and cumulative sums stay integer (int32 while every running sum fits,
        # i.e. the largest replicate's total weight is below 2**31), products accumulate in int64.
        if integral and (total.size == 0 or total.max() < 2**31 - 1) and weights.min(initial=0) >= 0:
            acc, dot_type = np.int32, np.int64
            source = weights.astype(np.int32, copy=False)
        elif integral:
            acc, dot_type = np.int64, np.int64
            source = weights.astype(np.int64, copy=False)
        else:
            acc, dot_type = np.float64, np.float64
            source = weights_f

        def row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.einsum("rp,rp->r", a, b, dtype=dot_type).astype(np.float64)

        pos_w = np.take(source, self.pos_codes, axis=1)
        neg_cum = np.empty((rows, self.neg_codes.size + 1), dtype=acc)
        neg_cum[:, 0] = 0
        np.cumsum(np.take(source, self.neg_codes, axis=1), axis=1, dtype=acc, out=neg_cum[:, 1:])
        pos_total = pos_w.sum(axis=1, dtype=dot_type)
        neg_total = neg_cum[:, -1].astype(dot_type)
        undefined = (pos_total == 0) | (neg_total == 0)
        pair_weight = pos_total.astype(np.float64) * neg_total.astype(np.float64)
        neg_below = np.take(neg_cum, self.neg_below, axis=1)
        if "auc" in self.statistics:
            # Negatives below each positive, plus half of those tied with it.
            beaten = row_dot(pos_w, neg_below)
            if self.neg_upto is not None:
                beaten = 0.5 * (beaten + row_dot(pos_w, np.take(neg_cum, self.neg_upto, axis=1)))
            out["auc"] = _ratio(beaten, pair_weight)
            out["auc"][undefined] = np.nan
        if "pr_auc" in self.statistics:
            # Precision at each positive's score: the positive share of the weight at or above it.
            pos_cum = np.cumsum(pos_w, axis=1, dtype=acc)
            if self.pos_below is None:
                pos_cum -= pos_w  # positives strictly below positive i: the exclusive running sum
                true_pos = pos_cum
            else:
                pos_cum = np.concatenate([np.zeros((rows, 1), dtype=acc), pos_cum], axis=1)
                true_pos = np.take(pos_cum, self.pos_below, axis=1)
            np.subtract(pos_total.astype(acc)[:, None], true_pos, out=true_pos)
            flagged = np.subtract(neg_total.astype(acc)[:, None], neg_below, out=neg_below)
            flagged += true_pos
            # flagged is 0 only where true_pos is 0 too; such positives weigh nothing.
            np.maximum(flagged, 1 if integral else np.finfo(np.float64).tiny, out=flagged)
            precision = np.divide(true_pos, flagged, dtype=np.float64)
            numerator = np.einsum("rp,rp->r", pos_w, precision, dtype=np.float64)
            out["pr_auc"] = _ratio(numerator, pos_total.astype(np.float64))
            out["pr_auc"][undefined] = np.nan
        return out


def _check_bootstrap_inputs(statistics: Sequence[str], labels, scores, predictions, threshold):
    unknown = [name for name in statistics if name not in BOOTSTRAP_STATISTICS]
    if unknown:
        raise ValueError(f"unknown bootstrap statistic(s) {unknown}; choose from {', '.join(BOOTSTRAP_STATISTICS)}")
    y = _binary_array(labels, "labels")
    s = None if scores is None else _score_array(scores)
    if s is not None and s.shape != y.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if any(name in _SCORE_STATISTICS for name in statistics) and s is None:
        raise ValueError("AUC, PR-AUC, Brier and ECE need scores")
    p = None
    if any(name in _PREDICTION_STATISTICS for name in statistics):
        if predictions is not None:
            p = _binary_array(predictions, "predictions")
        elif threshold is not None and s is not None:
            p = (s >= threshold).astype(np.int8)
        else:
            raise ValueError("confusion-matrix statistics need predictions or a threshold with scores")
        if p.shape != y.shape:
            raise ValueError(f"labels and predictions differ in length: {y.size} vs {p.size}")
    return y, s, p


def weighted_statistics(statistics: Sequence[str], labels: np.ndarray, scores: np.ndarray | None,
                        sample_weights: np.ndarray, predictions: np.ndarray | None = None,
                        threshold: float | None = None, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Weighted binary statistics for each row of ``sample_weights`` (n_replicates, n_samples).

    The vectorised engine behind :func:`cluster_bootstrap`, exposed so that it can be checked
    against scikit-learn with ``sample_weight``.
    """
    y, s, p = _check_bootstrap_inputs(statistics, labels, scores, predictions, threshold)
    weights = np.atleast_2d(np.asarray(sample_weights))
    if weights.dtype.kind not in "iu":  # integer weights (bootstrap counts) take the exact integer path
        weights = weights.astype(np.float64)
    if weights.shape[1] != y.size:
        raise ValueError(f"sample_weights need one column per sample ({y.size}), got {weights.shape[1]}")
    evaluator = _ReplicateEvaluator(statistics, y, s, p, np.arange(y.size), y.size, n_bins)
    return evaluator.evaluate(weights)


def _percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    valid = replicates[np.isfinite(replicates)]
    if valid.size == 0:
        return (math.nan, math.nan)
    alpha = 1.0 - level
    lower, upper = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
    return (float(lower), float(upper))


def bootstrap_method_text(n_boot: int, clustered: bool, stratify: bool, level: float = 0.95) -> str:
    """One line describing the bootstrap, for the report's method column."""
    unit = "patient-clustered" if clustered else "sample-level"
    strata = ", stratified by outcome" if stratify else ""
    return f"{unit} percentile bootstrap ({n_boot} replicates{strata}; {level:.0%} percentile interval)"


def cluster_bootstrap(
    statistic: str | Sequence[str] | Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    labels: np.ndarray,
    scores: np.ndarray | None,
    clusters: np.ndarray | Sequence | None,
    n_boot: int = 2000,
    seed: int = 0,
    stratify: bool = True,
    level: float = 0.95,
    *,
    predictions: np.ndarray | None = None,
    threshold: float | None = None,
    n_bins: int = 10,
    chunk_size: int | None = None,
) -> BootstrapResult | dict[str, BootstrapResult]:
    """Percentile bootstrap that resamples clusters (patients), not samples (images / studies).

    A patient's studies stay together: each replicate draws clusters with replacement and gives every
    sample its cluster's draw count as weight. With ``stratify``, clusters are split into those that
    hold any positive and those that hold none, and each replicate draws within each group as many
    clusters as it has (so every replicate has positives and negatives). All replicates are
    evaluated with numpy from one integer weight matrix, generated and consumed in chunks of
    replicates to bound memory.

    Args:
        statistic: a name from :data:`BOOTSTRAP_STATISTICS`, a list of names, or a callable
            ``f(labels, scores, predictions, sample_weights (rows, n)) -> (rows,)``.
        labels: 0/1 outcomes.
        scores: positive-class probabilities (needed for AUC, PR-AUC, Brier, ECE and a threshold).
        clusters: cluster (patient) id per sample; None resamples samples.
        n_boot: number of replicates.
        seed: seed of the weight draws (same seed, same intervals).
        stratify: resample within outcome strata.
        level: confidence level of the percentile interval.
        predictions: 0/1 predictions (or give ``threshold``: ``scores >= threshold``).
        n_bins: ECE bins.
        chunk_size: replicates per block (default: about 12 million entries per block).

    Returns:
        :class:`BootstrapResult` for one statistic (name or callable), a dict name -> result for a list.
    """
    names = [statistic] if isinstance(statistic, str) else None
    if names is None and not callable(statistic):
        names = list(statistic)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    y, s, p = _check_bootstrap_inputs(names or [], labels, scores, predictions, threshold)
    if names is None and p is None:
        p = _binary_array(predictions, "predictions") if predictions is not None else (
            (s >= threshold).astype(np.int8) if (s is not None and threshold is not None) else None)
    codes, n_clusters, strata = _prepare_clusters(clusters, y, y.size, stratify)
    method = bootstrap_method_text(n_boot, clusters is not None, stratify, level)

    if names is not None:
        evaluator = _ReplicateEvaluator(names, y, s, p, codes, n_clusters, n_bins)
        width = max(n_clusters, y.size if evaluator.needs_levels else 1)
        chunk = chunk_size or _default_chunk(n_boot, width)
        blocks = _map_blocks(evaluator.evaluate, _weight_makers(strata, n_boot, seed, chunk))
        point = evaluator.evaluate(np.ones((1, n_clusters)))
        replicates = {name: np.concatenate([b[name] for b in blocks]) for name in names}
    else:
        chunk = chunk_size or _default_chunk(n_boot, y.size)
        parts = [np.asarray(statistic(y, s, p, w[:, codes].astype(np.float64)), dtype=np.float64)
                 for w in _weight_chunks(strata, n_boot, seed, chunk)]
        point = {"_": np.asarray(statistic(y, s, p, np.ones((1, y.size))), dtype=np.float64)}
        replicates = {"_": np.concatenate(parts)}
        names = ["_"]

    results = {}
    for name in names:
        values = replicates[name]
        valid = values[np.isfinite(values)]
        results[name] = BootstrapResult(
            value=float(point[name][0]),
            ci=_percentile_interval(values, level),
            se=float(valid.std(ddof=1)) if valid.size > 1 else math.nan,
            n_boot=n_boot,
            n_valid=int(valid.size),
            method=method,
            replicates=values,
        )
    if isinstance(statistic, str) or callable(statistic):
        return results[names[0]]
    return results


def cluster_bootstrap_shared(
    tasks: Sequence[dict[str, Any]],
    n_boot: int = 2000,
    seed: int = 0,
    stratify: bool = True,
    level: float = 0.95,
    *,
    n_bins: int = 10,
) -> list[dict[str, BootstrapResult]]:
    """Several :func:`cluster_bootstrap` analyses of the same clusters on one set of weights.

    Each task is a dict with ``statistics`` (names), ``labels``, ``scores``, ``clusters`` and
    optionally ``predictions`` / ``threshold``, as for :func:`cluster_bootstrap`. Every task must
    hold the same cluster ids with the same strata (e.g. the sample-level data and the patient-level
    data, one row per patient, whose label is "holds any positive"). The weights are then the ones
    each separate :func:`cluster_bootstrap` call with this ``seed`` would draw, so the results equal
    those calls; they are drawn once and every task is evaluated on them.

    Returns:
        One dict name -> :class:`BootstrapResult` per task, in order.

    Raises:
        ValueError: tasks whose cluster ids or strata differ, or the errors of :func:`cluster_bootstrap`.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not tasks:
        return []
    prepared = []
    reference = None
    for index, task in enumerate(tasks):
        names = list(task["statistics"])
        y, s, p = _check_bootstrap_inputs(names, task["labels"], task.get("scores"), task.get("predictions"),
                                          task.get("threshold"))
        clusters = task.get("clusters")
        codes, n_clusters, strata = _prepare_clusters(clusters, y, y.size, stratify)
        ids = np.arange(y.size) if clusters is None else np.unique(
            np.asarray(clusters).astype(str) if np.asarray(clusters).dtype == object else np.asarray(clusters))
        if reference is None:
            reference = (ids, strata)
        elif not (np.array_equal(ids, reference[0]) and np.array_equal(strata, reference[1])):
            raise ValueError(f"bootstrap task {index} has other clusters or strata than task 0; shared weights need "
                             "the same clusters (patients) in every task")
        prepared.append((names, _ReplicateEvaluator(names, y, s, p, codes, n_clusters, n_bins), y.size,
                         clusters is not None))
    strata = reference[1]  # type: ignore[index]
    n_clusters = strata.size
    width = max([n_clusters] + [size for _, evaluator, size, _ in prepared if evaluator.needs_levels])
    chunk = _default_chunk(n_boot, width)

    def evaluate_all(weights: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [evaluator.evaluate(weights) for _, evaluator, _, _ in prepared]

    blocks = _map_blocks(evaluate_all, _weight_makers(strata, n_boot, seed, chunk))
    ones = np.ones((1, n_clusters))
    out = []
    for index, (names, evaluator, _, clustered) in enumerate(prepared):
        point = evaluator.evaluate(ones)
        method = bootstrap_method_text(n_boot, clustered, stratify, level)
        replicates = {name: np.concatenate([block[index][name] for block in blocks]) for name in names}
        out.append({name: _bootstrap_result(point[name][0], replicates[name], n_boot, method, level)
                    for name in names})
    return out


def _bootstrap_result(point: float, values: np.ndarray, n_boot: int, method: str, level: float) -> BootstrapResult:
    valid = values[np.isfinite(values)]
    return BootstrapResult(value=float(point), ci=_percentile_interval(values, level),
                           se=float(valid.std(ddof=1)) if valid.size > 1 else math.nan,
                           n_boot=n_boot, n_valid=int(valid.size), method=method, replicates=values)


def cluster_bootstrap_multiclass(
    statistics: Sequence[str],
    labels: np.ndarray,
    scores: np.ndarray,
    predictions: np.ndarray,
    clusters: np.ndarray | Sequence | None,
    n_boot: int = 2000,
    seed: int = 0,
    stratify: bool = True,
    level: float = 0.95,
    n_bins: int = 10,
) -> dict[str, Any]:
    """One-vs-rest statistics of every class and their macro averages, on shared bootstrap weights.

    Args:
        statistics: names from :data:`BOOTSTRAP_STATISTICS`.
        labels: class index per sample (0..k-1).
        scores: (n, k) class probabilities.
        predictions: predicted class index per sample.
        clusters: patient id per sample (None: each sample its own cluster).
        n_boot, seed, stratify, level, n_bins: as in :func:`cluster_bootstrap`; strata are the sets
            of classes that clusters hold.

    Returns:
        ``{"per_class": [ {name: BootstrapResult} per class ], "macro": {name: BootstrapResult},
        "accuracy": BootstrapResult}``; a macro replicate is the mean over classes of that
        replicate's one-vs-rest values (nan when any class's value is undefined in it);
        ``accuracy`` is the multi-class accuracy (fraction of samples whose class is right).
    """
    unknown = [name for name in statistics if name not in BOOTSTRAP_STATISTICS]
    if unknown:
        raise ValueError(f"unknown bootstrap statistic(s) {unknown}; choose from {', '.join(BOOTSTRAP_STATISTICS)}")
    y = np.asarray(labels, dtype=np.int64)
    prob = np.asarray(scores, dtype=np.float64)
    pred = np.asarray(predictions, dtype=np.int64)
    if prob.ndim != 2 or prob.shape[0] != y.size or pred.shape != y.shape:
        raise ValueError(f"need labels (n,), scores (n, k) and predictions (n,); got {y.shape}, {prob.shape}, "
                         f"{pred.shape}")
    n_classes = prob.shape[1]
    codes, n_clusters, strata = _prepare_clusters(clusters, y, y.size, stratify)
    evaluators = [
        _ReplicateEvaluator(statistics, (y == k).astype(np.int8), prob[:, k], (pred == k).astype(np.int8),
                            codes, n_clusters, n_bins)
        for k in range(n_classes)
    ]
    chunk = _default_chunk(n_boot, max(n_clusters, y.size))
    blocks: list[list[dict[str, np.ndarray]]] = [[] for _ in range(n_classes)]
    hits = np.bincount(codes, weights=(y == pred).astype(np.float64), minlength=n_clusters)
    sizes = np.bincount(codes, minlength=n_clusters).astype(np.float64)
    accuracy_blocks = []
    for weights in _weight_chunks(strata, n_boot, seed, chunk):
        weights_f = weights.astype(np.float64)
        accuracy_blocks.append(_ratio(weights_f @ hits, weights_f @ sizes))
        for k, evaluator in enumerate(evaluators):
            blocks[k].append(evaluator.evaluate(weights))
    ones = np.ones((1, n_clusters))
    points = [evaluator.evaluate(ones) for evaluator in evaluators]
    method = bootstrap_method_text(n_boot, clusters is not None, stratify, level)

    def result(point: float, values: np.ndarray) -> BootstrapResult:
        valid = values[np.isfinite(values)]
        return BootstrapResult(value=float(point), ci=_percentile_interval(values, level),
                               se=float(valid.std(ddof=1)) if valid.size > 1 else math.nan,
                               n_boot=n_boot, n_valid=int(valid.size), method=method, replicates=values)

    per_class = []
    replicates = []
    for k in range(n_classes):
        class_replicates = {name: np.concatenate([b[name] for b in blocks[k]]) for name in statistics}
        replicates.append(class_replicates)
        per_class.append({name: result(points[k][name][0], class_replicates[name]) for name in statistics})
    macro = {}
    for name in statistics:
        stacked = np.vstack([replicates[k][name] for k in range(n_classes)])
        point = float(np.mean([points[k][name][0] for k in range(n_classes)]))
        macro[name] = result(point, stacked.mean(axis=0))
    accuracy = result(float(np.mean(y == pred)) if y.size else math.nan, np.concatenate(accuracy_blocks))
    return {"per_class": per_class, "macro": macro, "accuracy": accuracy}
