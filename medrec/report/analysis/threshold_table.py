"""Thresholds of a binary report: one chosen on these data by a rule of :mod:`medrec.thresholds`
(exploratory), and the table of metrics at the operating threshold, a grid and target sensitivities."""

from __future__ import annotations

from typing import Any

import numpy as np

from medrec import thresholds
from medrec.errors import ConfigError
from medrec.report import stats
from medrec.thresholds import parse_rule

GRID_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TARGET_SENSITIVITIES: tuple[float, ...] = (0.90, 0.95)


def choose_threshold(labels: np.ndarray, scores: np.ndarray, rule: str) -> float:
    """A threshold chosen on these data by a rule of :mod:`medrec.thresholds` (``score >= threshold`` is positive).

    Raises:
        ConfigError: unknown rule, only one class present, or no threshold meets the rule.
    """
    parsed = parse_rule(rule, "exploratory_threshold")
    try:
        return thresholds.choose_threshold(np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64),
                                           parsed).value
    except ValueError as e:
        raise ConfigError(f"choosing a threshold by {rule!r} on these data: {e}") from e


def _threshold_table(y: np.ndarray, s: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    rows: dict[float, str] = {float(t): "" for t in GRID_THRESHOLDS}
    rows[float(threshold)] = "operating threshold"
    if 0 < y.sum() < y.size:
        for target in TARGET_SENSITIVITIES:
            chosen = choose_threshold(y, s, f"sensitivity:{target}")
            note = f"reaches sensitivity >= {target:.2f} on these data (chosen on the test data)"
            rows[chosen] = f"{rows[chosen]}; {note}" if rows.get(chosen) else note
    table = []
    for cut in sorted(rows):
        pred = (s >= cut).astype(np.int8)
        counts = stats.confusion_counts(y, pred)
        values = stats.metrics_from_counts(**counts)
        table.append({"threshold": cut, "sensitivity": float(values["sensitivity"]),
                      "specificity": float(values["specificity"]), "ppv": float(values["ppv"]),
                      "npv": float(values["npv"]), **counts, "note": rows[cut]})
    return table
