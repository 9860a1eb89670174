"""Intervals of F1, MCC and balanced accuracy that keep their width where the bootstrap's has none.

:func:`count_statistic_ci`: BCa intervals (:func:`bca_interval`) on the bootstrap replicates, with a
Jeffreys-posterior fallback (:func:`confusion_posterior_ci`; :func:`multiclass_posterior_ci` for a
macro average over classes) where every replicate is equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from medrec.report.stats.bootstrap import BootstrapResult
from medrec.report.stats.inputs import _binary_array, _cluster_codes
from medrec.report.stats.point_metrics import metrics_from_counts

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
