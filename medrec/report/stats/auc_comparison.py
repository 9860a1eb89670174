"""Tests of two correlated AUCs (both models scored on the same samples).

* :func:`delong_paired_test`: DeLong's test from the 2x2 covariance of the two AUCs;
  :func:`obuchowski_paired_test`: the same with patients as clusters (Obuchowski 1997).
* Where the variance of the paired AUC difference is 0 (identical rankings),
  :func:`paired_auc_difference_fallback`: a paired bootstrap, else an exact bound from the pairs the
  two models order alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from medrec.report.stats.auc_variance import _delong_components, _delong_covariance, _obuchowski_covariance
from medrec.report.stats.bootstrap import _percentile_interval, bootstrap_method_text, cluster_bootstrap_shared
from medrec.report.stats.inputs import _binary_array, _cluster_codes, _score_array, _z


def delong_paired_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95,
                       n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """DeLong test of two correlated AUCs (both models scored on the same samples).

    The interval of the difference is the Wald interval from the 2x2 DeLong covariance; where the
    variance of the difference is 0 (e.g. both models rank the samples alike) it is that of
    :func:`paired_auc_difference_fallback` (``n_boot`` and ``seed`` serve it).

    Returns:
        dict with ``auc_a, auc_b, difference`` (a - b), ``se`` of the difference (from the 2x2
        DeLong covariance), ``z``, two-sided ``p_value`` (nan where not computed, ``ci_method`` says
        why), ``ci95`` ``[lo, hi]`` of the difference (at ``level``; the key keeps its name) and
        ``ci_method``, a sentence on how the interval was obtained.
    """
    a = _score_array(scores_a, "scores_a")
    b = _score_array(scores_b, "scores_b")
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b differ in length: {a.size} vs {b.size}")
    auc, v10, v01 = _delong_components(labels, np.vstack([a, b]))
    return _paired_auc_result(labels, np.vstack([a, b]), None, auc, _delong_covariance(v10, v01), level, n_boot,
                              seed)


def _paired_auc_result(labels: np.ndarray, scores: np.ndarray, clusters: np.ndarray | Sequence | None,
                       auc: np.ndarray, cov: np.ndarray, level: float, n_boot: int, seed: int) -> dict[str, Any]:
    """The test of AUC(a) - AUC(b) from the two AUCs and their 2x2 covariance."""
    difference = float(auc[0] - auc[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    result: dict[str, Any] = {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "difference": difference,
                              "se": math.sqrt(max(variance, 0.0))}
    # Zero up to rounding: the same placement values enter both variances and the covariance.
    if variance > 1e-12 * float(cov[0, 0] + cov[1, 1]):
        z = difference / result["se"]
        half = _z(level) * result["se"]
        return {**result, "z": z, "p_value": float(2.0 * sps.norm.sf(abs(z))),
                "ci95": [difference - half, difference + half],
                "ci_method": f"Wald {level:.0%} interval of the difference"}
    result["se"] = 0.0
    return {**result, **paired_auc_difference_fallback(labels, scores[0], scores[1], clusters, level, n_boot, seed)}


def _disjoint_patient_pairs(labels: np.ndarray, codes: np.ndarray, n_clusters: int) -> int:
    """The most pairs of distinct clusters, one holding a positive and one a negative sample, with
    no cluster in two pairs: ``min(|P|, |N|, floor(|P u N| / 2))`` for the sets P and N of clusters
    holding positives and negatives (a cluster in both fills either role)."""
    holds_positive = np.zeros(n_clusters, dtype=bool)
    holds_negative = np.zeros(n_clusters, dtype=bool)
    holds_positive[codes[labels == 1]] = True
    holds_negative[codes[labels == 0]] = True
    return int(min(holds_positive.sum(), holds_negative.sum(), (holds_positive | holds_negative).sum() // 2))


def paired_auc_difference_fallback(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                                   clusters: np.ndarray | Sequence | None = None, level: float = 0.95,
                                   n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Interval and test of AUC(a) - AUC(b) where its DeLong / Obuchowski variance is 0.

    That variance is 0 when every positive's and every negative's placement value differs between
    the models by the same amount, above all when the models rank the samples alike (the same
    scores, or monotone transforms of each other): the Wald interval is then [d, d], which claims a
    certainty no finite sample gives. Two steps, the first that has a width:

    1. The paired percentile bootstrap of the difference (both models on the same resamples;
       patients resampled when ``clusters`` is given, positive-holding and other patients
       separately), widened to hold the estimate ``d``. It has a width when the kernel
       ``D = psi_a - psi_b`` of the pairs (``psi`` = 1, 1/2 or 0 as the positive scores above, level
       with or below the negative) varies between pairs.
    2. Where it has none (every resample gives ``d``: the models order every positive-negative pair
       alike up to the constant shift ``d``, 0 for identical rankings), a bound: a pair's ``D``
       differs from ``d`` with probability ``pi``, so ``Delta = E D`` lies in
       ``[d - pi (1 + d), d + pi (1 - d)]`` (``D`` lies in [-1, 1]). No such pair was seen among the
       ``N`` disjoint pairs of distinct patients (one holding a positive, one a negative sample; no
       patient in two pairs), which are independent, so ``pi`` is below the Clopper-Pearson bound
       for 0 events in ``N`` trials, ``1 - (alpha / 2)^(1 / N)`` (the "rule of three" is its
       approximation, ``3.7 / N`` at 95%). The two-sided p-value inverts this interval:
       ``min(1, 2 (1 + |d|)^-N)``, 1 when ``d`` is 0.

    In step 1 the p-value is 1 when ``d`` is 0 and not computed (nan) otherwise.

    Returns:
        ``{"z", "p_value", "ci95", "ci_method"}``.
    """
    y = _binary_array(labels, "labels")
    a = _score_array(scores_a, "scores_a")
    b = _score_array(scores_b, "scores_b")
    rows = np.vstack([a, b])
    auc, _, _ = _delong_components(y, rows)
    difference = float(auc[0] - auc[1])
    alpha = 1.0 - level
    codes, n_clusters = _cluster_codes(clusters, y.size)
    clustered = clusters is not None and n_clusters < y.size
    unit = "patients" if clustered else "samples"
    head = f"the {'Obuchowski' if clustered else 'DeLong'} variance of the difference is 0 here"
    tasks = [{"statistics": ["auc"], "labels": y, "scores": row, "clusters": clusters if clustered else None}
             for row in rows]
    first, second = cluster_bootstrap_shared(tasks, n_boot=n_boot, seed=seed, level=level)
    replicates = first["auc"].replicates - second["auc"].replicates
    low, high = _percentile_interval(replicates, level)
    low, high = min(low, difference), max(high, difference)
    if high - low > 1e-12:
        text = bootstrap_method_text(n_boot, clustered, True, level)
        return {"z": 0.0 if difference == 0 else math.nan, "p_value": 1.0 if difference == 0 else math.nan,
                "ci95": [low, high],
                "ci_method": (head + f", so the paired {text} of the difference (both models on the same resamples), "
                              "widened to hold the estimate" + ("" if difference == 0 else
                                                               "; p-value not computed (no variance for a z test)"))}
    pairs = _disjoint_patient_pairs(y, codes, n_clusters)
    bound = 1.0 - (alpha / 2.0) ** (1.0 / pairs) if pairs > 0 else 1.0
    lower, upper = difference - bound * (1.0 + difference), difference + bound * (1.0 - difference)
    p_value = 1.0 if difference == 0 else min(1.0, 2.0 * (1.0 + abs(difference)) ** -pairs)
    valid = replicates[np.isfinite(replicates)]
    if valid.size and np.ptp(valid) <= 1e-12:
        seen = ("every paired bootstrap resample gives the same difference (as when the two models order every "
                "positive-negative pair alike" + ("" if difference == 0 else
                                                  f" up to a constant shift of {difference:+g} on every pair") + ")")
    else:
        seen = f"the paired bootstrap's percentile interval has no width either ({level:.0%} of resamples give d)"
    return {"z": 0.0 if difference == 0 else math.nan, "p_value": p_value, "ci95": [lower, upper],
            "ci_method": (head + f" and {seen}, so the bound [d - pi (1 + d), d + pi (1 - d)] with pi = {bound:.4f}, "
                          f"the Clopper-Pearson {level:.0%} upper bound for no pair off d in N = {pairs} trials "
                          f"(the disjoint pairs of distinct {unit}, one with a positive and one with a negative "
                          "sample); p-value min(1, 2 (1 + |d|)^-N) by inverting it")}


def obuchowski_paired_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                           clusters: np.ndarray | Sequence, level: float = 0.95, n_boot: int = 2000,
                           seed: int = 0) -> dict[str, Any]:
    """Test of two correlated AUCs (both models on the same samples) with patients as clusters.

    The 2x2 covariance of Obuchowski (1997), including the cross-model terms ``S10^(12)``,
    ``S01^(12)``, ``S11^(12)`` and ``S11^(21)``; equals :func:`delong_paired_test` with one sample
    per cluster. Where the variance of the difference is 0, the interval and p-value of
    :func:`paired_auc_difference_fallback`, patients resampled.

    Returns:
        The keys of :func:`delong_paired_test`.
    """
    a = _score_array(scores_a, "scores_a")
    b = _score_array(scores_b, "scores_b")
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b differ in length: {a.size} vs {b.size}")
    auc, cov, _ = _obuchowski_covariance(labels, np.vstack([a, b]), clusters)
    return _paired_auc_result(labels, np.vstack([a, b]), clusters, auc, cov, level, n_boot, seed)
