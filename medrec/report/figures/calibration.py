"""Figures that read the scores as probabilities: the reliability diagram with its logistic
recalibration fit, and the decision curve (net benefit against threshold probability).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from medrec.report.figures.style import OKABE_ITO, _ci, _new_figure, png_bytes


def calibration_figure(
    mean_predicted: Sequence[float | None],
    observed_fraction: Sequence[float | None],
    counts: Sequence[int],
    recalibration: Mapping | None = None,
) -> bytes:
    """Reliability diagram: observed against predicted risk per bin, with the recalibration fit.

    The distribution of the scores is the report's score-distribution figure, so it is not drawn
    here a second time; the marker areas show how many samples each bin holds.

    Args:
        mean_predicted: mean predicted probability per bin (None / NaN for empty bins).
        observed_fraction: observed fraction of positives per bin.
        counts: samples per bin (the marker area follows it).
        recalibration: the report's calibration ``slope`` entry (``value``, ``ci95`` and the joint
            fit's ``intercept``) and ``intercept`` entry (calibration-in-the-large): the fitted
            logistic recalibration curve ``expit(a + b logit(p))`` is drawn and both are printed.
    """
    fig, axes = _new_figure(4.6, 5.3)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color=OKABE_ITO["grey"], linestyle=":", linewidth=1, label="perfect calibration")
    x = np.array([np.nan if v is None else v for v in mean_predicted], dtype=float)
    y = np.array([np.nan if v is None else v for v in observed_fraction], dtype=float)
    n = np.array([0 if v is None else v for v in counts], dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    if len(n) != len(x):
        n = np.ones_like(x)
    if keep.any():
        sizes = 12 + 60 * (n[keep] / max(n[keep].max(), 1))
        ax.plot(x[keep], y[keep], color=OKABE_ITO["blue"], linewidth=1.5)
        ax.scatter(x[keep], y[keep], s=sizes, color=OKABE_ITO["blue"], edgecolor="white", zorder=3,
                   label="observed (marker area ~ n)")
    fit_text = _recalibration_curve(ax, recalibration)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed fraction positive")
    ax.set_title("Calibration (reliability diagram)" + (f"\n{fit_text}" if fit_text else ""),
                 fontsize=9 if fit_text else None)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2, fontsize=7.5)  # never over a point
    return png_bytes(fig)


def _estimate_text(entry: Mapping | None) -> str | None:
    point = _ci(entry)
    if point is None:
        return None
    return f"{point[0]:.2f} ({point[1]:.2f} to {point[2]:.2f})"


def _recalibration_curve(ax, recalibration: Mapping | None) -> str:
    """Draw the logistic recalibration curve; return the calibration slope and intercept as a line of
    text for the title (inside the axes it would hide points), "" without a fit."""
    if not recalibration:
        return ""
    slope, intercept = recalibration.get("slope"), recalibration.get("intercept")
    lines = []
    slope_text = _estimate_text(slope)
    if slope_text is not None:
        a, b = float(slope.get("intercept", math.nan)), float(slope["value"])
        if math.isfinite(a):
            p = np.linspace(0.001, 0.999, 200)
            ax.plot(p, 1.0 / (1.0 + np.exp(-(a + b * np.log(p / (1 - p))))), color=OKABE_ITO["vermillion"],
                    linestyle="--", linewidth=1.2, label="logistic recalibration fit")
        lines.append(f"slope {slope_text}")
    else:
        lines.append("slope not estimable")
    intercept_text = _estimate_text(intercept)
    lines.append(f"intercept {intercept_text}" if intercept_text else "intercept not estimable")
    return "; ".join(lines)


def decision_curve_figure(decision: Mapping) -> bytes:
    """Net benefit against threshold probability: the model, treat-all and treat-none.

    Args:
        decision: the analysis' decision-curve dict: ``thresholds``, ``treat_none`` and ``test_set``
            (and ``stated`` when a prevalence was given), each with ``prevalence``, ``net_benefit``
            and ``treat_all``. With a stated prevalence its curves are drawn solid and the test
            set's dashed.
    """
    fig, axes = _new_figure(5.6, 4.2)
    ax = axes[0, 0]
    t = np.asarray(decision["thresholds"], dtype=float)
    ax.plot(t, np.asarray(decision["treat_none"], dtype=float), color=OKABE_ITO["grey"], linewidth=1.2,
            label="treat none")
    sets = [(decision.get("stated"), "-", "stated"), (decision.get("test_set"), "--" if decision.get("stated")
                                                      else "-", "test set")]
    values = [0.0]
    for entry, style, name in sets:
        if not entry:
            continue
        prevalence = float(entry["prevalence"])
        model, everyone = np.asarray(entry["net_benefit"], dtype=float), np.asarray(entry["treat_all"], dtype=float)
        ax.plot(t, model, color=OKABE_ITO["blue"], linestyle=style, linewidth=1.8,
                label=f"model, {name} prevalence {prevalence:.1%}")
        ax.plot(t, everyone, color=OKABE_ITO["orange"], linestyle=style, linewidth=1.2,
                label=f"treat all, {name} prevalence {prevalence:.1%}")
        values.extend([float(np.nanmax(model)), prevalence])
    top = max(max(values), 0.02)
    ax.set_ylim(-0.25 * top, top * 1.08)  # far below treat-none nothing is worth reading
    ax.set_xlim(0, 1)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.set_title("Decision curve")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, fontsize=7.5)
    return png_bytes(fig)
