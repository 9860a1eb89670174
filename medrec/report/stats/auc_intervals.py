"""Confidence intervals of an AUC that never have zero width.

:func:`auc_ci`: the AUC interval on the logit scale from the DeLong / Obuchowski variance, and
Newcombe's (2006) score interval (:func:`newcombe_auc_ci`) where that is undefined (AUC 0 or 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import expit

from medrec.report.stats.auc_variance import _obuchowski_covariance, delong_auc_variance
from medrec.report.stats.inputs import _binary_array, _cluster_codes, _z


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
