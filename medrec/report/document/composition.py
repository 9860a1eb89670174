"""Composition: the whole document from the report dict (whose schema is in medrec.report.analysis), in
the order both renderers print it, and the line under its title.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medrec.report.document.comparison import comparison_section
from medrec.report.document.context import acceptance_section, context_section, synthetic_alert
from medrec.report.document.curves import curves_section
from medrec.report.document.failure_analysis import failure_section
from medrec.report.document.flow import cohort_section
from medrec.report.document.lesion_level import lesion_section
from medrec.report.document.methods import methods_section
from medrec.report.document.model import BulletList, Case, Document, Section
from medrec.report.document.multiclass import multiclass_section
from medrec.report.document.performance import performance_section
from medrec.report.document.provenance import provenance_section
from medrec.report.document.subgroups import subgroup_section
from medrec.report.document.summary import key_figures, summary_paragraph
from medrec.report.document.threshold import threshold_kind, threshold_section

DEFAULT_TITLE = "Clinical validation report"


def compose(
    report: Mapping,
    figures: Mapping[str, bytes],
    cases: Mapping[str, Sequence[Case]],
    title: str,
    date: str,
) -> Document:
    """Build the document that both renderers print.

    Args:
        report: the report dict (analysis, plus ``cohort``, ``provenance`` and ``limitations``).
        figures: file name -> PNG bytes of the plots.
        cases: ``false_negatives`` / ``false_positives`` -> the flagged cases with their pictures.
        title: the report title.
        date: the report date (ISO).
    """
    banner = None
    if threshold_kind(report) == "exploratory":
        banner = (f"EXPLORATORY THRESHOLD ({report.get('threshold_method') or 'chosen on these data'}): the operating "
                  "threshold was chosen on the analysed data themselves. Threshold-dependent metrics are "
                  "optimistic and are not a validation result.")
    sections = [
        context_section(report),
        acceptance_section(report),
        cohort_section(report, figures),
        performance_section(report),
        curves_section(report, figures),
        subgroup_section(report, figures),
        threshold_section(report),
        comparison_section(report, figures),
        multiclass_section(report, figures),
        lesion_section(report, figures),
        failure_section(report, cases),
        Section("limitations", "Limitations", [BulletList(list(report.get("limitations") or []))]),
        methods_section(report),
        provenance_section(report.get("provenance") or {}),
    ]
    return Document(
        title=title,
        date=date,
        summary=summary_paragraph(report),
        banner=banner,
        sections=[s for s in sections if s is not None and s.blocks],
        footer=f"{title} \u00b7 {date}",
        key_figures=key_figures(report),
        alert=synthetic_alert(report),
    )


def subtitle(document: Document) -> str:
    """The line under the title: what the document is, its date and the software version."""
    from medrec import __version__

    kind = "" if document.title == DEFAULT_TITLE else "Clinical validation report \u00b7 "
    return f"{kind}{document.date} \u00b7 medrec {__version__}"
