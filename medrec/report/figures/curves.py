"""Curves swept over a threshold: ROC and precision-recall with the operating point and its 95% CIs,
and the lesion-level FROC curve.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from medrec.report.figures.style import OKABE_ITO, SERIES_COLOURS, _ci, _new_figure, png_bytes


def roc_figure(
    curves: Sequence[Mapping],
    operating_point: Mapping | None = None,
) -> bytes:
    """ROC curve(s) with the operating point and its sensitivity / specificity 95% CIs.

    Args:
        curves: one mapping per model: ``fpr``, ``tpr`` (lists) and ``label`` (legend text,
            e.g. "this model, AUC 0.91 (0.85-0.95)").
        operating_point: ``sensitivity`` and ``specificity`` metrics (``value``, ``ci95``) at
            the frozen threshold, plus ``label``.
    """
    fig, axes = _new_figure(4.6, 4.2)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color=OKABE_ITO["grey"], linestyle=":", linewidth=1, label="chance")
    styles = ("-", "--", "-.", ":")
    for index, curve in enumerate(curves):
        ax.plot(curve["fpr"], curve["tpr"], color=SERIES_COLOURS[index % len(SERIES_COLOURS)],
                linestyle=styles[index % len(styles)], linewidth=1.8, label=curve.get("label", f"model {index + 1}"),
                drawstyle="default")
    if operating_point:
        sens = _ci(operating_point.get("sensitivity"))
        spec = _ci(operating_point.get("specificity"))
        if sens and spec:
            x, y = 1 - spec[0], sens[0]
            ax.errorbar(
                [x], [y],
                xerr=[[x - (1 - spec[2])], [(1 - spec[1]) - x]],
                yerr=[[y - sens[1]], [sens[2] - y]],
                fmt="o", color=OKABE_ITO["black"], markerfacecolor=OKABE_ITO["orange"], markersize=7,
                capsize=3, linewidth=1.2, zorder=5, label=operating_point.get("label", "operating point"),
            )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title("ROC curve")
    ax.legend(loc="lower right")
    return png_bytes(fig)


def pr_figure(
    curves: Sequence[Mapping],
    prevalence: float | None = None,
    operating_point: Mapping | None = None,
) -> bytes:
    """Precision-recall curve(s), the no-skill line at the prevalence, and the operating point.

    Args:
        curves: one mapping per model: ``recall``, ``precision`` and ``label``.
        prevalence: fraction of positives in the analysed set (the no-skill precision).
        operating_point: ``sensitivity`` and ``ppv`` metrics at the threshold.
    """
    fig, axes = _new_figure(4.6, 4.2)
    ax = axes[0, 0]
    if prevalence is not None and not math.isnan(prevalence):
        ax.axhline(prevalence, color=OKABE_ITO["grey"], linestyle=":", linewidth=1,
                   label=f"no skill (prevalence {prevalence:.0%})")
    styles = ("-", "--", "-.", ":")
    for index, curve in enumerate(curves):
        ax.plot(curve["recall"], curve["precision"], color=SERIES_COLOURS[index % len(SERIES_COLOURS)],
                linestyle=styles[index % len(styles)], linewidth=1.8, label=curve.get("label", f"model {index + 1}"))
    if operating_point:
        sens = _ci(operating_point.get("sensitivity"))
        ppv = _ci(operating_point.get("ppv"))
        if sens and ppv:
            ax.errorbar(
                [sens[0]], [ppv[0]],
                xerr=[[sens[0] - sens[1]], [sens[2] - sens[0]]],
                yerr=[[ppv[0] - ppv[1]], [ppv[2] - ppv[0]]],
                fmt="o", color=OKABE_ITO["black"], markerfacecolor=OKABE_ITO["orange"], markersize=7,
                capsize=3, linewidth=1.2, zorder=5, label=operating_point.get("label", "operating point"),
            )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.set_title("Precision-recall curve")
    ax.legend(loc="lower left")
    return png_bytes(fig)


def froc_figure(
    fp_per_study: Sequence[float],
    sensitivity: Sequence[float],
    points: Sequence[Mapping] = (),
    cpm: float | None = None,
) -> bytes:
    """FROC curve: lesion sensitivity against false-positive findings per study (log2 axis, 1/8 to 8).

    The curve is the step function the CPM reads: a sensitivity holds from its FP rate up to the
    next point's. FP rates below the axis (0 included) are drawn at its left edge.

    Args:
        fp_per_study: the curve's FP rates, rising (one per threshold, strictest first).
        sensitivity: the lesion sensitivity at each.
        points: ``fp_per_study_target`` and ``sensitivity`` of the marked FROC points.
        cpm: the mean sensitivity at the marked points (in the legend).
    """
    fig, axes = _new_figure(5.0, 3.8)
    ax = axes[0, 0]
    left, right = 1 / 16, 16.0
    x = [min(max(float(v), left), right) for v in fp_per_study]
    y = [float(v) for v in sensitivity]
    if x:
        x.append(right)
        y.append(y[-1])
    ax.step(x, y, where="post", color=OKABE_ITO["blue"], linewidth=1.8,
            label="FROC" + (f", CPM {cpm:.3f}" if cpm is not None and not math.isnan(cpm) else ""))
    marked = [(float(p["fp_per_study_target"]), float(p["sensitivity"])) for p in points
              if p.get("sensitivity") is not None]
    if marked:
        ax.plot(*zip(*marked, strict=True), marker="o", linestyle="none", color=OKABE_ITO["black"],
                markerfacecolor=OKABE_ITO["orange"], markersize=6, zorder=5, label="1/8 ... 8 FP per study")
    ax.set_xscale("log", base=2)
    ax.set_xlim(left, right)
    ticks = [0.125, 0.25, 0.5, 1, 2, 4, 8]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("mean false-positive findings per study")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title("FROC curve")
    ax.legend(loc="lower right")
    return png_bytes(fig)
