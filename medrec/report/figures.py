"""The report's figures, drawn with matplotlib's Agg backend and returned as PNG bytes.

Every function takes plain numbers (lists, dicts from the analysis) and returns the bytes of one
PNG, so that the HTML and the PDF embed exactly the same image. The output is deterministic:
fixed size and dpi, bundled fonts, no software or date metadata in the file, so the same input
gives the same bytes. Colours come from the Okabe-Ito palette, which stays distinguishable
for the common forms of colour blindness and in greyscale print (markers and line styles differ
too).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

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


def thumbnail_figure(image: np.ndarray | None, title: str, note: str = "") -> bytes:
    """A small greyscale picture of one case (or an "image unavailable" placeholder).

    Args:
        image: 2D array in display orientation (rows, cols), already windowed to [0, 1];
            None draws the placeholder.
        title: the case line (pseudonym, score, label).
        note: a second line (which slice, or why no image).
    """
    fig, axes = _new_figure(2.3, 2.6)
    ax = axes[0, 0]
    ax.grid(False)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if image is None:
        ax.set_facecolor("#eeeeee")
        ax.text(0.5, 0.5, "image unavailable", ha="center", va="center", transform=ax.transAxes,
                color="#555555", fontsize=8)
    else:
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    ax.set_title(title, fontsize=7.5)
    if note:
        import textwrap

        # the note names the slice and the marks ("lesion slice 14/40, annotated lesion 12 mm; ..."):
        # wrapped to the thumbnail's width rather than cut off by it
        ax.set_xlabel("\n".join(textwrap.wrap(note, width=44, break_on_hyphens=False)), fontsize=7, color="#444444")
    return png_bytes(fig)


def display_slice(volume: np.ndarray, modality: str = "", mode: str = "middle") -> np.ndarray:
    """Pick a 2D picture of a sample and window it to [0, 1] for display.

    Args:
        volume: ``(I, J, K)`` or ``(I, J)`` real-world values (channel axis already removed),
            in medrec's ``vol[i, j, k]`` convention.
        modality: ``CT`` gets a soft-tissue window (W 400, L 40); others the 1st-99th percentile.
        mode: ``middle`` (the middle slice) or ``mip`` (maximum-intensity projection along k).

    Returns:
        The picture in display orientation (DICOM rows down, columns across), values in [0, 1].
    """
    data = np.asarray(volume, dtype=np.float32)
    if data.ndim == 3:
        plane = data.max(axis=2) if mode == "mip" else data[:, :, data.shape[2] // 2]
    elif data.ndim == 2:
        plane = data
    else:
        raise ValueError(f"display_slice expects a 2D or 3D array, got shape {data.shape}")
    plane = plane.T  # vol[:, :, k].T is the DICOM pixel array (rows x cols)
    if modality.upper() == "CT":
        low, high = 40 - 200, 40 + 200
    else:
        finite = plane[np.isfinite(plane)]
        if finite.size == 0:
            return np.zeros_like(plane)
        low, high = np.percentile(finite, [1, 99])
    if high <= low:
        high = low + 1
    return np.clip((plane - low) / (high - low), 0, 1)


LESION_MARK = OKABE_ITO["yellow"]  # circle / outline of an annotated lesion on a case picture
FINDING_MARK = OKABE_ITO["sky"]  # crosshair on the model's top finding


def mark_width(shape: tuple[int, ...]) -> int:
    """Line width in pixels of the marks on a picture of ``shape``: one pixel per 100 pixels across (at
    least one), so that a mark on a large picture survives the thumbnail's downscaling."""
    return max(1, round(max(shape[:2]) / 100))


def mark_slice(
    picture: np.ndarray,
    circles: Sequence[tuple[float, float, float, float]] = (),
    crosses: Sequence[tuple[float, float]] = (),
    outline: np.ndarray | None = None,
) -> np.ndarray:
    """A windowed picture (:func:`display_slice`) in colour, with the marks of the failure review burnt in.

    The marks are drawn into the pixels rather than as matplotlib patches so that they sit on exactly
    the pixels they name whatever the thumbnail's size (and a test can find them there).

    Args:
        picture: ``(rows, cols)`` values in [0, 1].
        circles: ``(row, col, radius_rows, radius_cols)`` in pixels: a ring around an annotated lesion
            (an ellipse in pixels when the pixels are not square, a circle in mm); drawn in
            :data:`LESION_MARK`, at least 2 pixels in radius.
        crosses: ``(row, col)``: a crosshair with an open centre (the finding itself stays visible),
            drawn in :data:`FINDING_MARK`.
        outline: ``(rows, cols)`` boolean lesion mask: the pixels just outside it are drawn in
            :data:`LESION_MARK`.

    Returns:
        ``(rows, cols, 3)`` float32 RGB values in [0, 1].
    """
    from matplotlib.colors import to_rgb
    from scipy import ndimage

    grey = np.clip(np.nan_to_num(np.asarray(picture, dtype=np.float32)), 0, 1)
    if grey.ndim != 2:
        raise ValueError(f"mark_slice expects a 2D picture, got shape {grey.shape}")
    image = np.repeat(grey[..., None], 3, axis=2)
    width = mark_width(grey.shape)
    rows, cols = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]].astype(np.float64)
    lesion_colour, finding_colour = to_rgb(LESION_MARK), to_rgb(FINDING_MARK)
    if outline is not None and np.any(outline):
        inside = np.asarray(outline, dtype=bool)
        image[ndimage.binary_dilation(inside, iterations=width) & ~inside] = lesion_colour
    for row, col, radius_rows, radius_cols in circles:
        radius_rows, radius_cols = max(float(radius_rows), 2.0), max(float(radius_cols), 2.0)
        # distance from the centre in radii; the ring is the band of `width` pixels across radius 1
        distance = np.hypot((rows - row) / radius_rows, (cols - col) / radius_cols)
        image[np.abs(distance - 1.0) * min(radius_rows, radius_cols) <= max(width / 2, 0.5)] = lesion_colour
    gap, arm = max(2.0, 0.04 * max(grey.shape)), max(5.0, 0.12 * max(grey.shape))
    half = width // 2  # the arms are centred on the finding's pixel: 1, 3, 5 ... pixels thick
    for row, col in crosses:
        across, down = np.abs(cols - col), np.abs(rows - row)
        horizontal = (down <= half) & (across >= gap) & (across <= arm)
        vertical = (across <= half) & (down >= gap) & (down <= arm)
        image[horizontal | vertical] = finding_colour
    return image


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
