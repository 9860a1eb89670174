"""What every report figure shares: the Okabe-Ito palette, the rc style, a new figure of a given size,
its deterministic PNG bytes, and how a metric's value and 95% CI are read.

Importing this module selects matplotlib's Agg backend, before pyplot is imported: the figures
are drawn off-screen.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

# Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO: dict[str, str] = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "black": "#000000",
    "grey": "#999999",
}
SERIES_COLOURS: tuple[str, ...] = (
    OKABE_ITO["blue"], OKABE_ITO["vermillion"], OKABE_ITO["green"], OKABE_ITO["purple"],
    OKABE_ITO["orange"], OKABE_ITO["sky"],
)
DPI = 120

_STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "svg.hashsalt": "medrec",
    "path.simplify": False,
}


def _new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw) -> tuple[Figure, np.ndarray]:
    with plt.rc_context(_STYLE):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="tight")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def png_bytes(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes without software / time metadata (same figure -> same bytes)."""
    buffer = io.BytesIO()
    with plt.rc_context(_STYLE):
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return buffer.getvalue()


def _ci(metric: Mapping | None) -> tuple[float, float, float] | None:
    """(value, lo, hi) of a ``{"value", "ci95"}`` metric, or None when any part is missing."""
    if not metric:
        return None
    value = metric.get("value")
    ci = metric.get("ci95") or [None, None]
    if value is None or ci[0] is None or ci[1] is None:
        return None
    values = (float(value), float(ci[0]), float(ci[1]))
    if any(math.isnan(v) for v in values):
        return None
    return values
