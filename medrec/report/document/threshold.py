"""The operating threshold as the report words it: where it came from, the sentence that states it,
and the table of the metrics at other thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping

from medrec.report.document.formatting import fmt_count, fmt_threshold, fmt_value
from medrec.report.document.model import Section, Table

THRESHOLD_KINDS: tuple[str, ...] = ("validation", "user-given", "exploratory", "argmax")


def threshold_kind(report: Mapping) -> str:
    """``validation``, ``user-given``, ``exploratory`` or ``argmax``: where the threshold came from."""
    kind = report.get("threshold_kind")
    if kind in THRESHOLD_KINDS:
        return str(kind)
    source = str(report.get("threshold_source") or "").strip().lower()
    for candidate in THRESHOLD_KINDS:
        if source.startswith(candidate):
            return candidate
    return "exploratory" if "exploratory" in source else ("argmax" if "argmax" in source else "validation")


def threshold_sentence(report: Mapping) -> str:
    source = str(report.get("threshold_source") or "unknown source")
    if threshold_kind(report) == "argmax":
        return f"Multi-class: the predicted class is the one with the highest score ({source})."
    return f"Operating threshold {fmt_threshold(report.get('threshold'))} (a sample is positive when its score " \
           f"is at least the threshold). Source: {source}."


def _short_source(report: Mapping) -> str:
    return {
        "validation": "chosen on validation, frozen",
        "user-given": "user-given",
        "exploratory": "EXPLORATORY, chosen on the test data",
        "argmax": "argmax",
    }[threshold_kind(report)]


def threshold_section(report: Mapping) -> Section | None:
    table = report.get("threshold_table") or []
    if not table:
        return None
    rows, strong = [], set()
    for row in table:
        note = str(row.get("note") or "")
        if "operating threshold" in note:
            strong.add(len(rows))
        rows.append([fmt_threshold(row.get("threshold")),
                     *(fmt_value(row.get(n), "pct") for n in ("sensitivity", "specificity", "ppv", "npv")),
                     *(fmt_count(row.get(n)) for n in ("tp", "fp", "tn", "fn")), note])
    section = Section("thresholds", "Other thresholds")
    section.blocks.append(Table(
        ["Threshold", "Sensitivity", "Specificity", "PPV", "NPV", "TP", "FP", "TN", "FN", "Note"], rows,
        caption="Metrics at other thresholds, for orientation only (no confidence intervals); the operating "
                "threshold is in bold. Thresholds found on these data are exploratory. PPV and NPV are at the "
                f"test set's prevalence {fmt_value(report.get('prevalence'), 'pct')}, not at a clinical one.",
        strong_rows=frozenset(strong)))
    return section
