"""Validation metrics computed during training (AUC, loss, accuracy)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from medrec.train.calibration import negative_log_likelihood


def classification_auc(labels: np.ndarray, probabilities: np.ndarray, positive_index: int | None) -> float:
    """ROC AUC: binary on the positive class, else macro one-vs-rest over all classes.

    Args:
        labels: (n,) class indices.
        probabilities: (n, n_classes) rows summing to 1.
        positive_index: the positive class (binary) or None (multi-class).

    Returns:
        The AUC, or NaN when a class needed for it is absent from ``labels``.
    """
    targets = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if positive_index is not None:
        positives = targets == positive_index
        if positives.all() or not positives.any():
            return float("nan")
        return float(roc_auc_score(positives, probs[:, positive_index]))
    n_classes = probs.shape[1]
    if len(np.unique(targets)) < n_classes:
        return float("nan")
    return float(roc_auc_score(targets, probs, multi_class="ovr", average="macro", labels=list(range(n_classes))))


def validation_summary(logits: np.ndarray, labels: np.ndarray, positive_index: int | None) -> dict[str, float]:
    """AUC, mean cross-entropy and argmax accuracy of validation logits."""
    values = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(labels, dtype=np.int64)
    shifted = values - values.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return {
        "auc": classification_auc(targets, probabilities, positive_index),
        "loss": negative_log_likelihood(values, targets),
        "accuracy": float((probabilities.argmax(axis=1) == targets).mean()),
        "n": int(len(targets)),
    }
