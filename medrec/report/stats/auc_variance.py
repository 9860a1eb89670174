"""Nonparametric variance of the ROC AUC: DeLong's, and Obuchowski's with patients as clusters.

* :func:`delong_auc_variance`, :func:`delong_ci`: the fast DeLong algorithm of Sun & Xu (2014, IEEE
  Signal Processing Letters 21:1389), O(n log n) through midranks (:func:`midranks`). Neither scipy
  nor scikit-learn offers DeLong.
* :func:`obuchowski_auc_variance`: the clustered AUC variance of Obuchowski (1997, Biometrics 53:567),
  patients as clusters; DeLong's with one sample per patient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from medrec.report.stats.inputs import _binary_array, _cluster_codes, _z


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
