"""The report's figures: which plots a report dict calls for (ROC, PR, calibration, decision curve, score
distribution, subgroups, confusion matrix, flow, FROC), drawn by :mod:`medrec.report.figures` as PNGs
under fixed file names, never data-derived ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from medrec.report import document as doc_model
from medrec.report import figures as figs


def compare_curves(compare: pd.DataFrame | None, report: Mapping) -> dict | None:
    """ROC / PR curves of the comparison model on the analysed samples (for the overlay in the ROC figure)."""
    if compare is None or report.get("task") != "binary" or "score" not in compare.columns:
        return None
    from sklearn.metrics import precision_recall_curve, roc_curve

    positive = report.get("positive_label")
    usable = compare[(compare["error"].astype(str).str.strip() == "") & compare["score"].notna()]
    usable = usable[usable["label"].astype(str).str.strip().isin(report.get("classes") or [])]
    y = (usable["label"].astype(str).str.strip() == positive).to_numpy()
    if y.all() or not y.any():
        return None
    scores = usable["score"].to_numpy(dtype=float)
    fpr, tpr, _ = roc_curve(y, scores)
    precision, recall, _ = precision_recall_curve(y, scores)
    return {"roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
            "pr": {"recall": recall.tolist(), "precision": precision.tolist()}}


def draw_figures(report: Mapping, other_curves: Mapping | None = None) -> dict[str, bytes]:
    """All plots of the report as ``{file name: PNG bytes}`` (names are fixed, never data-derived)."""
    figures: dict[str, bytes] = {}
    curves = report.get("curves") or {}
    metrics = report.get("metrics") or {}
    threshold = report.get("threshold")
    binary = report.get("task", "binary") == "binary"
    operating = None
    if binary and metrics.get("sensitivity") and metrics.get("specificity"):
        operating = {
            "sensitivity": metrics["sensitivity"], "specificity": metrics["specificity"], "ppv": metrics.get("ppv"),
            "label": f"operating point (threshold {doc_model.fmt_threshold(threshold)})",
        }
    comparison = report.get("comparison") or {}
    other_curves = other_curves or {}
    first = "this model" if other_curves else "model"
    roc = curves.get("roc")
    if binary and isinstance(roc, Mapping) and roc.get("fpr"):
        series = [{"fpr": roc["fpr"], "tpr": roc["tpr"], "label": f"{first}, AUC {_auc_text(metrics.get('auc'))}"}]
        if other_curves.get("roc"):
            auc_b = (comparison.get("auc") or {}).get("auc_b")
            series.append({"fpr": other_curves["roc"]["fpr"], "tpr": other_curves["roc"]["tpr"],
                           "label": f"comparison model, AUC {doc_model.fmt_value(auc_b)}"})
        figures["roc.png"] = figs.roc_figure(series, operating)
    elif not binary and isinstance(roc, Mapping) and roc:
        series = [{"fpr": c["fpr"], "tpr": c["tpr"], "label": f"{name} vs rest"} for name, c in roc.items()
                  if isinstance(c, Mapping) and c.get("fpr")]
        if series:
            figures["roc_multiclass.png"] = figs.roc_figure(series)
    pr = curves.get("pr")
    if binary and isinstance(pr, Mapping) and pr.get("recall"):
        series = [{"recall": pr["recall"], "precision": pr["precision"],
                   "label": f"{first}, AP {_auc_text(metrics.get('pr_auc'))}"}]
        if other_curves.get("pr"):
            series.append({"recall": other_curves["pr"]["recall"], "precision": other_curves["pr"]["precision"],
                           "label": "comparison model"})
        prevalence = report.get("prevalence")
        figures["pr.png"] = figs.pr_figure(series, prevalence if doc_model.is_number(prevalence) else None,
                                           operating)
    histogram = curves.get("histogram") or {}
    counts_by_class = {}
    if histogram.get("bin_edges"):
        classes = report.get("classes") or ["negative", "positive"]
        counts_by_class = {
            f"reference negative '{classes[0]}' (n={doc_model.fmt_count(report.get('n_negative'))})":
                histogram.get("negative") or [],
            f"reference positive '{classes[-1]}' (n={doc_model.fmt_count(report.get('n_positive'))})":
                histogram.get("positive") or [],
        }
    calibration = curves.get("calibration")
    if binary and isinstance(calibration, Mapping) and calibration.get("mean_predicted") is not None:
        figures["calibration.png"] = figs.calibration_figure(
            calibration["mean_predicted"], calibration.get("observed_fraction") or [], calibration.get("count") or [],
            report.get("calibration"),
        )
    decision = curves.get("decision")
    if binary and isinstance(decision, Mapping) and decision.get("thresholds"):
        figures["decision.png"] = figs.decision_curve_figure(decision)
    if binary and counts_by_class:
        figures["scores.png"] = figs.score_distribution_figure(
            histogram["bin_edges"], counts_by_class, threshold if doc_model.is_number(threshold) else None)
    rows = _forest_rows(report)
    if binary and len(rows) > 1:
        figures["subgroups.png"] = figs.forest_figure(rows)
    multiclass = report.get("multiclass") or {}
    if multiclass.get("confusion_matrix") and multiclass.get("classes"):
        figures["confusion_multiclass.png"] = figs.confusion_heatmap(multiclass["confusion_matrix"],
                                                                    multiclass["classes"])
    stages, outcomes = doc_model.flow_figure_input(report)
    if stages:
        figures["flow.png"] = figs.flow_diagram(stages, outcomes)
    froc = (report.get("lesion_level") or {}).get("froc") or {}
    curve = froc.get("curve") or {}
    if curve.get("fp_per_study") and all(doc_model.is_number(v) for v in curve.get("sensitivity") or [None]):
        figures["froc.png"] = figs.froc_figure(curve["fp_per_study"], curve["sensitivity"], froc.get("points") or [],
                                               froc.get("cpm"))
    return figures


def _auc_text(metric: Mapping | None) -> str:
    if not metric:
        return "n/a"
    return f"{doc_model.fmt_value(metric.get('value'))} ({doc_model.fmt_ci(metric.get('ci95'))})"


def _forest_rows(report: Mapping) -> list[dict]:
    metrics = report.get("metrics") or {}
    rows = [{"label": f"all (n={doc_model.fmt_count(report.get('n_samples'))})", "overall": True,
             "sensitivity": metrics.get("sensitivity"), "specificity": metrics.get("specificity")}]
    for column, groups in (report.get("subgroups") or {}).items():
        for group in doc_model.subgroup_rows(groups):
            values = group.get("metrics") or {}
            rows.append({
                "label": f"{column} = {group.get('group')} (n={doc_model.fmt_count(group.get('n'))})",
                "small": bool(group.get("small")),
                "sensitivity": values.get("sensitivity"), "specificity": values.get("specificity"),
            })
    return rows
