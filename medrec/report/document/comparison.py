"""Model comparison: the paired comparison of this model with another on the samples both scored."""

from __future__ import annotations

from collections.abc import Mapping

from medrec.report.document.formatting import METRICS, fmt_ci, fmt_count, fmt_threshold, fmt_value, is_number
from medrec.report.document.model import Paragraph, Section, Table


def _fmt_p(value: object) -> str:
    if not is_number(value):
        return "n/a"
    return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def comparison_section(report: Mapping, figures: Mapping[str, bytes]) -> Section | None:
    comparison = report.get("comparison")
    if not comparison:
        return None
    section = Section("comparison", "Model comparison")
    other = report.get("compare_name") or "the comparison model"
    section.blocks.append(Paragraph(
        f"This model is compared with {other} on the {fmt_count(comparison.get('n_samples'))} samples both scored "
        f"(paired analysis; the comparison model's threshold is {fmt_threshold(comparison.get('threshold_b'))})."))
    rows = []
    auc = comparison.get("auc")
    if isinstance(auc, Mapping):
        rows.append(["ROC AUC", fmt_value(auc.get("auc_a")), fmt_value(auc.get("auc_b")),
                     fmt_value(auc.get("difference")), fmt_ci(auc.get("ci95")), _fmt_p(auc.get("p_value")),
                     str(auc.get("method", ""))])
    for name in ("sensitivity", "specificity"):
        entry = comparison.get(name)
        if isinstance(entry, Mapping):
            a, b = entry.get("value_a"), entry.get("value_b")
            difference = float(a) - float(b) if is_number(a) and is_number(b) else None
            rows.append([METRICS[name][0], fmt_value(a, "pct"), fmt_value(b, "pct"),
                         f"{100 * difference:+.1f} points" if difference is not None else "n/a", "n/a",
                         _fmt_p(entry.get("p_value")),
                         f"{entry.get('method', '')} (discordant pairs b={entry.get('b')}, c={entry.get('c')})"])
    section.blocks.append(Table(["Metric", "This model", "Comparison", "Difference", "95% CI", "p", "Test"], rows,
                                caption="Paired comparison (difference = this model minus the comparison model)"))
    if "roc.png" in figures:
        section.blocks.append(Paragraph("Both ROC curves are drawn in the ROC figure."))
    return section
