"""The top of page 1: the one-paragraph summary and the headline numbers in boxes under it."""

from __future__ import annotations

from collections.abc import Mapping

from medrec.report.document.flow import flow_sentence
from medrec.report.document.formatting import (
    _count_cell,
    _metric_cell,
    fmt_ci,
    fmt_count,
    fmt_metric,
    fmt_threshold,
    fmt_value,
    is_number,
)
from medrec.report.document.threshold import _short_source, threshold_kind


def summary_paragraph(report: Mapping) -> str:
    """The one-paragraph summary at the top of the report."""
    metrics = report.get("metrics") or {}
    first = (f"This report validates the classifier on {fmt_count(report.get('n_samples'))} samples "
             f"from {fmt_count(report.get('n_patients'))} patients")
    if is_number(report.get("prevalence")):
        first += f" (prevalence {fmt_value(report['prevalence'], 'pct')})"
    parts = [first + "."]
    if is_number(report.get("n_excluded")) and report["n_excluded"]:
        n = int(report["n_excluded"])
        parts.append(f"{n} row{' was' if n == 1 else 's were'} excluded from the analysis (see the cohort flow).")
    flow = flow_sentence(report)
    if flow:
        parts.append(flow)
    if report.get("task") == "multiclass":
        parts.append(f"Across {len(report.get('classes') or [])} classes, accuracy was "
                     f"{fmt_metric(metrics.get('accuracy'), 'accuracy')} and the macro-averaged sensitivity "
                     f"{fmt_metric(metrics.get('sensitivity'), 'sensitivity')}.")
    elif report.get("threshold") is not None:
        parts.append(
            f"At the operating threshold {fmt_threshold(report.get('threshold'))} ({_short_source(report)}), "
            f"sensitivity was {fmt_metric(metrics.get('sensitivity'), 'sensitivity')} and specificity "
            f"{fmt_metric(metrics.get('specificity'), 'specificity')}."
        )
    if metrics.get("auc") and report.get("task") != "multiclass":
        parts.append(f"The ROC AUC was {fmt_metric(metrics.get('auc'), 'auc')}.")
    adjusted = report.get("prevalence_adjusted")
    if adjusted and is_number(adjusted.get("prevalence")):
        source = f" ({adjusted['prevalence_source']})" if adjusted.get("prevalence_source") else ""
        parts.append(
            f"At the stated clinical prevalence of {fmt_value(adjusted['prevalence'], 'pct')}{source}, the expected "
            f"PPV is {fmt_metric(adjusted.get('ppv'), 'ppv')} and NPV {fmt_metric(adjusted.get('npv'), 'npv')}."
        )
    patient = report.get("patient_level") or {}
    if patient.get("metrics"):
        pm = patient["metrics"]
        parts.append(
            f"Per patient ({fmt_count(patient.get('n_patients'))} patients), sensitivity was "
            f"{fmt_metric(pm.get('sensitivity'), 'sensitivity')} and specificity "
            f"{fmt_metric(pm.get('specificity'), 'specificity')}."
        )
    lesion = report.get("lesion_level") or {}
    if lesion:
        hit_rate = lesion.get("hit_rate") or {}
        parts.append(
            f"Per lesion, the top finding lay inside a reference lesion in {_count_cell(hit_rate) or 'n/a'} "
            f"true-positive studies ({fmt_value(hit_rate.get('value'), 'pct')}, 95% CI "
            f"{fmt_ci(hit_rate.get('ci95'), 'pct')}) and the FROC CPM was "
            f"{fmt_value((lesion.get('froc') or {}).get('cpm'))} over {fmt_count(lesion.get('n_lesions'))} lesions."
        )
    acceptance = report.get("acceptance")
    if isinstance(acceptance, Mapping) and acceptance.get("criteria"):
        parts.append(f"Pre-specified acceptance criteria ({acceptance.get('source')}): {acceptance.get('n_pass')} of "
                     f"{len(acceptance['criteria'])} met, overall {acceptance.get('overall')}.")
    if threshold_kind(report) == "exploratory":
        parts.append("The threshold was chosen on these data: the threshold-dependent results are exploratory.")
    if (report.get("data_origin") or {}).get("synthetic"):
        parts.append("The scans are synthetic (medrec synth).")
    return " ".join(parts)


def key_figures(report: Mapping) -> list[tuple[str, str, str]]:
    """The headline numbers shown in boxes under the summary: (name, value, 95% CI)."""
    metrics = report.get("metrics") or {}
    shown = {"sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV", "npv": "NPV",
             "auc": "ROC AUC"}
    if report.get("task") == "multiclass":
        shown = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "f1": "Macro F1",
                 "auc": "Macro AUC"}
    result = []
    for name, label in shown.items():
        metric = metrics.get(name)
        if metric:
            value, ci = _metric_cell(metric, name)
            if name in ("ppv", "npv") and is_number(metric.get("prevalence")):
                where = "test set" if str(metric.get("prevalence_source", "")).startswith("test set") else "stated"
                label = f"{label} at {fmt_value(metric['prevalence'], 'pct')} prevalence ({where})"
            result.append((label, value, ci))
    return result
