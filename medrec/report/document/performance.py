"""Diagnostic performance: the 2x2 table, the metrics with their intervals, sample beside patient level,
the prevalence-adjusted predictive values, calibration and the run's validation split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medrec.report.document.formatting import (
    METRICS,
    _count_cell,
    _metric_cell,
    _metric_label,
    fmt_ci,
    fmt_count,
    fmt_threshold,
    fmt_value,
    is_number,
)
from medrec.report.document.model import Callout, Paragraph, Section, Table
from medrec.report.document.threshold import threshold_kind, threshold_sentence


def short_method(method: str) -> str:
    """A CI method's name without its details ("Wilson score interval; 57 samples ..." -> "Wilson score interval")."""
    head = method.split(";")[0].strip()
    if "," in head:
        head = head.split(",")[0].strip()
    if " (" in head and not head.endswith(")"):
        head = head.split(" (")[0]
    return head


def metrics_table(metrics: Mapping, caption: str = "") -> Table:
    """Value, 95% CI, the counts behind each proportion and the CI method, for every metric present.

    The method column names each method briefly with a footnote number; the full sentences are
    the table's note, each once.
    """
    rows, footnotes = [], {}

    def method_cell(metric: Mapping) -> str:
        full = str(metric.get("method", "")).strip()
        if not full:
            return ""
        number = footnotes.setdefault(full, len(footnotes) + 1)
        return f"{short_method(full)} [{number}]"

    for name, (label, style) in METRICS.items():
        metric = metrics.get(name)
        if isinstance(metric, Mapping):
            rows.append([_metric_label(name, metric, label), fmt_value(metric.get("value"), style),
                         fmt_ci(metric.get("ci95"), style), _count_cell(metric), method_cell(metric)])
    for name, metric in metrics.items():  # metrics this renderer does not know by name still appear
        if name not in METRICS and isinstance(metric, Mapping) and "value" in metric:
            rows.append([name, fmt_value(metric.get("value")), fmt_ci(metric.get("ci95")), _count_cell(metric),
                         method_cell(metric)])
    note = "\n".join(f"[{number}] {text}." for text, number in footnotes.items())
    return Table(["Metric", "Value", "95% CI", "Count", "CI method"], rows, caption=caption, note=note)


def confusion_table(confusion: Mapping, classes: Sequence[str] = (), caption: str = "") -> Table:
    """The 2x2 table with margins (rows: reference standard; columns: model)."""
    tp, fp, tn, fn = (int(confusion.get(k, 0) or 0) for k in ("tp", "fp", "tn", "fn"))
    negative, positive = (f" ({classes[0]})", f" ({classes[1]})") if len(classes) == 2 else ("", "")
    rows = [
        [f"Reference positive{positive}", str(tp), str(fn), str(tp + fn)],
        [f"Reference negative{negative}", str(fp), str(tn), str(fp + tn)],
        ["Total", str(tp + fp), str(fn + tn), str(tp + fp + tn + fn)],
    ]
    return Table(["", "Model positive", "Model negative", "Total"], rows, caption=caption,
                 strong_rows=frozenset({2}))


def performance_section(report: Mapping) -> Section:
    section = Section("performance", "Diagnostic performance")
    section.blocks.append(Paragraph(threshold_sentence(report)))
    if threshold_kind(report) == "exploratory":
        section.blocks.append(Callout("EXPLORATORY threshold: the numbers below that depend on the threshold were "
                                      "obtained with a threshold tuned on the same data.", "warning"))
    confusion = report.get("confusion_matrix")
    if isinstance(confusion, Mapping):
        section.blocks.append(confusion_table(confusion, report.get("classes") or (),
                                              caption="2x2 table at the operating threshold (samples)"))
    section.blocks.append(metrics_table(report.get("metrics") or {},
                                        caption="Sample-level metrics" + (" at the operating threshold"
                                                                          if report.get("threshold") is not None
                                                                          else "")))
    patient = report.get("patient_level") or {}
    if patient.get("metrics"):
        rows = []
        for name in METRICS:
            study_metric = (report.get("metrics") or {}).get(name)
            patient_metric = patient["metrics"].get(name)
            if not study_metric and not patient_metric:
                continue
            rows.append([METRICS[name][0], *_metric_cell(study_metric, name), *_metric_cell(patient_metric, name)])
        notes = [f"Patient level: {patient['aggregation']}." if patient.get("aggregation") else "",
                 f"Patient-level calibration {patient['calibration_omitted']}."
                 if str(patient.get("calibration_omitted") or "").startswith("omitted") else "",
                 "PPV and NPV hold at each level's own prevalence."]
        section.blocks.append(Table(
            ["Metric", "Sample level", "95% CI", "Patient level", "95% CI"], rows,
            caption=f"Sample level ({fmt_count(report.get('n_samples'))} samples) beside patient level "
                    f"({fmt_count(patient.get('n_patients'))} patients, prevalence "
                    f"{fmt_value(patient.get('prevalence'), 'pct')})",
            note=" ".join(note for note in notes if note),
        ))
        if isinstance(patient.get("confusion_matrix"), Mapping):
            section.blocks.append(confusion_table(patient["confusion_matrix"], report.get("classes") or (),
                                                  caption="2x2 table per patient"))
    adjusted = report.get("prevalence_adjusted")
    if adjusted and is_number(adjusted.get("prevalence")):
        rows = [[METRICS[name][0], *_metric_cell(adjusted[name], name), str(adjusted[name].get("method", ""))]
                for name in ("ppv", "npv") if adjusted.get(name)]
        where = f"{adjusted['prevalence_source']}; " if adjusted.get("prevalence_source") else ""
        section.blocks.append(Table(
            ["Metric", "Value", "95% CI", "Method"], rows,
            caption=f"Predictive values at the stated clinical prevalence {fmt_value(adjusted['prevalence'], 'pct')} "
                    f"({where}the test set has {fmt_value(report.get('prevalence'), 'pct')})",
        ))
    calibration = calibration_table(report.get("calibration"))
    if calibration is not None:
        section.blocks.append(calibration)
    validation = validation_table(report)
    if validation is not None:
        section.blocks.append(validation)
    return section


def validation_table(report: Mapping) -> Table | None:
    """The run's validation split beside this report's data (:mod:`medrec.report.validation_split`)."""
    validation = report.get("validation_split")
    if not isinstance(validation, Mapping) or not validation.get("metrics"):
        return None
    metrics = report.get("metrics") or {}
    rows = [[METRICS[name][0], *_metric_cell(validation["metrics"].get(name), name),
             *_metric_cell(metrics.get(name), name)] for name in ("auc", "sensitivity", "specificity")]
    return Table(
        ["Metric", "Validation split", "95% CI", "These data", "95% CI"], rows,
        caption=f"The run's validation split ({fmt_count(validation.get('n'))} samples, "
                f"{fmt_count(validation.get('n_positive'))} positive) beside these data, at the same threshold "
                f"{fmt_threshold(validation.get('threshold'))}",
        note="Training chose the best epoch, the calibration and the threshold on the validation split, so its "
             "figures are optimistic; the difference shows how much of them was tuning. Validation intervals count "
             "samples (its file names no patients).",
    )


CALIBRATION_ROWS: dict[str, str] = {
    "intercept": "Calibration intercept (in the large; 0 is ideal)",
    "slope": "Calibration slope (1 is ideal)",
    "oe_ratio": "Observed / expected events (1 is ideal)",
    "scaled_brier": "Scaled Brier score (1 is ideal, 0 no skill)",
}


def calibration_table(calibration: Mapping | None) -> Table | None:
    """Intercept, slope, observed / expected and scaled Brier with their intervals and methods."""
    if not isinstance(calibration, Mapping):
        return None
    rows = []
    for key, label in CALIBRATION_ROWS.items():
        entry = calibration.get(key)
        if isinstance(entry, Mapping):
            rows.append([label, fmt_value(entry.get("value")), fmt_ci(entry.get("ci95")),
                         str(entry.get("method", ""))])
    if not rows:
        return None
    return Table(["Measure", "Value", "95% CI", "Method"], rows,
                 caption=f"Calibration of the sample-level probabilities ({fmt_count(calibration.get('n_samples'))} "
                         "samples)")
