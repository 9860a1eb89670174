"""Confidence intervals of binomial proportions and of averages of proportions.

* :func:`proportion_ci`: Wilson score and Clopper-Pearson intervals (scipy gives the beta / normal
  quantiles; the Wald interval is deliberately absent, it fails at 0/n and n/n).
* :func:`mover_mean_ci`, :func:`mean_proportion_ci`: the interval of a macro average of proportions
  (multi-class sensitivity, ...) by the MOVER from each proportion's own Wilson interval (Zou &
  Donner 2008): neither scipy nor statsmodels has one, and a percentile bootstrap collapses to a
  point when every class's proportion is 0 or 1.
* :func:`bounded_statistic_ci`: a statistic in [0, 1] that is a mean over units, given the Wilson
  interval of a proportion (conservative), for when every bootstrap replicate is equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from medrec.report.stats.inputs import _z

PROPORTION_METHODS: tuple[str, ...] = ("wilson", "clopper-pearson")


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
