"""The report as a document: sections of paragraphs, tables and figures, built from the analysis.

The HTML and the PDF renderers both walk the same :class:`Document`, so the two files say the
same thing in the same order. All wording that depends on the numbers (the summary, the
cohort flow, the limitations) is produced here, from the report dict, and nowhere else.

Modules, in the order the report reads:
    model             the blocks (:class:`Paragraph`, :class:`Table`, :class:`Figure` ...), :class:`Document`
    formatting        numbers, intervals, counts and paths as the report prints them
    composition       :func:`compose`: the whole document from the report dict; :func:`subtitle`
    summary           the summary paragraph and the key figures of page 1
    context           study context, synthetic-data alert, pre-specified acceptance criteria
    flow              the STARD participant flow and the cohort section
    threshold         where the operating threshold came from; the table of other thresholds
    performance       2x2 table, metrics, patient level, prevalence-adjusted values, calibration
    curves            ROC, precision-recall, calibration and decision curve, with the figure captions
    subgroups         subgroup rows and their section
    comparison        the paired comparison with another model
    multiclass        per-class results
    lesion_level      hit rate, FROC and CPM, sensitivity by diameter and contrast
    failure_analysis  the worst false negatives and false positives
    caveats           the limitations
    methods           how the numbers were obtained
    provenance        model, data, settings and versions
"""

from __future__ import annotations

from medrec.report.document.caveats import limitations
from medrec.report.document.comparison import comparison_section
from medrec.report.document.composition import DEFAULT_TITLE, compose, subtitle
from medrec.report.document.context import CONTEXT_LABELS, acceptance_section, context_section, synthetic_alert
from medrec.report.document.curves import FIGURE_CAPTIONS, curves_section
from medrec.report.document.failure_analysis import failure_section
from medrec.report.document.flow import (
    FLOW_CAPTION,
    LEVEL_UNITS,
    SPLIT_NAMES,
    FlowStage,
    cohort_section,
    flow_figure_input,
    flow_outcomes,
    flow_sentence,
    flow_stages,
)
from medrec.report.document.formatting import (
    KEY_METRICS,
    METRICS,
    fmt_ci,
    fmt_count,
    fmt_metric,
    fmt_metric_short,
    fmt_mm,
    fmt_threshold,
    fmt_value,
    is_number,
    prevalence_note,
    scrub_paths,
)
from medrec.report.document.lesion_level import lesion_method_sentence, lesion_section
from medrec.report.document.methods import methods_section, reference_sentence
from medrec.report.document.model import (
    Block,
    BulletList,
    Callout,
    Case,
    Document,
    Figure,
    FigureRow,
    Gallery,
    Paragraph,
    Section,
    Table,
)
from medrec.report.document.multiclass import multiclass_section
from medrec.report.document.performance import (
    CALIBRATION_ROWS,
    calibration_table,
    confusion_table,
    metrics_table,
    performance_section,
    short_method,
    validation_table,
)
from medrec.report.document.provenance import PROVENANCE_LABELS, plain_text, provenance_section
from medrec.report.document.subgroups import subgroup_rows, subgroup_section
from medrec.report.document.summary import key_figures, summary_paragraph
from medrec.report.document.threshold import THRESHOLD_KINDS, threshold_kind, threshold_section, threshold_sentence

__all__ = [
    "CALIBRATION_ROWS",
    "CONTEXT_LABELS",
    "DEFAULT_TITLE",
    "FIGURE_CAPTIONS",
    "FLOW_CAPTION",
    "KEY_METRICS",
    "LEVEL_UNITS",
    "METRICS",
    "PROVENANCE_LABELS",
    "SPLIT_NAMES",
    "THRESHOLD_KINDS",
    "Block",
    "BulletList",
    "Callout",
    "Case",
    "Document",
    "Figure",
    "FigureRow",
    "FlowStage",
    "Gallery",
    "Paragraph",
    "Section",
    "Table",
    "acceptance_section",
    "calibration_table",
    "cohort_section",
    "comparison_section",
    "compose",
    "confusion_table",
    "context_section",
    "curves_section",
    "failure_section",
    "flow_figure_input",
    "flow_outcomes",
    "flow_sentence",
    "flow_stages",
    "fmt_ci",
    "fmt_count",
    "fmt_metric",
    "fmt_metric_short",
    "fmt_mm",
    "fmt_threshold",
    "fmt_value",
    "is_number",
    "key_figures",
    "lesion_method_sentence",
    "lesion_section",
    "limitations",
    "methods_section",
    "metrics_table",
    "multiclass_section",
    "performance_section",
    "plain_text",
    "prevalence_note",
    "provenance_section",
    "reference_sentence",
    "scrub_paths",
    "short_method",
    "subgroup_rows",
    "subgroup_section",
    "subtitle",
    "summary_paragraph",
    "synthetic_alert",
    "threshold_kind",
    "threshold_section",
    "threshold_sentence",
    "validation_table",
]
