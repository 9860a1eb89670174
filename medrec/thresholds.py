"""Choice of the binary operating threshold on validation scores.

The rule is ``prediction = positive if score >= threshold``. Candidate thresholds are the
distinct validation scores (scikit-learn's ROC curve), so the validation sensitivity and
specificity reported with a threshold are exactly what that rule gives on the validation split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_curve

from medrec.errors import ConfigError

THRESHOLD_METHODS: tuple[str, ...] = ("youden", "target_sensitivity")


@dataclass(frozen=True)
class ThresholdChoice:
    """An operating threshold and how it was chosen.

    Attributes:
        value: the threshold; a sample is positive when its score is >= value.
        method: ``"youden"`` or ``"target_sensitivity:<target>"``.
        sensitivity: sensitivity at ``value`` on the scores it was chosen on.
        specificity: specificity at ``value`` on the scores it was chosen on.
    """

    value: float
    method: str
    sensitivity: float
    specificity: float

    def to_dict(self) -> dict:
        return asdict(self)


def _check_inputs(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y_true).astype(bool).ravel()
    values = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != values.shape:
        raise ValueError(f"y_true has {labels.size} entries but scores has {values.size}")
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or infinite values")
    if labels.all() or not labels.any():
        raise ValueError(
            "threshold choice needs both positive and negative samples; "
            f"got {int(labels.sum())} positive of {labels.size}"
        )
    return labels, values


def choose_threshold(
    y_true: np.ndarray,
    scores: np.ndarray,
    method: str = "youden",
    target_sensitivity: float = 0.95,
) -> ThresholdChoice:
    """Choose the operating threshold of a binary classifier.

    ``youden`` maximises Youden's J = sensitivity + specificity - 1 (ties: the higher
    threshold, i.e. the more specific one). ``target_sensitivity`` walks the thresholds from
    high to low and takes the first one whose sensitivity reaches the target: the highest
    threshold (best specificity) that still meets the target.

    Args:
        y_true: 1 for the positive class, 0 otherwise.
        scores: the positive-class probability (or any score, higher = more positive).
        method: ``"youden"`` or ``"target_sensitivity"``.
        target_sensitivity: the sensitivity to reach, in (0, 1].

    Returns:
        The chosen :class:`ThresholdChoice`.

    Raises:
        ConfigError: unknown method or target outside (0, 1].
        ValueError: only one class present, or mismatched / non-finite inputs.
    """
    if method not in THRESHOLD_METHODS:
        raise ConfigError(f"threshold.method: {method!r} is not one of {', '.join(THRESHOLD_METHODS)}")
    if not 0.0 < target_sensitivity <= 1.0:
        raise ConfigError(f"threshold.target_sensitivity: {target_sensitivity} must be in (0, 1]")
    labels, values = _check_inputs(y_true, scores)
    fpr, tpr, thresholds = roc_curve(labels, values, drop_intermediate=False)
    # roc_curve starts with +inf (nothing positive); it is never a usable operating point.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if method == "youden":
        index = int(np.argmax(tpr - fpr))  # argmax takes the first maximum: the highest threshold
        name = "youden"
    else:
        reaching = np.flatnonzero(tpr >= target_sensitivity - 1e-12)
        index = int(reaching[0])  # tpr reaches 1.0 at the lowest threshold, so this exists
        name = f"target_sensitivity:{target_sensitivity:g}"
    return ThresholdChoice(
        value=float(thresholds[index]),
        method=name,
        sensitivity=float(tpr[index]),
        specificity=float(1.0 - fpr[index]),
    )


def sensitivity_specificity(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of the rule ``score >= threshold``."""
    labels, values = _check_inputs(y_true, scores)
    predicted = values >= threshold
    sensitivity = float((predicted & labels).sum() / labels.sum())
    specificity = float((~predicted & ~labels).sum() / (~labels).sum())
    return sensitivity, specificity
