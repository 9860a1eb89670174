"""Lesion copy-paste: more lesion instances from the annotated ones, on other studies' tissue.

A finding-map model trained on a few dozen small annotated lesions learns those lesions (with
their surroundings) rather than what a lesion is: on a cohort of 10-18 mm lesions it found half of
its training lesions and almost none of the validation ones (datasets/synthetic_phantoms.md).
Copy-paste augmentation (as in Ghiasi et al. 2021, and lesion-level variants such as CarveMix)
multiplies the instances: each annotated lesion (a connected component of a training mask, with
its neighbouring slices) is cut out as its difference from its own surrounding tissue and added
to another study at a place whose tissue looks like the lesion's original surroundings (the same
median intensity within the spread of that tissue, no more textured than it). The target there
becomes the pasted lesion's mask. Only the training studies' own annotations are used: nothing
is assumed about lesion shape, size or contrast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# In-plane margin (voxels) around a lesion whose tissue describes its surroundings.
MARGIN = 3
# Places tried per paste before the draw falls back to an ordinary one.
TRIES = 24


@dataclass(frozen=True)
class LesionPiece:
    """One annotated lesion cut out of its study.

    Attributes:
        delta: ``(C, X, Y, Z)`` the lesion's box minus its surrounding tissue's median (per channel),
            zero outside the lesion's (softened) mask.
        weight: ``(X, Y, Z)`` the softened mask (1 inside, falling to 0 over about a voxel).
        mask: ``(X, Y, Z)`` the lesion's voxels.
        background: ``(C,)`` median of the surrounding tissue.
        spread: ``(C,)`` its interquartile range (texture and noise).
    """

    delta: np.ndarray
    weight: np.ndarray
    mask: np.ndarray
    background: np.ndarray
    spread: np.ndarray


def cut_lesions(volume: np.ndarray, mask: np.ndarray) -> list[LesionPiece]:
    """The connected lesions of ``mask`` on ``volume`` ``(C, X, Y, Z)`` as pieces (tiny ones skipped)."""
    components, _ = ndimage.label(mask > 0)
    pieces = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        margins = (MARGIN, MARGIN, 0)[: len(box)]  # in-plane only: the stack's neighbours give depth
        grown = tuple(
            slice(max(0, axis.start - margin), min(mask.shape[dim], axis.stop + margin))
            for dim, (axis, margin) in enumerate(zip(box, margins, strict=True))
        )
        lesion = components[grown] == index
        if lesion.sum() < 4:
            continue
        near = ndimage.binary_dilation(components[grown] > 0, iterations=1)
        values = volume[(slice(None), *grown)].astype(np.float32)
        outside = ~near
        if outside.sum() < 8:
            continue
        surroundings = values[:, outside]
        background = np.median(surroundings, axis=1)
        q25, q75 = np.percentile(surroundings, [25, 75], axis=1)
        weight = np.clip(ndimage.gaussian_filter(lesion.astype(np.float32), sigma=(0.6, 0.6, 0.0)) * 2.0, 0.0, 1.0)
        weight = np.maximum(weight, lesion.astype(np.float32))
        delta = (values - background[:, None, None, None]) * weight[None]
        pieces.append(LesionPiece(delta, weight, lesion, background, np.maximum(q75 - q25, 1e-3)))
    return pieces


def paste_lesion(
    volume: np.ndarray, z: int, context: int, piece: LesionPiece, rng: np.random.Generator,
    stack: Callable[[np.ndarray, int, int], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
    """Slice ``z`` of ``volume`` as a 2.5D stack with ``piece`` added at a place like its own surroundings.

    The piece's slice that lands on ``z`` is drawn among its lesion slices, so a lesion's edges
    are seen as well as its middle; each stacked neighbour gets the piece's matching slice.

    Returns:
        ``(image, target, (x, y))`` (the stack, the pasted lesion's mask on slice ``z`` and the
        lesion's in-plane centre; the caller adds the study's own target), or None when no place
        in ``TRIES`` looked like the piece's surroundings.
    """
    channels = volume.shape[0]
    sx, sy, sz = piece.mask.shape
    extent = volume.shape[1:3]
    if sx >= extent[0] or sy >= extent[1]:
        return None
    lesion_slices = np.flatnonzero(piece.mask.any(axis=(0, 1)))
    middle = int(lesion_slices[rng.integers(len(lesion_slices))])
    centre = volume[:, :, :, z]
    core = piece.mask[:, :, middle]
    for _ in range(TRIES):
        x, y = int(rng.integers(extent[0] - sx)), int(rng.integers(extent[1] - sy))
        region = centre[:, x:x + sx, y:y + sy]
        tissue = region.reshape(channels, -1)
        median = np.median(tissue, axis=1)
        q25, q75 = np.percentile(tissue, [25, 75], axis=1)
        if np.all(np.abs(median - piece.background) <= piece.spread) and np.all(q75 - q25 <= 1.5 * piece.spread):
            break
    else:
        return None
    image = np.array(stack(volume, z, context), dtype=np.float32, copy=True)
    for position, offset in enumerate(range(-context, context + 1)):
        k = middle + offset
        if not 0 <= k < sz or min(max(z + offset, 0), volume.shape[-1] - 1) != z + offset:
            continue
        rows = slice(position * channels, (position + 1) * channels)
        weight = piece.weight[None, :, :, k]
        # The lesion replaces the tissue under it: its own values, moved to this tissue's level.
        region = image[rows, x:x + sx, y:y + sy]
        pasted = region * (1.0 - weight) + weight * median[:, None, None] + piece.delta[:, :, :, k]
        image[rows, x:x + sx, y:y + sy] = pasted
    target = np.zeros((1, *extent), dtype=np.float32)
    target[0, x:x + sx, y:y + sy] = core
    return image, target, (x + sx // 2, y + sy // 2)
