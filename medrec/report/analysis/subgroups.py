"""Subgroups: age bands, the columns the metrics are broken down by (the defaults found, and the
ones asked for), and the metrics of each group (binary here; multi-class passes its own)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medrec.errors import ConfigError
from medrec.report.analysis.metrics import _binary_metrics
from medrec.report.analysis.settings import _Settings
from medrec.report.analysis.table import _text

AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<40", -math.inf, 40.0), ("40-59", 40.0, 60.0), ("60-79", 60.0, 80.0), (">=80", 80.0, math.inf),
)
DEFAULT_SUBGROUPS: tuple[str, ...] = ("manufacturer", "sex", "age_band")
SMALL_GROUP = 10  # a subgroup with fewer positives or negatives than this is flagged "small"


def _age_band(ages: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(ages, errors="coerce")
    band = pd.Series("unknown", index=ages.index, dtype=object)
    for name, lower, upper in AGE_BANDS:
        band[(numeric >= lower) & (numeric < upper)] = name
    return band


def _subgroup_columns(data: pd.DataFrame, subgroups: Sequence[str]) -> list[str]:
    columns = [column for column in DEFAULT_SUBGROUPS if column in data.columns]
    for column in subgroups:
        if column not in data.columns:
            raise ConfigError(f"subgroup column {column!r} is in neither the predictions nor the manifest; "
                              f"available: {', '.join(sorted(map(str, data.columns)))}")
        if column not in columns:
            columns.append(column)
    return columns


def _subgroups(data: pd.DataFrame, columns: Sequence[str], settings: _Settings,
               group_metrics: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for column in columns:
        values = _text(data[column]).replace("", "unknown")
        groups = []
        for group in sorted(values.unique(), key=lambda g: (g == "unknown", _band_order(g), g)):
            mask = (values == group).to_numpy()
            groups.append(group_metrics(group, mask))
        out[column] = groups
    return out


def _band_order(group: str) -> int:
    names = [name for name, _, _ in AGE_BANDS]
    return names.index(group) if group in names else len(names)


def _binary_group(y: np.ndarray, s: np.ndarray, pred: np.ndarray, patients: np.ndarray, settings: _Settings):
    def compute(group: str, mask: np.ndarray) -> dict[str, Any]:
        gy, gs, gp, gpat = y[mask], s[mask], pred[mask], patients[mask]
        n_pos = int(gy.sum())
        n_neg = int(gy.size - n_pos)
        return {
            "group": group, "n": int(gy.size), "n_positive": n_pos, "n_negative": n_neg,
            "n_patients": int(np.unique(gpat).size),
            "small": bool(n_pos < SMALL_GROUP or n_neg < SMALL_GROUP),
            "metrics": _binary_metrics(gy, gs, gp, gpat, settings, names=("sensitivity", "specificity", "auc")),
        }
    return compute
