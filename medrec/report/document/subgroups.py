"""Subgroups: the report's subgroup entries read as rows, and the section with their forest plot and table."""

from __future__ import annotations

from collections.abc import Mapping

from medrec.report.document.formatting import METRICS, fmt_count, fmt_metric_short
from medrec.report.document.model import Figure, Section, Table


def subgroup_rows(groups: object) -> list[Mapping]:
    """Subgroup entries as a list whatever the container (list of dicts or dict keyed by group)."""
    if isinstance(groups, Mapping):
        return [{"group": name, **entry} for name, entry in groups.items() if isinstance(entry, Mapping)]
    if isinstance(groups, list):
        return [g for g in groups if isinstance(g, Mapping)]
    return []


def subgroup_section(report: Mapping, figures: Mapping[str, bytes]) -> Section | None:
    subgroups = report.get("subgroups") or {}
    if not any(subgroup_rows(groups) for groups in subgroups.values()):
        return None
    section = Section("subgroups", "Subgroups")
    if "subgroups.png" in figures:
        section.blocks.append(Figure(
            "subgroups.png", figures["subgroups.png"],
            "Sensitivity and specificity per subgroup with 95% CIs; the dotted line is the whole set. Hollow "
            "markers and grey italic labels: small groups (too few positives or negatives to conclude).",
            width=0.95))
    names = [n for n in METRICS if any(n in (g.get("metrics") or {}) for gs in subgroups.values()
                                       for g in subgroup_rows(gs))]
    rows, muted = [], set()
    for column, groups in subgroups.items():
        for group in subgroup_rows(groups):
            metrics = group.get("metrics") or {}
            if group.get("small"):
                muted.add(len(rows))
            counts = group.get("n_per_class")
            balance = (", ".join(f"{k}: {v}" for k, v in counts.items()) if isinstance(counts, Mapping)
                       else f"{fmt_count(group.get('n_positive'))} / {fmt_count(group.get('n_negative'))}")
            rows.append([f"{column} = {group.get('group')}", fmt_count(group.get("n")), balance,
                         fmt_count(group.get("n_patients")),
                         *(fmt_metric_short(metrics.get(n), n) if metrics.get(n) else "n/a" for n in names)])
    balance_name = "Per class" if report.get("task") == "multiclass" else "Pos / neg"
    section.blocks.append(Table(["Subgroup", "n", balance_name, "Patients", *(METRICS[n][0] for n in names)], rows,
                                caption="Metrics per subgroup: value (95% CI)", muted_rows=frozenset(muted),
                                note="Grey rows: small groups, too small to conclude." if muted else ""))
    return section
