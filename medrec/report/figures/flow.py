"""The STARD participant-flow diagram: boxes of stages, their exclusions and the index-test outcomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from medrec.report.figures.style import _STYLE, DPI, OKABE_ITO, png_bytes

FLOW_WIDTH_IN = 7.4
_FLOW_LINE_IN = 0.175  # height of one text line at 8.5 pt, in inches
_FLOW_PAD_IN = 0.07


def _flow_box(ax, x: float, y: float, width: float, lines: Sequence[tuple[str, bool]], face: str, edge: str) -> float:
    """Draw a box whose top-left corner is (x, y) (y grows downwards) holding ``lines`` of (text, bold);
    return its height."""
    from matplotlib.patches import FancyBboxPatch

    height = len(lines) * _FLOW_LINE_IN + 2 * _FLOW_PAD_IN
    ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0,rounding_size=0.04",
                                facecolor=face, edgecolor=edge, linewidth=0.9))
    for index, (text, bold) in enumerate(lines):
        ax.text(x + width / 2, y + _FLOW_PAD_IN + (index + 0.5) * _FLOW_LINE_IN, text, ha="center", va="center",
                fontsize=8.5, fontweight="bold" if bold else "normal", color="#1d232b")
    return height


def _wrapped(text: str, width: int, bold: bool = False) -> list[tuple[str, bool]]:
    import textwrap

    return [(line, bold) for line in textwrap.wrap(text, width=width, break_on_hyphens=False) or [""]]


def flow_diagram(stages: Sequence[Mapping], outcomes: Sequence[Mapping] = ()) -> bytes:
    """A STARD participant-flow diagram: the stages down the left, each stage's exclusions to its right,
    and the index-test results by reference standard at the bottom.

    Args:
        stages: ``{"title": str, "count": str, "note": str, "exclusions": [str]}`` from the first
            stage to the analysed set; ``count`` is printed bold ("1,022 files").
        outcomes: up to two boxes under the last stage, ``{"title": str, "lines": [str]}``
            (reference-positive: TP / FN; reference-negative: FP / TN).
    """
    main_x, main_w = 0.15, 3.95
    side_x, side_w = 4.55, FLOW_WIDTH_IN - 4.55 - 0.1
    gap = 0.2
    plan: list[tuple[str, float, list[tuple[str, bool]]]] = []  # (kind, top, lines) laid out below
    y, side_floor = 0.08, 0.0
    for stage in stages:
        lines = _wrapped(str(stage.get("title", "")), 55) + [(str(stage.get("count", "")), True)]
        if stage.get("note"):
            lines += _wrapped(str(stage["note"]), 58)
        height = len(lines) * _FLOW_LINE_IN + 2 * _FLOW_PAD_IN
        plan.append(("main", y, lines))
        bottom = y + height
        exclusions = [line for text in stage.get("exclusions") or [] for line in _wrapped(str(text), 43)]
        next_top = bottom + gap
        if exclusions:
            # the exclusion box hangs beside the arrow to the next stage and may reach beside that stage
            side_lines = [("Excluded", True), *exclusions]
            side_top = max(bottom - 0.05, side_floor + 0.08)
            side_height = len(side_lines) * _FLOW_LINE_IN + 2 * _FLOW_PAD_IN
            plan.append(("side", side_top, side_lines))
            side_floor = side_top + side_height
            next_top = max(next_top, side_top + min(side_height / 2, 0.2) + 0.14)
        y = next_top
    y = max(y, side_floor + 0.1)
    outcome_lines = [[(str(box.get("title", "")), True), *((str(line), False) for line in box.get("lines") or [])]
                     for box in list(outcomes)[:2]]
    outcome_top = y
    total = y + (max((len(lines) for lines in outcome_lines), default=0) * _FLOW_LINE_IN + 2 * _FLOW_PAD_IN + 0.1
                 if outcome_lines else 0.0)
    with plt.rc_context(_STYLE):
        fig = Figure(figsize=(FLOW_WIDTH_IN, total), dpi=DPI)
        ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, FLOW_WIDTH_IN)
    ax.set_ylim(total, 0)
    ax.axis("off")
    arrow = {"arrowstyle": "-|>", "color": "#5b6470", "linewidth": 0.9, "shrinkA": 0, "shrinkB": 0,
             "mutation_scale": 9}
    centre = main_x + main_w / 2
    previous_bottom = None
    for kind, top, lines in plan:
        if kind == "main":
            if previous_bottom is not None:
                ax.annotate("", xy=(centre, top), xytext=(centre, previous_bottom), arrowprops=arrow)
            previous_bottom = top + _flow_box(ax, main_x, top, main_w, lines, "#eef5fb", OKABE_ITO["blue"])
        else:
            height = _flow_box(ax, side_x, top, side_w, lines, "#f6f6f6", "#999999")
            middle = top + min(height / 2, 0.2)
            ax.annotate("", xy=(side_x, middle), xytext=(centre, middle), arrowprops=arrow)
    if outcome_lines:
        width = (FLOW_WIDTH_IN - 0.25 - 0.3) / 2
        for index, lines in enumerate(outcome_lines):
            x = 0.15 + index * (width + 0.3)
            ax.annotate("", xy=(x + width / 2, outcome_top), xytext=(centre, previous_bottom), arrowprops=arrow)
            _flow_box(ax, x, outcome_top, width, lines, "#eefaf4", OKABE_ITO["green"])
    return png_bytes(fig)
