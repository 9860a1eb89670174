"""Where a finding-map model looked: the top finding and the candidate findings of each scored sample.

The top finding is the voxel with the highest logit of the model's finding map. Its location
goes from the preprocessed grid to patient LPS millimetres through the preprocessed image's
affine (RAS by the loader's contract: x and y change sign). Its size is the connected region
around the peak where the map's probability is at least half the peak's (scipy's ``label``),
reported as the diameter of the sphere of the same volume. ``finding_probability`` is the
uncalibrated sigmoid of the peak logit: a per-voxel figure, not the study's calibrated score.

The candidate findings (:func:`candidate_findings`, written to the ``<output stem>.findings.csv``
side file) are every connected region of the map above a low probability, each located and sized
by the same rules; they feed lesion-level results (FROC) in ``medrec report --lesions``. Both come
from one probability map per sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

FINDING_COLUMNS: tuple[str, ...] = ("finding_x", "finding_y", "finding_z", "finding_diameter_mm", "finding_probability")
# Candidate findings (the ``<output stem>.findings.csv`` side file): regions above this probability,
# at most this many per sample, the most probable first.
CANDIDATE_MIN_PROBABILITY = 0.05
MAX_CANDIDATES = 10


def _peak_lps(peak: tuple[int, ...], affine: np.ndarray) -> tuple[float, float, float]:
    """LPS mm of a voxel index through a voxel-to-RAS affine (4x4, or 3x3 for a 2D image)."""
    index = np.zeros(4)
    index[: len(peak)] = peak
    index[3] = 1.0
    ras = affine @ index if affine.shape == (4, 4) else np.append(affine[:3, :3] @ index[:3], 1.0)
    return tuple(round(float(v), 2) for v in (-ras[0], -ras[1], ras[2]))  # type: ignore[return-value]


def _equivalent_diameter(voxels: int, affine: np.ndarray, ndim: int) -> float:
    """Diameter (mm) of the sphere (3D) or disc (2D) with the volume / area of ``voxels`` voxels."""
    columns = affine[:3, :ndim]
    voxel_size = float(np.sqrt(np.linalg.det(columns.T @ columns))) if ndim == 3 else float(
        np.linalg.norm(columns[:, 0]) * np.linalg.norm(columns[:, 1])
    )
    size = voxels * voxel_size
    diameter = (6 * size / np.pi) ** (1 / 3) if ndim == 3 else 2 * np.sqrt(size / np.pi)
    return round(float(diameter), 2)


def _half_peak_voxels(probability: np.ndarray, peak: tuple[int, ...], box: tuple[slice, ...] | None = None,
                      inside: np.ndarray | None = None) -> int:
    """Voxels of the connected region around ``peak`` where the probability is at least half the peak's.

    ``box`` / ``inside`` restrict the search to a bounding box and a mask within it (a candidate's
    region), which gives the same region when that region holds every voxel at half the peak or above.
    """
    from scipy import ndimage

    threshold = float(probability[peak]) / 2
    if box is None:
        regions, _ = ndimage.label(probability >= threshold)
        return int((regions == regions[peak]).sum())
    regions, _ = ndimage.label((probability[box] >= threshold) & inside)
    local = tuple(int(p) - (s.start or 0) for p, s in zip(peak, box, strict=True))
    return int((regions == regions[local]).sum())


def top_finding(probability: np.ndarray, affine_ras: np.ndarray | None) -> dict[str, float | None]:
    """The top finding of a probability map ``(X, Y[, Z])`` whose voxels map to RAS mm by ``affine_ras``."""
    peak = tuple(int(i) for i in np.unravel_index(int(np.argmax(probability)), probability.shape))
    row: dict[str, float | None] = dict.fromkeys(FINDING_COLUMNS)
    row["finding_probability"] = round(float(probability[peak]), 6)
    if affine_ras is None:
        return row
    affine = np.asarray(affine_ras, dtype=np.float64)
    row["finding_x"], row["finding_y"], row["finding_z"] = _peak_lps(peak, affine)
    row["finding_diameter_mm"] = _equivalent_diameter(_half_peak_voxels(probability, peak), affine, probability.ndim)
    return row


def candidate_findings(
    probability: np.ndarray,
    affine_ras: np.ndarray | None,
    min_probability: float = CANDIDATE_MIN_PROBABILITY,
    max_findings: int = MAX_CANDIDATES,
) -> list[dict[str, float | int | None]]:
    """The candidate findings of a probability map: one per connected region above ``min_probability``.

    A region is a face-connected set of voxels whose probability exceeds ``min_probability``
    (scipy's ``label``). Its candidate sits at the region's most probable voxel (the first in C
    order on ties) and its size follows :func:`top_finding`'s rule: the sphere- (3D) or disc- (2D)
    equivalent diameter of the connected region around the peak at half the peak's probability or
    more. The most probable candidate is therefore the top finding whenever its peak exceeds
    ``min_probability``.

    Args:
        probability: the map ``(X, Y[, Z])`` (:func:`finding_probability_map`).
        affine_ras: its voxel-to-RAS affine; None leaves the location and diameter empty.
        min_probability: regions start above this probability.
        max_findings: keep at most this many candidates (the most probable).

    Returns:
        Dicts with ``rank`` (1 = most probable), ``x``, ``y``, ``z`` (LPS mm of the peak),
        ``diameter_mm`` and ``probability`` (the peak's, uncalibrated), sorted by probability
        (then by the peak's position in C order).
    """
    from scipy import ndimage

    regions, count = ndimage.label(probability > min_probability)
    if count == 0 or max_findings < 1:
        return []
    # O(voxels) once (the regions' maxima), then work only inside the bounding boxes of the kept regions
    maxima = np.asarray(ndimage.maximum(probability, regions, np.arange(1, count + 1)), dtype=np.float64)
    cutoff = np.sort(maxima)[::-1][min(max_findings, count) - 1]
    boxes = ndimage.find_objects(regions)
    ranked = []
    for region in np.flatnonzero(maxima >= cutoff) + 1:
        box = boxes[region - 1]
        local = np.where(regions[box] == region, probability[box], -np.inf)
        offset = np.unravel_index(int(np.argmax(local)), local.shape)  # first in C order on ties
        peak = tuple(int(s.start) + int(i) for s, i in zip(box, offset, strict=True))
        flat_index = int(np.ravel_multi_index(peak, probability.shape))
        ranked.append((-float(probability[peak]), flat_index, peak, int(region)))
    ranked.sort()
    affine = None if affine_ras is None else np.asarray(affine_ras, dtype=np.float64)
    found: list[dict[str, float | int | None]] = []
    for rank, (negative, _, peak, region) in enumerate(ranked[:max_findings], start=1):
        value = -negative
        row: dict[str, float | int | None] = {"rank": rank, "x": None, "y": None, "z": None, "diameter_mm": None,
                                              "probability": round(value, 6)}
        if affine is not None:
            row["x"], row["y"], row["z"] = _peak_lps(peak, affine)
            box = boxes[region - 1]
            # within the region whenever half the peak is above min_probability; else the whole map
            voxels = (_half_peak_voxels(probability, peak, box, regions[box] == region) if value / 2 > min_probability
                      else _half_peak_voxels(probability, peak))
            row["diameter_mm"] = _equivalent_diameter(voxels, affine, probability.ndim)
        found.append(row)
    return found


@torch.inference_mode()
def finding_probability_map(model: Any, image: torch.Tensor, device: torch.device | None = None) -> np.ndarray:
    """The sigmoid of a finding-map model's logit map of one preprocessed image ``(C, *spatial)``."""
    inner = getattr(model, "module", model)
    parameter = next(inner.parameters())
    batch = image[None].to(device or parameter.device, dtype=parameter.dtype)
    was_training = inner.training
    inner.eval()
    try:
        maps = inner.finding_map(batch)
    finally:
        inner.train(was_training)
    return torch.sigmoid(maps[0, 0].float()).cpu().numpy()
