"""The METRIC dicts of the binary metrics on one set of samples, each with the interval of its
method: proportions (Wilson or Clopper-Pearson, at the effective sample size where patients contribute
several samples), the AUC (DeLong / Obuchowski, Newcombe at 0 and 1), the others from the
patient-clustered bootstrap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medrec.report import stats
from medrec.report.analysis.prevalence import TEST_SET_PREVALENCE
from medrec.report.analysis.schema import _metric
from medrec.report.analysis.settings import _Settings

_PROPORTIONS = {
    "sensitivity": ("tp", ("tp", "fn")),
    "specificity": ("tn", ("tn", "fp")),
    "ppv": ("tp", ("tp", "fp")),
    "npv": ("tn", ("tn", "fn")),
    "accuracy": (("tp", "tn"), ("tp", "fp", "tn", "fn")),
}
_BOOTSTRAP_ONLY = ("balanced_accuracy", "f1", "mcc", "pr_auc", "brier", "ece")


def _boot_names(y: np.ndarray, patients: np.ndarray, settings: _Settings,
                names: Sequence[str] | None = None) -> list[str]:
    """The metrics whose interval needs the bootstrap on these samples.

    Proportions and the AUC have analytic intervals that account for patients with several samples
    (design effect, Obuchowski), so only the metrics without one are bootstrapped.
    """
    wanted = list(names) if names is not None else list(stats.BOOTSTRAP_STATISTICS)
    boot_names = [name for name in wanted if name in _BOOTSTRAP_ONLY
                  or (name == "auc" and settings.auc_method == "bootstrap")]
    if not 0 < int(y.sum()) < y.size:
        boot_names = [name for name in boot_names if name not in ("auc", "pr_auc")]
    return boot_names if y.size else []


# Per proportion: (success mask, denominator mask) from labels y and predictions p.
_PROPORTION_MASKS = {
    "sensitivity": lambda y, p: (p == 1, y == 1),
    "specificity": lambda y, p: (p == 0, y == 0),
    "ppv": lambda y, p: (y == 1, p == 1),
    "npv": lambda y, p: (y == 0, p == 0),
    "accuracy": lambda y, p: (y == p, np.ones(y.size, dtype=bool)),
}


def _proportion_metric(name: str, value: float, y: np.ndarray, pred: np.ndarray, codes: np.ndarray,
                       settings: _Settings) -> dict[str, Any]:
    """A proportion's METRIC: Wilson (or Clopper-Pearson), at the effective sample size when some
    patient contributes several samples to its denominator."""
    success, denominator = _PROPORTION_MASKS[name](y, pred)
    numerator, total = int(np.sum(success & denominator)), int(np.sum(denominator))
    n_codes = int(codes.max()) + 1 if codes.size else 0
    per_patient = np.bincount(codes[denominator], minlength=n_codes)
    if total and per_patient.max() > 1:
        hits = np.bincount(codes[denominator & success], minlength=n_codes)
        result = stats.clustered_proportion_ci(hits, per_patient, settings.ci_method)
        patients_in = int(np.sum(per_patient > 0))
        return _metric(value, result.ci, f"{result.method}; {total} samples from {patients_in} patients are not "
                       "independent", numerator=numerator, denominator=total,
                       design_effect=result.design_effect, n_effective=result.n_effective)
    return _metric(value, stats.proportion_ci(numerator, total, settings.ci_method), settings.proportion_name,
                   numerator=numerator, denominator=total)


def _auc_metric(value: float, y: np.ndarray, s: np.ndarray, patients: np.ndarray, settings: _Settings,
                boot: dict[str, stats.BootstrapResult]) -> dict[str, Any]:
    n_samples, n_patients = int(y.size), int(np.unique(patients).size)
    clustered = n_patients < n_samples
    if settings.auc_method == "bootstrap" and "auc" in boot:
        result = boot["auc"]
        if math.isfinite(result.ci[0]) and result.ci[1] > result.ci[0]:
            return _metric(value, result.ci, result.method)
        fallback = stats.auc_ci(y, s, patients if clustered else None)
        return _metric(value, fallback.ci, f"{result.method} has no width here (every replicate equal), so: "
                       f"{fallback.method}")
    interval = stats.auc_ci(y, s, patients if clustered and settings.auc_method == "auto" else None)
    method = interval.method
    if clustered and settings.auc_method == "delong":
        method += f"; treats the {n_samples} samples of {n_patients} patients as independent (auc_method='delong')"
    return _metric(value, interval.ci, method, se=math.sqrt(interval.variance))


def _bootstrap_metric(name: str, value: float, y: np.ndarray, pred: np.ndarray, patients: np.ndarray,
                      settings: _Settings, result: stats.BootstrapResult) -> dict[str, Any]:
    """F1, MCC, balanced accuracy: BCa with a posterior fallback; PR-AUC, Brier, ECE: percentile,
    with a conservative bounded-statistic interval where every replicate is equal."""
    if name in stats.COUNT_STATISTIC_RANGES:
        ci, method = stats.count_statistic_ci(name, y, pred, patients, result, seed=settings.seed)
        return _metric(value, ci, method)
    if not math.isfinite(value) or (math.isfinite(result.ci[0]) and result.ci[1] > result.ci[0]):
        return _metric(value, result.ci, result.method)
    units = int(np.unique(patients[y == 1]).size) if name == "pr_auc" else int(np.unique(patients).size)
    what = "patients holding positive samples" if name == "pr_auc" else "patients"
    ci = stats.bounded_statistic_ci(value, units)
    return _metric(value, ci, f"Wilson score interval of the value as a proportion of the {units} {what} "
                   "(conservative for a statistic in [0, 1]: the Bernoulli has the largest variance of any [0, 1] "
                   "variable with that mean); every bootstrap replicate equals the estimate here, so the bootstrap "
                   "gives no interval")


def _binary_metrics(y: np.ndarray, s: np.ndarray, pred: np.ndarray, patients: np.ndarray,
                    settings: _Settings, names: Sequence[str] | None = None,
                    boot: dict[str, stats.BootstrapResult] | None = None) -> dict[str, dict[str, Any]]:
    """METRIC dicts for every binary metric (or the given names) on one set of samples.

    ``boot``: the bootstrap results of :func:`_boot_names`, when already computed (shared weights).
    PPV and NPV carry the prevalence they hold at (this set's) and its source.
    """
    wanted = list(names) if names is not None else list(stats.BOOTSTRAP_STATISTICS)
    point = stats.binary_point_metrics(y, s, pred, n_bins=settings.n_bins)
    both_classes = 0 < int(y.sum()) < y.size
    _, codes = np.unique(patients, return_inverse=True)
    codes = codes.reshape(-1)

    if boot is None:
        boot = {}
        boot_names = _boot_names(y, patients, settings, names)
        if boot_names:
            boot = stats.cluster_bootstrap(boot_names, y, s, patients, n_boot=settings.n_boot, seed=settings.seed,
                                           predictions=pred, n_bins=settings.n_bins)  # type: ignore[assignment]

    out: dict[str, dict[str, Any]] = {}
    for name in wanted:
        if name in _PROPORTIONS:
            out[name] = _proportion_metric(name, point[name], y, pred, codes, settings)
            if name in ("ppv", "npv"):
                out[name]["prevalence"] = float(y.mean()) if y.size else math.nan
                out[name]["prevalence_source"] = TEST_SET_PREVALENCE
        elif name == "auc":
            if not both_classes:
                out[name] = _metric(math.nan, (math.nan, math.nan), "AUC undefined: only one class present")
            else:
                out[name] = _auc_metric(point[name], y, s, patients, settings, boot)
        elif name not in boot:
            out[name] = _metric(math.nan, (math.nan, math.nan), f"{name} undefined: only one class present")
        else:
            out[name] = _bootstrap_metric(name, point[name], y, pred, patients, settings, boot[name])
    return out


def _binary_section(y: np.ndarray, s: np.ndarray, pred: np.ndarray, patients: np.ndarray,
                    settings: _Settings, boot: dict[str, stats.BootstrapResult] | None = None) -> dict[str, Any]:
    return {
        "n_samples": int(y.size),
        "n_patients": int(np.unique(patients).size),
        "n_positive": int(y.sum()),
        "n_negative": int(y.size - y.sum()),
        "prevalence": float(y.mean()) if y.size else math.nan,
        "metrics": _binary_metrics(y, s, pred, patients, settings, boot=boot),
        "confusion_matrix": stats.confusion_counts(y, pred),
    }
