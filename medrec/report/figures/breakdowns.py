"""Figures that break the results down: the scores by reference class, the metrics by subgroup
(forest plot) and the predictions by class (multi-class confusion matrix).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medrec.report.figures.style import OKABE_ITO, SERIES_COLOURS, _ci, _new_figure, png_bytes


def score_distribution_figure(
    edges: Sequence[float],
    counts_by_class: Mapping[str, Sequence[float]],
    threshold: float | None = None,
) -> bytes:
    """Histograms of the scores of each reference class (side by side per bin), with the threshold.

    Args:
        edges: histogram bin edges on [0, 1].
        counts_by_class: legend label (e.g. "reference positive (n=60)") -> samples per bin.
        threshold: drawn as a vertical line when given.
    """
    fig, axes = _new_figure(6.4, 3.0)
    ax = axes[0, 0]
    bin_edges = np.asarray(edges, dtype=float)
    widths = np.diff(bin_edges)
    colours = (OKABE_ITO["sky"], OKABE_ITO["vermillion"], OKABE_ITO["green"], OKABE_ITO["purple"])
    hatches = ("", "////", "....", "xxxx")
    k = max(len(counts_by_class), 1)
    for index, (label, counts) in enumerate(counts_by_class.items()):
        values = np.nan_to_num(np.asarray(counts, dtype=float)[: len(widths)])
        ax.bar(bin_edges[:-1] + widths * index / k, values, width=widths / k * 0.95, align="edge",
               color=colours[index % len(colours)], hatch=hatches[index % len(hatches)], edgecolor="white",
               linewidth=0.5, label=label)
    if threshold is not None:
        ax.axvline(threshold, color=OKABE_ITO["black"], linestyle="--", linewidth=1.2,
                   label=f"threshold {threshold:.3g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (probability of the positive class)")
    ax.set_ylabel("samples")
    ax.set_title("Score distribution by reference class")
    ax.legend(loc="best")
    return png_bytes(fig)


def forest_figure(rows: Sequence[Mapping], metrics: Sequence[str] = ("sensitivity", "specificity")) -> bytes:
    """Forest plot: one row per subgroup, one panel per metric, point estimate and 95% CI.

    Args:
        rows: ``label`` (row text), ``small`` (True marks the row: hollow marker, grey text),
            ``overall`` (True draws it as the reference row) and one ``{"value", "ci95"}``
            mapping per metric name.
        metrics: the metric names to draw, one panel each.
    """
    height = 1.0 + 0.28 * max(len(rows), 1)
    fig, axes = _new_figure(6.6, height, nrows=1, ncols=len(metrics), sharey=True)
    positions = np.arange(len(rows))[::-1]
    for panel, name in enumerate(metrics):
        ax = axes[0, panel]
        for y, row in zip(positions, rows, strict=True):
            triple = _ci(row.get(name))
            if triple is None:
                ax.text(0.5, y, "n/a", ha="center", va="center", fontsize=7, color=OKABE_ITO["grey"])
                continue
            value, lo, hi = triple
            colour = OKABE_ITO["black"] if row.get("overall") else SERIES_COLOURS[panel % len(SERIES_COLOURS)]
            small = bool(row.get("small"))
            ax.plot([lo, hi], [y, y], color=OKABE_ITO["grey"] if small else colour, linewidth=1.4)
            ax.plot([value], [y], marker="D" if row.get("overall") else "s", markersize=5.5,
                    color=colour, markerfacecolor="white" if small else colour, linestyle="none")
        overall = next((r for r in rows if r.get("overall")), None)
        reference = _ci(overall.get(name)) if overall else None
        if reference:
            ax.axvline(reference[0], color=OKABE_ITO["grey"], linestyle=":", linewidth=1)
        ax.set_xlim(-0.05, 1.05)
        ax.set_title(name)
        ax.grid(axis="y", visible=False)
    first = axes[0, 0]
    first.set_yticks(positions)
    first.set_yticklabels([str(r.get("label", "")) for r in rows])
    for tick, row in zip(first.get_yticklabels(), rows, strict=True):
        if row.get("small"):
            tick.set_color(OKABE_ITO["grey"])
            tick.set_style("italic")
        if row.get("overall"):
            tick.set_fontweight("bold")
    first.set_ylim(-0.7, len(rows) - 0.3)
    return png_bytes(fig)


def confusion_heatmap(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """Heat map of a multi-class confusion matrix (rows: true class, columns: predicted), with counts."""
    values = np.asarray(matrix, dtype=float)
    size = 2.4 + 0.55 * len(classes)
    fig, axes = _new_figure(size + 0.8, size)
    ax = axes[0, 0]
    row_totals = values.sum(axis=1, keepdims=True)
    fractions = np.divide(values, row_totals, out=np.zeros_like(values), where=row_totals > 0)
    image = ax.imshow(fractions, cmap="cividis", vmin=0, vmax=1)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{int(values[i, j])}", ha="center", va="center", fontsize=8,
                    color="black" if fractions[i, j] > 0.55 else "white")
    ax.set_xticks(range(len(classes)), labels=list(classes), rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), labels=list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (colour: row fraction)")
    ax.grid(False)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class")
    return png_bytes(fig)
