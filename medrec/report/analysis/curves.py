"""The curves of a binary report, downsampled to small lists: ROC, precision-recall, reliability,
score histograms and the decision curve."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from medrec.report import stats
from medrec.report.analysis.prevalence import STATED_PREVALENCE, TEST_SET_PREVALENCE

MAX_CURVE_POINTS = 500


def _downsample(n: int, limit: int = MAX_CURVE_POINTS) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(int))


def _decision(y: np.ndarray, s: np.ndarray, prevalence: float | None, source: str) -> dict[str, Any] | None:
    """Net benefit of the model, treat-all and treat-none (Vickers & Elkin 2006), at the test set's
    prevalence and, when one is stated, at that one."""
    if not 0 < y.sum() < y.size:
        return None
    observed = stats.decision_curve(y, s)
    out: dict[str, Any] = {
        "thresholds": observed["thresholds"],
        "treat_none": observed["treat_none"],
        "test_set": {"prevalence": observed["prevalence"], "prevalence_source": TEST_SET_PREVALENCE,
                     "net_benefit": observed["net_benefit"], "treat_all": observed["treat_all"]},
        "stated": None,
    }
    if prevalence is not None:
        stated = stats.decision_curve(y, s, prevalence=prevalence)
        out["stated"] = {"prevalence": stated["prevalence"], "prevalence_source": source,
                         "net_benefit": stated["net_benefit"], "treat_all": stated["treat_all"]}
    return out


def _curves(y: np.ndarray, s: np.ndarray, n_bins: int, prevalence: float | None = None,
            prevalence_source: str = STATED_PREVALENCE) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    if 0 < y.sum() < y.size:
        fpr, tpr, thresholds = roc_curve(y, s)
        keep = _downsample(fpr.size)
        curves["roc"] = {"fpr": fpr[keep], "tpr": tpr[keep],
                         "thresholds": np.minimum(thresholds[keep], 1.0)}  # first threshold is +inf
        precision, recall, _ = precision_recall_curve(y, s)
        keep = _downsample(precision.size)
        curves["pr"] = {"recall": recall[keep], "precision": precision[keep]}
    else:
        curves["roc"] = None
        curves["pr"] = None
    curves["calibration"] = stats.reliability_curve(y, s, n_bins)
    edges = np.arange(21) / 20
    curves["histogram"] = {
        "bin_edges": edges,
        "positive": np.histogram(s[y == 1], bins=edges)[0],
        "negative": np.histogram(s[y == 0], bins=edges)[0],
    }
    curves["decision"] = _decision(y, s, prevalence, prevalence_source)
    return curves
