"""Proportions from patients with several samples: the design effect and the interval it widens.

:func:`clustered_proportion_ci`: a proportion from patients with several samples: Wilson at the
effective sample size n / DE, the design effect from the ratio estimator (:func:`ratio_design_effect`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medrec.report.stats.proportions import PROPORTION_METHODS, _proportion_interval


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
