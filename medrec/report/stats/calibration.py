"""Calibration of predicted probabilities: logistic recalibration, observed / expected, scaled Brier.

:func:`logistic_calibration`: calibration intercept and slope with Wald intervals, observed /
expected, scaled Brier. Neither scipy nor scikit-learn has these (statsmodels, which would fit the
recalibration models, is not a dependency; two-parameter Newton iterations do not justify one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from medrec.report.stats.clustered_proportions import ratio_design_effect
from medrec.report.stats.inputs import _binary_array, _cluster_codes, _score_array, _z
from medrec.report.stats.point_metrics import brier_score

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
