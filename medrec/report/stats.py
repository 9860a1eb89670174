"""Statistics for clinical validation reports: pure functions on numpy arrays.

What lives here and why it is hand-written:

* :func:`proportion_ci`: Wilson score and Clopper-Pearson intervals (scipy gives the beta / normal
  quantiles; the Wald interval is deliberately absent, it fails at 0/n and n/n).
* :func:`delong_auc_variance`, :func:`delong_ci`, :func:`delong_paired_test`: the fast DeLong
  algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21:1389), O(n log n) through midranks.
  Neither scipy nor scikit-learn offers DeLong. Where the variance of a paired AUC difference is 0
  (identical rankings), :func:`paired_auc_difference_fallback`: a paired bootstrap, else an exact
  bound from the pairs the two models order alike.
* :func:`mcnemar`, :func:`mcnemar_exact`, :func:`mcnemar_test`: McNemar's test on discordant pairs.
* :func:`brier_score`, :func:`expected_calibration_error`, :func:`reliability_curve`.
* :func:`adjusted_ppv_npv`: predictive values at another prevalence (Bayes' rule), and
  :func:`predictive_values_ci`: their logit intervals (Mercaldo, Lau & Zhou 2007).
* :func:`clustered_proportion_ci`: a proportion from patients with several samples: Wilson at the
  effective sample size n / DE, the design effect from the ratio estimator (:func:`ratio_design_effect`).
* :func:`obuchowski_auc_variance`, :func:`obuchowski_paired_test`: the clustered AUC variance of
  Obuchowski (1997, Biometrics 53:567), patients as clusters; DeLong's with one sample per patient.
* :func:`auc_ci`: the AUC interval on the logit scale from the DeLong / Obuchowski variance, and
  Newcombe's (2006) score interval (:func:`newcombe_auc_ci`) where that is undefined (AUC 0 or 1).
* :func:`count_statistic_ci`: BCa intervals for F1, MCC and balanced accuracy (:func:`bca_interval`),
  with a Jeffreys-posterior fallback (:func:`confusion_posterior_ci`) where every replicate is equal.
* :func:`logistic_calibration`: calibration intercept and slope with Wald intervals, observed /
  expected, scaled Brier; :func:`decision_curve`: net benefit (Vickers & Elkin 2006).
  Neither scipy nor scikit-learn has these (statsmodels, which would fit the recalibration
  models, is not a dependency; two-parameter Newton iterations do not justify one).
* :func:`mover_mean_ci`, :func:`mean_proportion_ci`: the interval of a macro average of proportions
  (multi-class sensitivity, ...) by the MOVER from each proportion's own Wilson interval (Zou &
  Donner 2008): neither scipy nor statsmodels has one, and a percentile bootstrap collapses to a
  point when every class's proportion is 0 or 1.
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
from scipy import optimize
from scipy import stats as sps
from scipy.special import expit
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "BOOTSTRAP_STATISTICS",
    "COUNT_STATISTIC_RANGES",
    "DECISION_THRESHOLDS",
    "EXTRA_BOOTSTRAP_STATISTICS",
    "AucInterval",
    "BootstrapResult",
    "ClusteredProportion",
    "adjusted_ppv_npv",
    "auc_ci",
    "bca_interval",
    "bca_method_text",
    "binary_point_metrics",
    "bootstrap_cluster_weights",
    "bootstrap_method_text",
    "bounded_statistic_ci",
    "brier_score",
    "cluster_bootstrap",
    "cluster_bootstrap_multiclass",
    "cluster_bootstrap_shared",
    "clustered_proportion_ci",
    "confusion_counts",
    "confusion_posterior_ci",
    "count_statistic_ci",
    "decision_curve",
    "delong_auc_variance",
    "delong_ci",
    "delong_paired_test",
    "expected_calibration_error",
    "logistic_calibration",
    "mcnemar",
    "mcnemar_exact",
    "mcnemar_table",
    "mcnemar_test",
    "mean_proportion_ci",
    "metrics_from_counts",
    "midranks",
    "mover_mean_ci",
    "multiclass_posterior_ci",
    "newcombe_auc_ci",
    "newcombe_auc_variance",
    "obuchowski_auc_variance",
    "obuchowski_paired_test",
    "paired_auc_difference_fallback",
    "predictive_values_ci",
    "proportion_ci",
    "ratio_design_effect",
    "reliability_curve",
    "weighted_statistics",
]

PROPORTION_METHODS: tuple[str, ...] = ("wilson", "clopper-pearson")

# Statistics that cluster_bootstrap evaluates vectorised over replicates.
BOOTSTRAP_STATISTICS: tuple[str, ...] = (
    "sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy", "f1", "mcc",
    "auc", "pr_auc", "brier", "ece",
)
# Evaluated like them, but not part of the report's metric table: the scaled Brier score
# (1 - Brier / (prevalence (1 - prevalence)), Steyerberg et al. 2010) of the calibration section.
EXTRA_BOOTSTRAP_STATISTICS: tuple[str, ...] = ("scaled_brier",)
_SCORE_STATISTICS = frozenset({"auc", "pr_auc", "brier", "ece", "scaled_brier"})
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
    return _proportion_interval(float(x), float(n), method, level)


def _proportion_interval(x: float, n: float, method: str, level: float) -> tuple[float, float]:
    """Wilson or Clopper-Pearson bounds for ``x`` successes in ``n`` trials, both possibly fractional
    (an effective sample size, :func:`clustered_proportion_ci`)."""
    if n <= 0:
        return (math.nan, math.nan)
    if method == "wilson":
        z = _z(level)
        z2 = z * z
        centre = (x + z2 / 2.0) / (n + z2)
        half = z / (n + z2) * math.sqrt(max(x * (n - x) / n, 0.0) + z2 / 4.0)
        lower = 0.0 if x <= 0 else max(0.0, centre - half)
        upper = 1.0 if x >= n else min(1.0, centre + half)
        return (lower, upper)
    alpha = 1.0 - level
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    lower = 0.0 if x <= 0 else float(sps.beta.ppf(alpha / 2.0, x, n - x + 1))
    upper = 1.0 if x >= n else float(sps.beta.ppf(1.0 - alpha / 2.0, x + 1, n - x))
    return (lower, upper)


def mover_mean_ci(estimates: Sequence[float] | np.ndarray, lowers: Sequence[float] | np.ndarray,
                  uppers: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Interval of the unweighted mean of independent estimates, recovered from their own intervals.

    The MOVER (method of variance estimates recovery; Zou & Donner 2008, Stat Med 27:1693; for linear
    functions of binomial proportions with Wilson limits, Zou, Huang & Zhang 2009, Comput Stat Data
    Anal 53:1080): with estimates ``p_k``, bounds ``(l_k, u_k)`` and ``K`` of them,
    ``L = mean - sqrt(sum (p_k - l_k)^2) / K`` and ``U = mean + sqrt(sum (u_k - p_k)^2) / K``. Each
    side takes the variance of ``p_k`` from the distance to its own bound on that side, so the
    asymmetry of a score interval near 0 or 1 carries over, and the interval keeps a width whenever
    one component's interval has one (a Wilson interval always does). ``L >= mean(l_k)`` and
    ``U <= mean(u_k)`` (the root of a sum of squares is at most the sum), so the bounds stay within
    the components' range, and ``L <= mean <= U`` when every ``l_k <= p_k <= u_k``. Neither scipy nor
    statsmodels has it.

    Args:
        estimates, lowers, uppers: one entry per component.

    Returns:
        ``(lower, upper)``; ``(nan, nan)`` when there is no component or any entry is not finite.

    Raises:
        ValueError: mismatched lengths, or a bound on the wrong side of its estimate.
    """
    p = np.asarray(estimates, dtype=np.float64)
    lower = np.asarray(lowers, dtype=np.float64)
    upper = np.asarray(uppers, dtype=np.float64)
    if not (p.shape == lower.shape == upper.shape) or p.ndim != 1:
        raise ValueError(f"need one lower and one upper bound per estimate, got shapes {p.shape}, {lower.shape}, "
                         f"{upper.shape}")
    if p.size == 0 or not (np.isfinite(p).all() and np.isfinite(lower).all() and np.isfinite(upper).all()):
        return (math.nan, math.nan)
    if np.any(lower > p) or np.any(upper < p):
        raise ValueError(f"every interval must hold its estimate; got estimates {p.tolist()} with bounds "
                         f"{lower.tolist()} and {upper.tolist()}")
    k, mean = p.size, float(p.mean())
    return (mean - math.sqrt(float(np.sum((p - lower) ** 2))) / k,
            mean + math.sqrt(float(np.sum((upper - p) ** 2))) / k)


def mean_proportion_ci(successes: Sequence[int], totals: Sequence[int], method: str = "wilson",
                       level: float = 0.95) -> tuple[float, float]:
    """Interval of the unweighted mean of independent binomial proportions (a macro average).

    :func:`mover_mean_ci` of the proportions ``x_k / n_k`` with their Wilson (or Clopper-Pearson)
    intervals. Unlike a percentile bootstrap it keeps a width when every proportion is 0 or 1 (a
    perfect model, or one that predicts one class for everything): three classes of 5 with every
    sample right give ``1 - sqrt(3) (1 - 5 / (5 + z^2)) / 3`` = 0.749 as the lower bound.

    Args:
        successes: ``x_k`` per proportion.
        totals: ``n_k`` per proportion.
        method: ``"wilson"`` or ``"clopper-pearson"``, as in :func:`proportion_ci`.
        level: confidence level.

    Returns:
        ``(lower, upper)`` within [0, 1]; ``(nan, nan)`` when there is no proportion or some ``n_k`` is 0.

    Raises:
        ValueError: counts out of range, mismatched lengths, an unknown method or a level outside (0, 1).
    """
    x = np.asarray(successes, dtype=np.int64)
    n = np.asarray(totals, dtype=np.int64)
    if x.shape != n.shape or x.ndim != 1:
        raise ValueError(f"need one success count per total, got {x.shape} and {n.shape}")
    if np.any(x < 0) or np.any(x > n):
        raise ValueError(f"proportions need 0 <= successes <= total, got {x.tolist()} of {n.tolist()}")
    if method not in PROPORTION_METHODS:
        raise ValueError(f"unknown proportion CI method {method!r}; use one of {', '.join(PROPORTION_METHODS)}")
    _z(level)
    if x.size == 0 or np.any(n == 0):
        return (math.nan, math.nan)
    bounds = np.array([_proportion_interval(float(xk), float(nk), method, level) for xk, nk in zip(x, n, strict=True)])
    return mover_mean_ci(x / n, bounds[:, 0], bounds[:, 1])


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


@dataclass(frozen=True)
class ClusteredProportion:
    """A proportion from clustered samples and its interval at the effective sample size.

    Attributes:
        value: the pooled proportion ``sum(successes) / sum(totals)`` (the ratio estimator).
        ci: ``(lower, upper)``.
        design_effect: the design effect the interval used (>= 1).
        n_effective: ``n / design_effect``.
        n_samples: ``sum(totals)``; n_clusters: clusters with a nonzero total.
        estimated: True when the design effect was estimated; False when it could not be (the
            proportion is 0 or 1, or one cluster) and every cluster counted as one observation.
        method: one sentence for the report.
    """

    value: float
    ci: tuple[float, float]
    design_effect: float
    n_effective: float
    n_samples: int
    n_clusters: int
    estimated: bool
    method: str


def ratio_design_effect(successes: Sequence[float] | np.ndarray, totals: Sequence[float] | np.ndarray) -> float:
    """Design effect of a proportion estimated from clusters (Kish 1965, ratio estimator).

    With ``k`` clusters of ``n_i`` samples holding ``x_i`` successes, ``p = sum x_i / sum n_i`` is a
    ratio estimator whose variance is ``k / (k - 1) * sum (x_i - p n_i)^2 / n^2`` (Cochran 1977,
    6.9); the design effect is that over the variance under independent sampling,
    ``p (1 - p) / (n - 1)``. Both are the unbiased forms, so that a design of one sample per
    cluster has a design effect of exactly 1.

    Returns:
        The design effect (may be below 1); nan when it cannot be estimated: fewer than two clusters,
        fewer than two samples, or ``p`` is 0 or 1 (no variation to compare).
    """
    x = np.asarray(successes, dtype=np.float64)
    n = np.asarray(totals, dtype=np.float64)
    keep = n > 0
    x, n = x[keep], n[keep]
    k, total = x.size, float(n.sum())
    if k < 2 or total < 2:
        return math.nan
    p = float(x.sum()) / total
    if p <= 0.0 or p >= 1.0:
        return math.nan
    clustered_variance = k / (k - 1.0) * float(np.sum((x - p * n) ** 2)) / total**2
    independent_variance = p * (1.0 - p) / (total - 1.0)
    return clustered_variance / independent_variance


def clustered_proportion_ci(successes: Sequence[float] | np.ndarray, totals: Sequence[float] | np.ndarray,
                            method: str = "wilson", level: float = 0.95) -> ClusteredProportion:
    """Interval of a proportion whose samples come in clusters (patients with several studies).

    The Wilson (or Clopper-Pearson) interval at the effective sample size ``n / DE``, with the
    design effect ``DE`` from :func:`ratio_design_effect`, floored at 1 (clustering never narrows
    the interval). Where ``DE`` cannot be estimated (the proportion is 0 or 1, or a single cluster)
    each cluster counts as one observation (``n_eff`` = the number of clusters), the most the
    clustering can cost. This replaces taking the union with a bootstrap interval, which has no
    coverage theory and collapses to a point at 0 and 1.

    Args:
        successes: successes per cluster.
        totals: samples per cluster (clusters with 0 are ignored).
        method: ``"wilson"`` or ``"clopper-pearson"``.
        level: confidence level.

    Returns:
        A :class:`ClusteredProportion`; value and ci nan when there is no sample.

    Raises:
        ValueError: unknown method, mismatched lengths, or counts out of range.
    """
    if method not in PROPORTION_METHODS:
        raise ValueError(f"unknown proportion CI method {method!r}; use one of {', '.join(PROPORTION_METHODS)}")
    x = np.asarray(successes, dtype=np.float64)
    n = np.asarray(totals, dtype=np.float64)
    if x.shape != n.shape or x.ndim != 1:
        raise ValueError(f"need one success count per cluster total, got {x.shape} and {n.shape}")
    if np.any(x < 0) or np.any(x > n):
        raise ValueError("clustered proportion needs 0 <= successes <= total in every cluster")
    n_clusters = int(np.sum(n > 0))
    total = float(n.sum())
    name = "Wilson score interval" if method == "wilson" else "Clopper-Pearson exact interval"
    if total == 0:
        return ClusteredProportion(math.nan, (math.nan, math.nan), math.nan, 0.0, 0, 0, False,
                                   f"{name}: no sample")
    p = float(x.sum()) / total
    estimate = ratio_design_effect(x, n)
    if math.isfinite(estimate):
        design_effect, estimated = max(1.0, estimate), True
        why = (f"design effect {design_effect:.2f} (ratio estimator over {n_clusters} patients"
               + (f"; estimate {estimate:.2f} floored at 1" if estimate < 1.0 else "") + ")")
    else:
        design_effect, estimated = total / n_clusters, False
        why = (f"the design effect cannot be estimated when the proportion is {p:g}, so each of the "
               f"{n_clusters} patients counts as one observation")
    n_effective = total / design_effect
    ci = _proportion_interval(p * n_effective, n_effective, method, level)
    return ClusteredProportion(
        value=p, ci=ci, design_effect=design_effect, n_effective=n_effective, n_samples=int(round(total)),
        n_clusters=n_clusters, estimated=estimated,
        method=f"{name} at the effective sample size, n / DE = {n_effective:.1f} of {int(round(total))} samples; {why}",
    )


def predictive_values_ci(tp: float, fn: float, fp: float, tn: float, prevalence: float, level: float = 0.95,
                         n_diseased: float | None = None, n_healthy: float | None = None) -> dict[str, Any]:
    """PPV and NPV at a stated prevalence with the logit intervals of Mercaldo, Lau & Zhou (2007).

    Mercaldo et al. (Stat Med 26:2170, section 2.2): with sensitivity ``Se`` from ``n1`` diseased and
    specificity ``Sp`` from ``n0`` healthy subjects and a known prevalence ``p``,
    ``logit PPV = log(Se p / ((1 - Sp)(1 - p)))`` with variance
    ``(1 - Se) / (Se n1) + Sp / ((1 - Sp) n0)``, and ``logit NPV = log(Sp (1 - p) / ((1 - Se) p))``
    with variance ``Se / ((1 - Se) n1) + (1 - Sp) / (Sp n0)``; the bounds are back-transformed.
    When a cell of the 2x2 table is 0 these are undefined, and their adjusted estimates are used
    (their Table II): ``Se~ = (n1 Se + z^2/2) / (n1 + z^2)``, ``Sp~`` likewise, ``n1 + z^2`` and
    ``n0 + z^2`` in the variances; the point estimate is then the adjusted one too (the plug-in of
    Se = 1 or Sp = 1 claims a PPV or NPV of exactly 1). Sensitivity and specificity are the only
    inputs, so the test set's own case mix does not matter (a case-control or enriched design is fine).

    Args:
        tp, fn, fp, tn: the 2x2 counts.
        prevalence: the stated prevalence, strictly between 0 and 1.
        level: confidence level.
        n_diseased, n_healthy: effective sizes to use instead of ``tp + fn`` and ``fp + tn`` (the
            counts divided by their design effects when patients contribute several samples).

    Returns:
        ``{"ppv": (value, lower, upper), "npv": (value, lower, upper), "adjusted": bool,
        "plug_in": (ppv, npv)}``; nan where a class is absent.

    Raises:
        ValueError: a prevalence outside (0, 1) or a negative count.
    """
    p = float(prevalence)
    if not 0.0 < p < 1.0:
        raise ValueError(f"prevalence must lie strictly between 0 and 1, got {prevalence}")
    counts = [float(value) for value in (tp, fn, fp, tn)]
    if any(value < 0 for value in counts):
        raise ValueError(f"2x2 counts must be >= 0, got tp={tp}, fn={fn}, fp={fp}, tn={tn}")
    tp, fn, fp, tn = counts
    n1 = float(n_diseased) if n_diseased is not None else tp + fn
    n0 = float(n_healthy) if n_healthy is not None else fp + tn
    undefined = (math.nan, math.nan, math.nan)
    if tp + fn == 0 or fp + tn == 0 or n1 <= 0 or n0 <= 0:
        return {"ppv": undefined, "npv": undefined, "adjusted": False, "plug_in": (math.nan, math.nan)}
    se, sp = tp / (tp + fn), tn / (tn + fp)
    plug_in = adjusted_ppv_npv(se, sp, p)
    z = _z(level)
    adjusted = min(tp, fn, fp, tn) == 0
    if adjusted:
        se = (n1 * se + z * z / 2.0) / (n1 + z * z)
        sp = (n0 * sp + z * z / 2.0) / (n0 + z * z)
        n1, n0 = n1 + z * z, n0 + z * z
    logit_ppv = math.log(se * p / ((1.0 - sp) * (1.0 - p)))
    var_ppv = (1.0 - se) / (se * n1) + sp / ((1.0 - sp) * n0)
    logit_npv = math.log(sp * (1.0 - p) / ((1.0 - se) * p))
    var_npv = se / ((1.0 - se) * n1) + (1.0 - sp) / (sp * n0)

    def interval(centre: float, variance: float) -> tuple[float, float, float]:
        half = z * math.sqrt(variance)
        return (float(expit(centre)), float(expit(centre - half)), float(expit(centre + half)))

    ppv = interval(logit_ppv, var_ppv)
    npv = interval(logit_npv, var_npv)
    if not adjusted:  # the point estimate stays Bayes' rule with the observed Se and Sp (the same number)
        ppv, npv = (plug_in[0], ppv[1], ppv[2]), (plug_in[1], npv[1], npv[2])
    return {"ppv": ppv, "npv": npv, "adjusted": adjusted, "plug_in": plug_in}


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


# --------------------------------------------------------------------------------------------------
# Clustered AUC (Obuchowski 1997) and AUC intervals near the boundary
# --------------------------------------------------------------------------------------------------


def _obuchowski_covariance(labels: np.ndarray, scores: np.ndarray,
                           clusters: np.ndarray | Sequence) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """AUCs of the rows of ``scores`` and their covariance with patients as clusters.

    Obuchowski (1997, Biometrics 53:567), with ``I`` clusters, ``m_i`` positive and ``n_i`` negative
    units in cluster i, ``M = sum m_i``, ``N = sum n_i``, ``I10`` / ``I01`` the clusters holding any
    positive / negative unit and the structural components ``V10(X_i.)`` (sum over cluster i's
    positives of the fraction of all negatives below them, ties 1/2) and ``V01(Y_i.)`` (sum over its
    negatives of the fraction of all positives above them)::

        S10 = I10 / ((I10 - 1) M) sum_i (V10(X_i.) - m_i A)(V10(X_i.) - m_i A)'
        S01 = I01 / ((I01 - 1) N) sum_i (V01(Y_i.) - n_i A)(V01(Y_i.) - n_i A)'
        S11 = I / (I - 1)         sum_i (V10(X_i.) - m_i A)(V01(Y_i.) - n_i A)'
        cov = S10 / M + S01 / N + (S11 + S11') / (M N)

    With one unit per cluster ``S11`` is 0 and ``S10``, ``S01`` are DeLong's. The placement values
    come from the midrank algorithm (:func:`_delong_components`), so this is O(n log n); a term
    whose cluster count is 1 is taken as 0 (no spread to estimate), as DeLong with one sample.
    """
    y = _binary_array(labels, "labels")
    auc, v10, v01 = _delong_components(y, scores)
    codes, n_clusters = _cluster_codes(clusters, y.size)
    positive = y == 1
    pos_codes, neg_codes = codes[positive], codes[~positive]
    m_i = np.bincount(pos_codes, minlength=n_clusters).astype(np.float64)
    n_i = np.bincount(neg_codes, minlength=n_clusters).astype(np.float64)
    d10 = np.vstack([np.bincount(pos_codes, weights=row, minlength=n_clusters) for row in v10]) - auc[:, None] * m_i
    d01 = np.vstack([np.bincount(neg_codes, weights=row, minlength=n_clusters) for row in v01]) - auc[:, None] * n_i
    big_m, big_n = float(m_i.sum()), float(n_i.sum())
    i10, i01 = int(np.sum(m_i > 0)), int(np.sum(n_i > 0))
    zeros = np.zeros((auc.size, auc.size))
    s10 = i10 / ((i10 - 1.0) * big_m) * (d10 @ d10.T) if i10 > 1 else zeros
    s01 = i01 / ((i01 - 1.0) * big_n) * (d01 @ d01.T) if i01 > 1 else zeros
    s11 = n_clusters / (n_clusters - 1.0) * (d10 @ d01.T) if n_clusters > 1 else zeros
    cov = s10 / big_m + s01 / big_n + (s11 + s11.T) / (big_m * big_n)
    return auc, cov, {"clusters": n_clusters, "clusters_with_positive": i10, "clusters_with_negative": i01}


def obuchowski_auc_variance(labels: np.ndarray, scores: np.ndarray,
                            clusters: np.ndarray | Sequence) -> tuple[float, float]:
    """ROC AUC and its Obuchowski (1997) variance with ``clusters`` (patients) as the units sampled.

    Equals :func:`delong_auc_variance` when every cluster holds one sample.

    Raises:
        ValueError: only one class present, or lengths differ.
    """
    auc, cov, _ = _obuchowski_covariance(labels, scores, clusters)
    return float(auc[0]), float(cov[0, 0])


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


def newcombe_auc_variance(auc: float, n_positive: float, n_negative: float) -> float:
    """Hanley & McNeil's (1982) AUC variance as modified by Newcombe (2006, method 4).

    ``A (1 - A) [1 + (N* - 1)(1 - A) / (2 - A) + (N* - 1) A / (1 + A)] / (m n)`` with
    ``N* = (m + n) / 2`` in place of both sample sizes.
    """
    m, n = float(n_positive), float(n_negative)
    factor = (m + n) / 2.0 - 1.0
    return auc * (1.0 - auc) * (1.0 + factor * (1.0 - auc) / (2.0 - auc) + factor * auc / (1.0 + auc)) / (m * n)


def newcombe_auc_ci(auc: float, n_positive: float, n_negative: float, level: float = 0.95) -> tuple[float, float]:
    """Newcombe's (2006, Stat Med 25:559, method 5) score interval for an AUC.

    The set of ``A`` with ``(auc - A)^2 <= z^2 V(A)``, ``V`` from :func:`newcombe_auc_variance`
    evaluated at ``A`` (not at the estimate), so that an AUC of 1 (perfect separation) still has a
    lower bound below 1: 4 positives and 5 negatives give 0.61. Found by root bracketing on
    each side of the estimate.

    Returns:
        ``(lower, upper)`` within [0, 1]; nan without positives or negatives.
    """
    a = float(auc)
    m, n = float(n_positive), float(n_negative)
    if not (m > 0 and n > 0 and 0.0 <= a <= 1.0):
        return (math.nan, math.nan)
    z2 = _z(level) ** 2

    def excess(theta: float) -> float:
        return (a - theta) ** 2 - z2 * newcombe_auc_variance(theta, m, n)

    # At the estimate the excess is -z^2 V(auc) < 0 unless auc is 0 or 1, where it is 0; the side
    # towards the edge is then divided by (auc - theta) so that the root at auc itself drops out.
    if a >= 1.0:
        lower = optimize.brentq(lambda t: (1.0 - t) - z2 * newcombe_auc_variance(t, m, n) / (1.0 - t)
                                if t < 1.0 else -1.0, 0.0, 1.0, xtol=1e-14)
    elif a <= 0.0:
        lower = 0.0
    else:
        lower = optimize.brentq(excess, 0.0, a, xtol=1e-14)
    if a <= 0.0:
        upper = optimize.brentq(lambda t: t - z2 * newcombe_auc_variance(t, m, n) / t if t > 0.0 else -1.0,
                                0.0, 1.0, xtol=1e-14)
    elif a >= 1.0:
        upper = 1.0
    else:
        upper = optimize.brentq(excess, a, 1.0, xtol=1e-14)
    return (float(lower), float(upper))


@dataclass(frozen=True)
class AucInterval:
    """An AUC with its interval and how it was obtained.

    Attributes:
        value: the AUC (Mann-Whitney estimate).
        ci: ``(lower, upper)``.
        variance: the DeLong or Obuchowski variance (0 under perfect separation).
        clustered: True when the Obuchowski clustered variance was used.
        boundary: True when the Newcombe score interval replaced the logit interval.
        method: one sentence for the report.
    """

    value: float
    ci: tuple[float, float]
    variance: float
    clustered: bool
    boundary: bool
    method: str


def auc_ci(labels: np.ndarray, scores: np.ndarray, clusters: np.ndarray | Sequence | None = None,
           level: float = 0.95) -> AucInterval:
    """AUC with a confidence interval on the logit scale that never has zero width.

    The variance is DeLong's (Sun & Xu 2014) or, when ``clusters`` is given and some cluster holds
    several samples, Obuchowski's (1997) with the clusters (patients) as units. The interval is the
    Wald interval of ``logit(AUC)`` with the delta-method standard error ``SE / (AUC (1 - AUC))``,
    back-transformed (Pepe 2003, section 5.2; Qin & Hotilovac 2008): it stays inside (0, 1) and is
    asymmetric near the edges, unlike the Wald interval on the AUC scale. Where the AUC is 0 or 1 or
    its variance is 0 (perfect separation) the logit interval is undefined, and Newcombe's (2006)
    score interval (:func:`newcombe_auc_ci`) is used instead, with ``m`` and ``n`` the patients
    holding positive and negative samples when clustered (each patient counted once: the most the
    clustering can cost).

    Raises:
        ValueError: only one class present, or lengths differ.
    """
    y = _binary_array(labels, "labels")
    clustered = False
    if clusters is not None:
        _, n_clusters = _cluster_codes(clusters, y.size)
        clustered = n_clusters < y.size
    if clustered:
        auc_values, cov, counts = _obuchowski_covariance(y, scores, clusters)  # type: ignore[arg-type]
        auc, variance = float(auc_values[0]), float(cov[0, 0])
        m, n = counts["clusters_with_positive"], counts["clusters_with_negative"]
        name = "Obuchowski clustered variance"
        source = (f"Obuchowski (1997) nonparametric variance, the {counts['clusters']} patients as clusters of "
                  f"{int(y.size)} samples")
        units = " patients holding positive / negative samples"
    else:
        auc, variance = delong_auc_variance(y, scores)
        m, n = int(y.sum()), int(y.size - y.sum())
        name, source = "DeLong variance", "DeLong et al. 1988 by the midrank algorithm of Sun & Xu 2014"
        units = ""
    variance = max(variance, 0.0)
    if 0.0 < auc < 1.0 and variance > 0.0:
        half = _z(level) * math.sqrt(variance) / (auc * (1.0 - auc))
        centre = math.log(auc / (1.0 - auc))
        ci = (float(expit(centre - half)), float(expit(centre + half)))
        method = (f"{name} on the logit scale, Wald interval ({source}, delta-method standard error "
                  "SE / (AUC (1 - AUC)), back-transformed)")
        return AucInterval(auc, ci, variance, clustered, False, method)
    ci = newcombe_auc_ci(auc, m, n, level)
    why = "perfect separation" if auc in (0.0, 1.0) else "every placement value equal"
    method = (f"Newcombe (2006) score interval (method 5, Hanley-McNeil variance, m = {m} and n = {n}{units}); the "
              f"{name} is 0 here ({why}), so the logit-scale interval is undefined")
    return AucInterval(auc, ci, variance, clustered, True, method)


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
        self.needs_calibration = any(name in ("brier", "ece", "scaled_brier") for name in self.statistics)
        self.needs_outcomes = "scaled_brier" in self.statistics

        def per_cluster(values: np.ndarray) -> np.ndarray:
            return np.bincount(codes, weights=values.astype(np.float64), minlength=n_clusters)

        # Additive quantities per cluster, one column each: a replicate's sums are one matrix product.
        columns = [per_cluster(np.ones(y.size))]
        if self.needs_counts:
            p = predictions.astype(bool)  # type: ignore[union-attr]
            columns += [per_cluster(y & p), per_cluster(~y & p), per_cluster(~y & ~p), per_cluster(y & ~p)]
        if self.needs_calibration:
            s = scores.astype(np.float64)  # type: ignore[union-attr]
            self.brier_column = len(columns)
            columns.append(per_cluster((s - y) ** 2))
            bin_gap = np.zeros((n_clusters, n_bins))
            np.add.at(bin_gap, (codes, _bin_index(s, n_bins)), s - y)
            self.bin_columns = slice(len(columns), len(columns) + n_bins)
            columns += list(bin_gap.T)
        if self.needs_outcomes:
            self.outcome_column = len(columns)
            columns.append(per_cluster(y))
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
            out["brier"] = _ratio(sums[:, self.brier_column], total)
            out["ece"] = _ratio(np.abs(sums[:, self.bin_columns]).sum(axis=1), total)
        if self.needs_outcomes:
            prevalence = _ratio(sums[:, self.outcome_column], total)
            out["scaled_brier"] = 1.0 - _ratio(out["brier"], prevalence * (1.0 - prevalence))
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
    known = BOOTSTRAP_STATISTICS + EXTRA_BOOTSTRAP_STATISTICS
    unknown = [name for name in statistics if name not in known]
    if unknown:
        raise ValueError(f"unknown bootstrap statistic(s) {unknown}; choose from {', '.join(known)}")
    y = _binary_array(labels, "labels")
    s = None if scores is None else _score_array(scores)
    if s is not None and s.shape != y.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if any(name in _SCORE_STATISTICS for name in statistics) and s is None:
        raise ValueError("AUC, PR-AUC, Brier, scaled Brier and ECE need scores")
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


# --------------------------------------------------------------------------------------------------
# Bootstrap intervals that keep their width (F1, MCC, balanced accuracy; bounded statistics)
# --------------------------------------------------------------------------------------------------

# Confusion-count statistics whose interval is BCa, with a posterior fallback, and their ranges.
COUNT_STATISTIC_RANGES: dict[str, tuple[float, float]] = {
    "f1": (0.0, 1.0), "mcc": (-1.0, 1.0), "balanced_accuracy": (0.0, 1.0),
}


def bca_interval(point: float, replicates: np.ndarray, jackknife: np.ndarray,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Bias-corrected and accelerated bootstrap interval (Efron 1987; Efron & Tibshirani 1993, 14.3).

    ``z0 = Phi^-1(share of replicates below the estimate, ties counted 1/2)``; the acceleration
    ``a = sum d^3 / (6 (sum d^2)^(3/2))`` with ``d`` the jackknife values' mean minus each value;
    the bounds are the replicates' quantiles at ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` for
    ``z = Phi^-1(alpha / 2)`` and ``Phi^-1(1 - alpha / 2)``. Counting ties one half keeps ``z0``
    finite for a discrete statistic whose replicates often equal the estimate (one error in 31).

    Args:
        point: the estimate on the data.
        replicates: bootstrap replicates (nan where undefined: left out).
        jackknife: leave-one-cluster-out estimates (nan left out).
        level: confidence level.

    Returns:
        ``(lower, upper)``, or None where BCa is undefined: fewer than two defined replicates, all of
        them equal, all on one side of the estimate, or an acceleration that folds the quantile map.
    """
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < 2 or not math.isfinite(point) or values.min() == values.max():
        return None
    share = float(np.mean(values < point) + 0.5 * np.mean(values == point))
    if not 0.0 < share < 1.0:
        return None
    z0 = float(sps.norm.ppf(share))
    jack = np.asarray(jackknife, dtype=np.float64)
    jack = jack[np.isfinite(jack)]
    spread = jack.mean() - jack if jack.size else np.zeros(0)
    denominator = 6.0 * float(np.sum(spread**2)) ** 1.5
    acceleration = float(np.sum(spread**3)) / denominator if denominator > 0 else 0.0
    alpha = 1.0 - level
    quantiles = []
    for z in (sps.norm.ppf(alpha / 2.0), sps.norm.ppf(1.0 - alpha / 2.0)):
        shifted = z0 + z
        fold = 1.0 - acceleration * shifted
        if fold <= 0:
            return None
        quantiles.append(float(sps.norm.cdf(z0 + shifted / fold)))
    lower, upper = np.quantile(values, quantiles)
    return (float(lower), float(upper))


def bca_method_text(n_boot: int, clustered: bool, stratify: bool, level: float = 0.95) -> str:
    """One line describing the BCa bootstrap, for the report's method column."""
    unit = "patient-clustered" if clustered else "sample-level"
    strata = ", stratified by outcome" if stratify else ""
    jackknife = "leave-one-patient-out" if clustered else "leave-one-sample-out"
    return (f"{unit} BCa bootstrap ({n_boot} replicates{strata}; bias-corrected and accelerated {level:.0%} "
            f"interval, ties with the estimate counted 1/2, acceleration from the {jackknife} jackknife)")


def confusion_posterior_ci(statistic: str, tp: float, fp: float, tn: float, fn: float, level: float = 0.95,
                           scale: float = 1.0, n_draws: int = 20000, seed: int = 0) -> tuple[float, float]:
    """Equal-tailed posterior interval of F1, MCC or balanced accuracy from the 2x2 table.

    The cell probabilities get a Jeffreys ``Dirichlet(tp + 1/2, fp + 1/2, tn + 1/2, fn + 1/2)``
    posterior (Goutte & Gaussier 2005 for F1; Brodersen et al. 2010 for balanced accuracy); the
    statistic is evaluated on ``n_draws`` draws. As for the Jeffreys interval of a proportion (Brown,
    Cai & DasGupta 2001), the bound is the statistic's edge when the estimate lies there (no error:
    F1 = MCC = 1), so the interval always holds the estimate. Unlike a bootstrap it keeps a width
    when no error (or no correct call) was made.

    Args:
        statistic: ``"f1"``, ``"mcc"`` or ``"balanced_accuracy"``.
        tp, fp, tn, fn: the counts.
        level: confidence (credible) level.
        scale: multiplies the counts (e.g. patients / samples, so that clustered samples weigh as
            many observations as there are patients).
        n_draws: posterior draws; seed: their seed.

    Returns:
        ``(lower, upper)``.
    """
    if statistic not in COUNT_STATISTIC_RANGES:
        raise ValueError(f"posterior interval for {statistic!r} is not available; use one of "
                         f"{', '.join(COUNT_STATISTIC_RANGES)}")
    counts = np.array([tp, fp, tn, fn], dtype=np.float64)
    point = float(metrics_from_counts(*counts)[statistic])
    draws = np.random.default_rng(seed).dirichlet(counts * float(scale) + 0.5, size=int(n_draws))
    values = metrics_from_counts(draws[:, 0], draws[:, 1], draws[:, 2], draws[:, 3])[statistic]
    alpha = 1.0 - level
    lower, upper = (float(v) for v in np.quantile(values[np.isfinite(values)], [alpha / 2.0, 1.0 - alpha / 2.0]))
    low_edge, high_edge = COUNT_STATISTIC_RANGES[statistic]
    if point >= high_edge:
        upper = high_edge
    if point <= low_edge:
        lower = low_edge
    return (min(lower, point), max(upper, point))


def count_statistic_ci(statistic: str, labels: np.ndarray, predictions: np.ndarray,
                       clusters: np.ndarray | Sequence | None, bootstrap: BootstrapResult, level: float = 0.95,
                       stratify: bool = True, seed: int = 0) -> tuple[tuple[float, float], str]:
    """Interval of F1, MCC or balanced accuracy that does not collapse at 0 or 1 error.

    BCa (:func:`bca_interval`) on the (clustered) bootstrap replicates in ``bootstrap``, with the
    leave-one-cluster-out jackknife computed here from the per-cluster 2x2 counts. Where BCa is
    undefined the percentile interval is used; where that has no width (every replicate equal: no
    error, or no correct call, to resample) the posterior interval of
    :func:`confusion_posterior_ci`, with the counts scaled to the number of clusters.

    Returns:
        ``((lower, upper), method)``; the method names the one that gave the interval.
    """
    y = _binary_array(labels, "labels")
    p = _binary_array(predictions, "predictions")
    codes, n_clusters = _cluster_codes(clusters, y.size)
    clustered = clusters is not None
    per_cluster = {name: np.bincount(codes, weights=mask.astype(np.float64), minlength=n_clusters)
                   for name, mask in (("tp", (y == 1) & (p == 1)), ("fp", (y == 0) & (p == 1)),
                                      ("tn", (y == 0) & (p == 0)), ("fn", (y == 1) & (p == 0)))}
    totals = {name: float(values.sum()) for name, values in per_cluster.items()}
    if n_clusters < 2:
        jackknife = np.full(1, math.nan)
    else:
        jackknife = metrics_from_counts(*(totals[name] - per_cluster[name] for name in ("tp", "fp", "tn", "fn")))[
            statistic]
    point = float(metrics_from_counts(**totals)[statistic])
    bca_text = bca_method_text(bootstrap.n_boot, clustered, stratify, level)
    interval = bca_interval(point, bootstrap.replicates, jackknife, level)
    if interval is not None and interval[1] > interval[0]:
        return interval, bca_text
    if math.isfinite(bootstrap.ci[0]) and bootstrap.ci[1] > bootstrap.ci[0]:
        return bootstrap.ci, f"{bootstrap.method} (BCa is undefined here: every replicate on one side of the estimate)"
    scale = n_clusters / y.size if clustered and y.size else 1.0
    interval = confusion_posterior_ci(statistic, totals["tp"], totals["fp"], totals["tn"], totals["fn"],
                                      level=level, scale=scale, seed=seed)
    scaled = f", counts scaled to the {n_clusters} patients" if clustered and n_clusters < y.size else ""
    return interval, (f"Jeffreys posterior interval of the 2x2 table (equal-tailed {level:.0%} under a Jeffreys "
                      f"Dirichlet(1/2, 1/2, 1/2, 1/2) prior on its cells{scaled}, bounded by the metric's edge where "
                      "the estimate lies on it); every bootstrap replicate equals the estimate here (nothing to "
                      "resample), so the bootstrap gives no interval")


def bounded_statistic_ci(value: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """A conservative interval for a statistic in [0, 1] that is a mean over ``n`` units.

    The Wilson score interval of ``value`` as if it were a proportion of ``n``: among variables in
    [0, 1] with a given mean the Bernoulli one has the largest variance, so this is at least as
    wide as the score interval of the mean itself. For the rare case where every bootstrap
    replicate is equal (a perfect ranking gives PR-AUC 1 in every replicate).
    """
    if not (math.isfinite(value) and n > 0):
        return (math.nan, math.nan)
    clipped = min(max(float(value), 0.0), 1.0)
    return _proportion_interval(clipped * float(n), float(n), "wilson", level)


# --------------------------------------------------------------------------------------------------
# Calibration (logistic recalibration, observed / expected)
# --------------------------------------------------------------------------------------------------

CALIBRATION_CLIP = 1e-6  # scores are clipped to [eps, 1 - eps] before the logit


def _fit_logistic(y: np.ndarray, design: np.ndarray, offset: np.ndarray, codes: np.ndarray | None,
                  n_clusters: int, max_iter: int = 200) -> tuple[np.ndarray, np.ndarray, bool]:
    """Maximum-likelihood logistic regression by Newton's method with step halving.

    Returns:
        ``(coefficients, covariance, converged)``; the covariance is the inverse Fisher information,
        or the cluster-robust sandwich ``I^-1 B I^-1`` with ``B = k/(k-1) sum_c U_c U_c'`` (``U_c``
        the score summed over cluster c; Liang & Zeger 1986) when ``codes`` is given.
    """
    beta = np.zeros(design.shape[1])
    beta[0] = math.log(max(y.mean(), 1e-12) / max(1.0 - y.mean(), 1e-12)) - float(offset.mean())

    def loglik(b: np.ndarray) -> float:
        eta = design @ b + offset
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    current = loglik(beta)
    converged = False
    info = np.eye(design.shape[1])
    for _ in range(max_iter):
        mu = expit(design @ beta + offset)
        info = design.T @ (design * (mu * (1.0 - mu))[:, None])
        score = design.T @ (y - mu)
        try:
            step = np.linalg.solve(info, score)
        except np.linalg.LinAlgError:
            return beta, np.full((beta.size, beta.size), np.nan), False
        size = 1.0
        while size > 1e-8:
            candidate = beta + size * step
            value = loglik(candidate)
            if value >= current - 1e-12:
                break
            size /= 2.0
        beta, current = candidate, value
        if np.max(np.abs(size * step)) < 1e-10:
            converged = True
            break
    mu = expit(design @ beta + offset)
    info = design.T @ (design * (mu * (1.0 - mu))[:, None])
    try:
        inverse = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return beta, np.full((beta.size, beta.size), np.nan), False
    if codes is None:
        return beta, inverse, converged
    residual = (y - mu)[:, None] * design
    cluster_scores = np.vstack([np.bincount(codes, weights=residual[:, j], minlength=n_clusters)
                                for j in range(design.shape[1])]).T
    meat = n_clusters / (n_clusters - 1.0) * (cluster_scores.T @ cluster_scores) if n_clusters > 1 else info
    return beta, inverse @ meat @ inverse, converged


def logistic_calibration(labels: np.ndarray, probs: np.ndarray, clusters: np.ndarray | Sequence | None = None,
                         level: float = 0.95) -> dict[str, Any]:
    """Calibration of predicted probabilities: intercept, slope, observed / expected, scaled Brier.

    * Calibration-in-the-large (Steyerberg 2019, ch. 15; Van Calster et al. 2016): the intercept
      ``a`` of ``logit P(y=1) = a + logit(p)``, the logit of the scores entering as an offset (slope
      fixed at 1); 0 is perfect, > 0 means the scores are too low on average.
    * Calibration slope: ``b`` of ``logit P(y=1) = a + b logit(p)`` (logistic recalibration, Cox
      1958); 1 is perfect, < 1 means scores too extreme. Not estimable when the scores separate the
      outcomes (the maximum-likelihood slope is infinite) or are all equal.
    * Both by maximum likelihood with Wald intervals; when patients contribute several samples the
      standard errors are the patient-clustered sandwich (Liang & Zeger 1986).
    * Observed / expected: ``O / E = sum y / sum p``; interval ``exp(log(O/E) +- z sqrt(DE (1 - O/N) / O))``
      (binomial O with the expected count fixed, Debray et al. 2017 BMJ 356:i6460), ``DE`` the
      design effect of the outcome fraction over patients (:func:`ratio_design_effect`, floored at 1).
    * Brier score and the scaled Brier ``1 - Brier / (ybar (1 - ybar))`` (Steyerberg et al. 2010);
      its interval comes from the bootstrap (statistic ``scaled_brier``).

    Scores are clipped to ``[1e-6, 1 - 1e-6]`` before the logit (``n_clipped`` counts them).

    Returns:
        ``{"intercept": PART, "slope": PART, "oe_ratio": PART, "brier": float, "scaled_brier": float,
        "n_clipped": int, "clustered": bool, "n_clusters": int}`` where ``PART = {"value", "ci",
        "se", "method"}`` (value and ci nan with the reason in ``method`` when not estimable).

    Raises:
        ValueError: labels and probabilities of different lengths, or probabilities outside [0, 1].
    """
    y = _binary_array(labels, "labels").astype(np.float64)
    p = _score_array(probs, "probs")
    if p.shape != y.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.size} vs {p.size}")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("calibration needs probabilities in [0, 1]")
    z = _z(level)
    codes, n_clusters = _cluster_codes(clusters, y.size)
    clustered = clusters is not None and n_clusters < y.size
    robust = f"; standard error from the patient-clustered sandwich estimator ({n_clusters} patients)" \
        if clustered else ""
    clipped = np.clip(p, CALIBRATION_CLIP, 1.0 - CALIBRATION_CLIP)
    x = np.log(clipped / (1.0 - clipped))
    observed, n = float(y.sum()), float(y.size)

    def part(value: float, se: float, method: str) -> dict:
        if not (math.isfinite(value) and math.isfinite(se)):
            return {"value": math.nan, "ci": (math.nan, math.nan), "se": math.nan, "method": method}
        return {"value": value, "ci": (value - z * se, value + z * se), "se": se, "method": method}

    undefined = "not estimable: only one outcome class present"
    result: dict[str, Any] = {"n_clipped": int(np.sum(clipped != p)), "clustered": clustered, "n_clusters": n_clusters,
                              "brier": brier_score(y.astype(np.int8), p) if y.size else math.nan}
    prevalence = observed / n if n else math.nan
    result["scaled_brier"] = (1.0 - result["brier"] / (prevalence * (1.0 - prevalence))
                              if 0.0 < prevalence < 1.0 else math.nan)
    both = 0.0 < observed < n
    group = codes if clustered else None

    intercept_text = (f"calibration-in-the-large: intercept a of logit P(y = 1) = a + logit(score), the logit "
                      f"of the score as an offset (slope fixed at 1); maximum likelihood, Wald {level:.0%} "
                      f"interval{robust}; 0 is perfect, > 0 means the scores are too low on average")
    if both:
        beta, cov, converged = _fit_logistic(y, np.ones((y.size, 1)), x, group, n_clusters)
        result["intercept"] = part(float(beta[0]), math.sqrt(cov[0, 0]) if converged else math.nan,
                                   intercept_text if converged else "not estimable: the fit did not converge")
    else:
        result["intercept"] = part(math.nan, math.nan, undefined)

    slope_text = (f"calibration slope b of logit P(y = 1) = a + b logit(score) (logistic recalibration); "
                  f"maximum likelihood, Wald {level:.0%} interval{robust}; 1 is perfect, < 1 means the scores are "
                  "too extreme")
    if not both:
        result["slope"] = part(math.nan, math.nan, undefined)
    elif np.ptp(x) == 0:
        result["slope"] = part(math.nan, math.nan, "not estimable: every score is the same")
    elif x[y == 0].max() <= x[y == 1].min() or x[y == 1].max() <= x[y == 0].min():
        result["slope"] = part(math.nan, math.nan, "not estimable: the scores separate the outcomes completely, "
                                                   "so the maximum-likelihood slope is infinite")
    else:
        beta, cov, converged = _fit_logistic(y, np.column_stack([np.ones(y.size), x]), np.zeros(y.size), group,
                                             n_clusters)
        result["slope"] = part(float(beta[1]), math.sqrt(cov[1, 1]) if converged else math.nan,
                               slope_text if converged else "not estimable: the fit did not converge")
        result["slope"]["intercept"] = float(beta[0]) if converged else math.nan

    expected = float(p.sum())
    if both and expected > 0:
        design_effect, de_text = 1.0, ""
        if clustered:
            sizes = np.bincount(codes, minlength=n_clusters).astype(np.float64)
            estimate = ratio_design_effect(np.bincount(codes, weights=y, minlength=n_clusters), sizes)
            design_effect = max(1.0, estimate) if math.isfinite(estimate) else n / n_clusters
            de_text = f", design effect {design_effect:.2f} over {n_clusters} patients (ratio estimator)"
        ratio = observed / expected
        se = math.sqrt(design_effect * (1.0 - observed / n) / observed)
        result["oe_ratio"] = {
            "value": ratio, "ci": (ratio * math.exp(-z * se), ratio * math.exp(z * se)), "se_log": se,
            "observed": observed, "expected": expected,
            "method": (f"observed / expected events ({observed:g} / {expected:.1f}); interval "
                       f"exp(log(O/E) +- z sqrt(DE (1 - O/N) / O)) (binomial O, E fixed; Debray et al. 2017)"
                       f"{de_text}; 1 is perfect"),
        }
    else:
        result["oe_ratio"] = {"value": math.nan, "ci": (math.nan, math.nan), "se_log": math.nan,
                              "observed": observed, "expected": expected, "method": undefined}
    return result


# --------------------------------------------------------------------------------------------------
# Decision curve analysis
# --------------------------------------------------------------------------------------------------

DECISION_THRESHOLDS: tuple[float, ...] = tuple(round(k / 100, 2) for k in range(1, 100))


def decision_curve(labels: np.ndarray, scores: np.ndarray, thresholds: Sequence[float] = DECISION_THRESHOLDS,
                   prevalence: float | None = None) -> dict[str, Any]:
    """Net benefit against threshold probability (Vickers & Elkin 2006, Med Decis Making 26:565).

    At threshold probability ``t`` a sample is treated when its score is at least ``t``;
    ``NB = TP / N - FP / N * t / (1 - t)``, written as ``Se pi - (1 - Sp)(1 - pi) t / (1 - t)``
    so that a stated prevalence ``pi`` can replace the test set's (an enriched or case-control test
    set: Pfeiffer & Gail 2020). Treat-all: ``pi - (1 - pi) t / (1 - t)``; treat-none: 0.

    Args:
        labels: 0/1 outcomes; scores: probabilities.
        thresholds: threshold probabilities, each in (0, 1).
        prevalence: the stated prevalence; None uses the test set's.

    Returns:
        ``{"thresholds", "net_benefit", "treat_all", "treat_none"}`` (lists of equal length) and
        ``"prevalence"`` (the one used).

    Raises:
        ValueError: a threshold outside (0, 1), a prevalence outside [0, 1], or one class missing.
    """
    y = _binary_array(labels, "labels")
    s = _score_array(scores)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.size and (t.min() <= 0.0 or t.max() >= 1.0):
        raise ValueError("decision-curve thresholds must lie strictly between 0 and 1")
    m, n = int(y.sum()), int(y.size - y.sum())
    if m == 0 or n == 0:
        raise ValueError(f"a decision curve needs both classes; got {m} positives and {n} negatives")
    pi = float(m / y.size) if prevalence is None else float(prevalence)
    if not 0.0 <= pi <= 1.0:
        raise ValueError(f"prevalence must lie in [0, 1], got {prevalence}")
    positives, negatives = np.sort(s[y == 1]), np.sort(s[y == 0])
    sensitivity = (m - np.searchsorted(positives, t, side="left")) / m
    false_positive_rate = (n - np.searchsorted(negatives, t, side="left")) / n
    odds = t / (1.0 - t)
    return {
        "thresholds": t.tolist(),
        "net_benefit": (sensitivity * pi - false_positive_rate * (1.0 - pi) * odds).tolist(),
        "treat_all": (pi - (1.0 - pi) * odds).tolist(),
        "treat_none": np.zeros(t.size).tolist(),
        "prevalence": pi,
    }


def multiclass_posterior_ci(statistic: str, confusion: np.ndarray | Sequence[Sequence[float]], level: float = 0.95,
                            scale: float = 1.0, n_draws: int = 20000, seed: int = 0) -> tuple[float, float]:
    """Posterior interval of the macro average of a one-vs-rest F1, MCC or balanced accuracy.

    The multi-class form of :func:`confusion_posterior_ci`: a Jeffreys ``Dirichlet(c_ij + 1/2)``
    posterior on the k x k confusion matrix (rows true, columns predicted; counts times ``scale``),
    each draw's one-vs-rest statistic per class averaged over classes, with the edge rule (the bound
    is the edge where the estimate lies on it).

    Returns:
        ``(lower, upper)``.
    """
    if statistic not in COUNT_STATISTIC_RANGES:
        raise ValueError(f"posterior interval for {statistic!r} is not available; use one of "
                         f"{', '.join(COUNT_STATISTIC_RANGES)}")
    table = np.asarray(confusion, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] != table.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {table.shape}")
    k = table.shape[0]

    def macro(cells: np.ndarray) -> np.ndarray:  # cells (draws, k, k)
        tp = np.diagonal(cells, axis1=1, axis2=2)
        fn = cells.sum(axis=2) - tp
        fp = cells.sum(axis=1) - tp
        tn = cells.sum(axis=(1, 2))[:, None] - tp - fn - fp
        return metrics_from_counts(tp, fp, tn, fn)[statistic].mean(axis=1)

    point = float(macro(table[None])[0])
    draws = np.random.default_rng(seed).dirichlet(table.ravel() * float(scale) + 0.5, size=int(n_draws))
    values = macro(draws.reshape(-1, k, k))
    alpha = 1.0 - level
    lower, upper = (float(v) for v in np.quantile(values[np.isfinite(values)], [alpha / 2.0, 1.0 - alpha / 2.0]))
    low_edge, high_edge = COUNT_STATISTIC_RANGES[statistic]
    if point >= high_edge:
        upper = high_edge
    if point <= low_edge:
        lower = low_edge
    return (min(lower, point), max(upper, point))
