"""Pictures of single cases for the failure review: a slice picked and windowed for display, the
lesion and finding marks burnt into it, and the thumbnail that shows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medrec.report.figures.style import OKABE_ITO, _new_figure, png_bytes


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
