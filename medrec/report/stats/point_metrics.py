"""Point estimates of the binary metrics: confusion counts, the rates built from them, calibration error.

* :func:`confusion_counts`, :func:`metrics_from_counts`: sensitivity, specificity, PPV, NPV, accuracy,
  balanced accuracy, F1 and MCC (vectorised, so the bootstrap evaluates them on replicate counts).
* :func:`brier_score`, :func:`expected_calibration_error`, :func:`reliability_curve`.
* :func:`binary_point_metrics`: scikit-learn where it has the metric (``roc_auc_score``,
  ``average_precision_score``), plain counts otherwise.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from medrec.report.stats.inputs import _binary_array, _score_array


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
