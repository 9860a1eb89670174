"""Decision curve analysis: net benefit against threshold probability (Vickers & Elkin 2006).

:func:`decision_curve`, with the test set's prevalence or a stated one. Neither scipy nor
scikit-learn has it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medrec.report.stats.inputs import _binary_array, _score_array

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
