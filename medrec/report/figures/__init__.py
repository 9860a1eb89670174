"""The report's figures, drawn with matplotlib's Agg backend and returned as PNG bytes.

Every function takes plain numbers (lists, dicts from the analysis) and returns the bytes of one
PNG, so that the HTML and the PDF embed exactly the same image. The output is deterministic:
fixed size and dpi, bundled fonts, no software or date metadata in the file, so the same input
gives the same bytes. Colours come from the Okabe-Ito palette, which stays distinguishable
for the common forms of colour blindness and in greyscale print (markers and line styles differ
too).

Modules:
    style        palette, rc style, figure creation, PNG bytes (selects the Agg backend)
    curves       ROC, precision-recall and FROC curves
    calibration  reliability diagram and decision curve
    breakdowns   score distribution, subgroup forest plot, multi-class confusion matrix
    cases        case pictures of the failure review: slice, marks, thumbnail
    flow         the STARD participant-flow diagram
"""

from __future__ import annotations

from medrec.report.figures.breakdowns import confusion_heatmap, forest_figure, score_distribution_figure
from medrec.report.figures.calibration import calibration_figure, decision_curve_figure
from medrec.report.figures.cases import (
    FINDING_MARK,
    LESION_MARK,
    display_slice,
    mark_slice,
    mark_width,
    thumbnail_figure,
)
from medrec.report.figures.curves import froc_figure, pr_figure, roc_figure
from medrec.report.figures.flow import FLOW_WIDTH_IN, flow_diagram
from medrec.report.figures.style import DPI, OKABE_ITO, SERIES_COLOURS, png_bytes

__all__ = [
    "DPI",
    "FINDING_MARK",
    "FLOW_WIDTH_IN",
    "LESION_MARK",
    "OKABE_ITO",
    "SERIES_COLOURS",
    "calibration_figure",
    "confusion_heatmap",
    "decision_curve_figure",
    "display_slice",
    "flow_diagram",
    "forest_figure",
    "froc_figure",
    "mark_slice",
    "mark_width",
    "png_bytes",
    "pr_figure",
    "roc_figure",
    "score_distribution_figure",
    "thumbnail_figure",
]
