"""The multi-class report: per-class one-vs-rest metrics, macro averages whose intervals keep a width
at 0 and 1, the confusion matrix, subgroups and ROC curves per class."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from medrec.errors import InputError
from medrec.report import stats
from medrec.report.analysis.curves import _downsample
from medrec.report.analysis.methods import _macro_proportion_text, _multiclass_methods
from medrec.report.analysis.metrics import _PROPORTION_MASKS, _binary_metrics, _proportion_metric
from medrec.report.analysis.schema import SCHEMA_VERSION, _jsonable, _metric
from medrec.report.analysis.settings import _Settings
from medrec.report.analysis.subgroups import SMALL_GROUP, _age_band, _subgroup_columns, _subgroups
from medrec.report.analysis.table import _clean, _join_manifest, _text

_MACRO_PROPORTIONS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv")


def _macro_proportions(y: np.ndarray, pred: np.ndarray, codes: np.ndarray, n_classes: int,
                       settings: _Settings) -> dict[str, dict[str, Any]]:
    """Macro sensitivity, specificity, PPV and NPV with an interval that keeps its width at 0 and 1.

    A percentile bootstrap of a macro average has no width when every class's proportion is 0 or 1
    (a model that predicts one class for everything, or a perfect one), which reads as certainty.
    The interval is the MOVER of the per-class intervals (:func:`~medrec.report.stats.mover_mean_ci`),
    each the one a binary report gives that proportion (Wilson or Clopper-Pearson, at the effective
    sample size where patients contribute several samples): one closed-form rule, which holds the
    estimate and keeps a width wherever the per-class intervals have one. Taking the classes as
    independent is exact for sensitivity and PPV (disjoint samples, given the class and prediction
    counts) and errs on the wide side for specificity and NPV, whose classes' errors exclude each
    other within a sample (negative covariance); a patient with samples of several classes links
    them, which it ignores.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in _MACRO_PROPORTIONS:
        per_class = []
        for k in range(n_classes):
            yk, pk = (y == k).astype(np.int8), (pred == k).astype(np.int8)
            success, denominator = _PROPORTION_MASKS[name](yk, pk)
            value = np.sum(success & denominator) / denominator.sum() if denominator.any() else math.nan
            per_class.append(_proportion_metric(name, float(value), yk, pk, codes, settings))
        values = np.array([metric["value"] for metric in per_class], dtype=np.float64)
        if not np.isfinite(values).all():
            continue  # undefined for some class (no sample, or no prediction): the bootstrap's nan stands
        bounds = np.array([metric["ci95"] for metric in per_class], dtype=np.float64)
        out[name] = _metric(float(values.mean()), stats.mover_mean_ci(values, bounds[:, 0], bounds[:, 1]),
                            f"macro average over {n_classes} classes (one-vs-rest); {_macro_proportion_text(settings)}")
    return out


def _macro_without_width(macro: dict[str, dict[str, Any]], per_class: list[dict[str, Any]], confusion: np.ndarray,
                         y: np.ndarray, patients: np.ndarray, settings: _Settings) -> dict[str, dict[str, Any]]:
    """Macro metrics whose percentile bootstrap has no width (a perfect, or a one-class, model).

    F1 and MCC: the Jeffreys posterior of the confusion matrix (:func:`~medrec.report.stats.multiclass_posterior_ci`).
    AUC: the mean of the per-class interval bounds (each class's logit / Newcombe interval), and
    PR-AUC, Brier, ECE: the mean over classes of conservative bounded-statistic intervals; a mean of
    bounds is the interval of the mean if the classes' errors were perfectly correlated, and wider
    than needed otherwise.
    """
    n_classes = confusion.shape[0]
    n_patients = int(np.unique(patients).size)
    scale = n_patients / y.size if n_patients < y.size else 1.0
    out = {}
    for name, metric in macro.items():
        lower, upper = metric["ci95"]
        value = metric["value"]
        if not (isinstance(value, float) and math.isfinite(value)) or (math.isfinite(lower) and upper > lower):
            continue
        head = f"macro average over {n_classes} classes (one-vs-rest); every bootstrap replicate is equal, so: "
        if name in stats.COUNT_STATISTIC_RANGES:
            ci = stats.multiclass_posterior_ci(name, confusion, scale=scale, seed=settings.seed)
            method = head + ("equal-tailed 95% posterior interval under a Jeffreys Dirichlet prior (1/2 per cell) on "
                             "the confusion matrix" + (f", counts scaled to the {n_patients} patients" if scale < 1
                                                       else "") + ", bounded by the metric's edge")
        elif name == "auc" and all(entry["metrics"]["auc"]["ci95"][0] is not None
                                   and math.isfinite(entry["metrics"]["auc"]["ci95"][0]) for entry in per_class):
            bounds = np.array([entry["metrics"]["auc"]["ci95"] for entry in per_class], dtype=np.float64)
            ci = (float(bounds[:, 0].mean()), float(bounds[:, 1].mean()))
            method = head + "the mean of the per-class AUC interval bounds (conservative)"
        elif name in ("pr_auc", "brier", "ece"):
            bounds = []
            for k in range(n_classes):
                units = int(np.unique(patients[y == k]).size) if name == "pr_auc" else n_patients
                bounds.append(stats.bounded_statistic_ci(value, units))
            ci = (float(np.mean([b[0] for b in bounds])), float(np.mean([b[1] for b in bounds])))
            method = head + ("the mean over classes of the Wilson score interval of the value as a proportion of "
                             "that class's patients (conservative for a statistic in [0, 1])")
        else:
            continue
        out[name] = _metric(value, ci, method)
    return out


def _analyse_multiclass(predictions: pd.DataFrame, class_columns: list[str], threshold_source: str,
                        manifest: pd.DataFrame | None, subgroups: Sequence[str], settings: _Settings) -> dict[str, Any]:
    classes = [column[len("score_"):] for column in class_columns]
    data, reasons = _clean(predictions, class_columns)
    warnings: list[str] = []
    labels = _text(data["label"])
    unknown = ~labels.isin(classes)
    if unknown.any():
        reasons["unknown label"] = int(unknown.sum())
        warnings.append(f"{int(unknown.sum())} rows have labels outside {classes} "
                        f"(e.g. {sorted(set(labels[unknown]))[:3]}) and were excluded")
        data, labels = data[~unknown].reset_index(drop=True), labels[~unknown].reset_index(drop=True)
    if data.empty:
        raise InputError(f"predictions: no row is usable for metrics (excluded: {reasons or 'none'})")
    index = {name: k for k, name in enumerate(classes)}
    y = labels.map(index).to_numpy().astype(np.int64)
    prob = data[class_columns].to_numpy(dtype=np.float64)
    if prob.min() < 0.0 or prob.max() > 1.0:
        raise InputError(f"predictions: {', '.join(class_columns)} must be probabilities in [0, 1]; found values "
                         f"from {prob.min():g} to {prob.max():g}")
    pred = prob.argmax(axis=1)
    patients = data["patient_id"].to_numpy().astype(str)
    n_classes = len(classes)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)

    boot_names = [name for name in stats.BOOTSTRAP_STATISTICS if name != "accuracy"]
    if any(not 0 < np.sum(y == k) < y.size for k in range(n_classes)):
        boot_names = [name for name in boot_names if name not in ("auc", "pr_auc")]
        warnings.append("some class has no sample (or every sample): AUC and PR-AUC are undefined")
    boot = stats.cluster_bootstrap_multiclass(boot_names, y, prob, pred, patients, n_boot=settings.n_boot,
                                              seed=settings.seed, n_bins=settings.n_bins)
    clustered = np.unique(patients).size < y.size
    per_class = []
    for k, name in enumerate(classes):
        yk, sk, pk = (y == k).astype(np.int8), prob[:, k], (pred == k).astype(np.int8)
        metrics = _binary_metrics(yk, sk, pk, patients, settings, names=("sensitivity", "specificity", "ppv", "auc"))
        f1_ci, f1_method = stats.count_statistic_ci("f1", yk, pk, patients, boot["per_class"][k]["f1"],
                                                    seed=settings.seed)
        metrics["f1"] = _metric(boot["per_class"][k]["f1"].value, f1_ci, f1_method)
        per_class.append({"class": name, "n": int(yk.sum()), "metrics": metrics})
    macro = {
        metric: _metric(result.value, result.ci, f"macro average over {n_classes} classes (one-vs-rest); "
                        f"{result.method}")
        for metric, result in boot["macro"].items()
    }
    macro.update(_macro_without_width(macro, per_class, confusion, y, patients, settings))
    _, patient_codes = np.unique(patients, return_inverse=True)
    macro.update(_macro_proportions(y, pred, patient_codes.reshape(-1), n_classes, settings))
    accuracy_hits = int(np.trace(confusion))
    accuracy_metric = _proportion_metric("accuracy", accuracy_hits / y.size, y, pred, patient_codes.reshape(-1),
                                         settings)
    # Top level: true multi-class accuracy; every other metric is its one-vs-rest macro average
    # (balanced accuracy = macro sensitivity, as scikit-learn defines it for several classes).
    undefined = _metric(math.nan, (math.nan, math.nan), "undefined: some class is absent")
    metrics = {name: macro.get(name, undefined) for name in stats.BOOTSTRAP_STATISTICS}
    metrics["accuracy"] = accuracy_metric
    metrics["balanced_accuracy"] = {**macro["sensitivity"], "method": "macro-averaged sensitivity; "
                                    + macro["sensitivity"]["method"]}
    joined = _join_manifest(data, manifest)
    if "age" in joined.columns:
        joined["age_band"] = _age_band(joined["age"])
    subgroup_columns = _subgroup_columns(joined, subgroups)

    def group_metrics(group: str, mask: np.ndarray) -> dict[str, Any]:
        counts = np.bincount(y[mask], minlength=n_classes)
        hits = int(np.sum(y[mask] == pred[mask]))
        n = int(mask.sum())
        return {"group": group, "n": n, "n_per_class": dict(zip(classes, counts.tolist(), strict=True)),
                "n_patients": int(np.unique(patients[mask]).size),
                "small": bool(counts.min() < SMALL_GROUP),
                "metrics": {"accuracy": _metric(hits / n, stats.proportion_ci(hits, n, settings.ci_method),
                                                settings.proportion_name, numerator=hits, denominator=n)}}

    curves: dict[str, Any] = {"roc": {}}
    for k, name in enumerate(classes):
        yk = (y == k).astype(np.int8)
        if 0 < yk.sum() < yk.size:
            fpr, tpr, _ = roc_curve(yk, prob[:, k])
            keep = _downsample(fpr.size)
            curves["roc"][name] = {"fpr": fpr[keep], "tpr": tpr[keep]}
    report = {
        "schema_version": SCHEMA_VERSION,
        "task": "multiclass",
        "classes": classes,
        "positive_label": None,
        "n_rows": int(len(predictions)),
        "n_samples": int(y.size),
        "n_patients": int(np.unique(patients).size),
        "n_per_class": dict(zip(classes, np.bincount(y, minlength=n_classes).tolist(), strict=True)),
        "n_excluded": int(sum(reasons.values())),
        "excluded_reasons": reasons,
        "threshold": None,
        "threshold_source": threshold_source or "argmax (multi-class)",
        "prevalence": None,
        "metrics": metrics,
        "confusion_matrix": confusion.tolist(),
        "patient_level": None,
        "threshold_table": [],
        "prevalence_adjusted": None,
        "calibration": None,
        "subgroups": _subgroups(joined, subgroup_columns, settings, group_metrics),
        "comparison": None,
        "multiclass": {"classes": classes, "confusion_matrix": confusion.tolist(), "per_class": per_class,
                       "macro": {name: macro[name] for name in ("sensitivity", "specificity", "ppv", "f1", "auc")
                                 if name in macro}},
        "curves": curves,
        "flagged": {"false_negatives": [], "false_positives": []},
        "methods": _multiclass_methods(settings, clustered),
        "warnings": warnings,
    }
    return _jsonable(report)
