"""The curves section: ROC, precision-recall, calibration and decision curve, with the figure captions."""

from __future__ import annotations

from collections.abc import Mapping

from medrec.report.document.model import Figure, FigureRow, Section

FIGURE_CAPTIONS: dict[str, tuple[str, float]] = {
    "roc.png": ("ROC curve. The marker is the operating point; its error bars are the 95% CIs of sensitivity "
                "(vertical) and specificity (horizontal).", 0.6),
    "pr.png": ("Precision-recall curve; the dotted line is the precision without skill (the prevalence). The "
               "marker is the operating point with the 95% CIs of sensitivity and PPV.", 0.6),
    "calibration.png": ("Reliability diagram: observed fraction of positives per bin of predicted probability "
                        "(marker area: samples in the bin); perfect calibration lies on the diagonal; the dashed "
                        "curve is the logistic recalibration fit, whose slope and calibration-in-the-large "
                        "intercept are printed with their 95% CIs.", 0.5),
    "decision.png": ("Decision curve (Vickers & Elkin 2006): net benefit of acting on the model's score at each "
                     "threshold probability, against treating every patient and treating none. The model helps "
                     "where its curve lies above both; only the range of threshold probabilities a clinician would "
                     "accept matters. Read it only if the scores are calibrated probabilities.", 0.7),
    "scores.png": ("Distribution of the scores by reference class, with the operating threshold.", 0.75),
    "roc_multiclass.png": ("One-vs-rest ROC curve of each class.", 0.6),
    "froc.png": ("FROC curve: lesion sensitivity against mean false-positive findings per study, sweeping the "
                 "candidates' probability threshold; markers at 1/8 to 8 FP per study, whose mean sensitivity is "
                 "the CPM.", 0.6),
}


def curves_section(report: Mapping, figures: Mapping[str, bytes]) -> Section:
    section = Section("curves", "ROC, precision-recall, calibration and decision curve")
    for names in (("roc.png", "pr.png"), ("calibration.png", "decision.png")):
        pair = [Figure(n, figures[n], FIGURE_CAPTIONS[n][0], width=0.5) for n in names if n in figures]
        if len(pair) == 2:
            section.blocks.append(FigureRow(pair))
        else:
            section.blocks.extend(Figure(f.name, f.png, f.caption, width=FIGURE_CAPTIONS[f.name][1]) for f in pair)
    for name in ("scores.png", "roc_multiclass.png"):
        if name in figures:
            caption, width = FIGURE_CAPTIONS[name]
            section.blocks.append(Figure(name, figures[name], caption, width=width))
    return section
