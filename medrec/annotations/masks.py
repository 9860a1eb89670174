"""NIfTI lesion masks: loaded, brought onto a target grid by nearest neighbour, and measured."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medrec.annotations.grid import _affine_4x4, _spatial_shape
from medrec.errors import AnnotationError


@dataclass(frozen=True)
class _Resampled:
    array: np.ndarray
    source_voxels: int  # lesion voxels in the mask file
    overlaps: bool  # the mask's lesion extent and the target grid intersect in world space


def resample_mask(path: str | Path, shape: tuple[int, ...], affine_ras: np.ndarray) -> np.ndarray:
    """Bring a NIfTI lesion mask onto a target grid by nearest neighbour through the two affines.

    Hand-written rather than ``scipy.ndimage.affine_transform`` so that a target voxel takes the
    source voxel whose extent holds its centre (out-of-grid only beyond half a voxel), a 2D target
    can read a single-slice mask by projection, and a lesion smaller than a target voxel still
    marks the voxel that holds it.

    Args:
        path: NIfTI mask in the scan's world geometry, any grid; values > 0.5 are lesion.
        shape: target spatial shape, ``(I, J, K)`` or ``(I, J)``.
        affine_ras: 4x4 voxel-to-RAS matrix of the target (3x3 accepted for 2D).

    Returns:
        uint8 array of ``shape``; target voxels outside the mask's grid are 0.

    Raises:
        AnnotationError: the file is missing, unreadable, not 2D / 3D, or holds NaN.
    """
    return _resample(Path(path), shape, affine_ras).array


def _load_mask(source: Path) -> tuple[np.ndarray, np.ndarray]:
    if not source.is_file():
        raise AnnotationError(f"{source}: mask file not found")
    try:
        image = nib.load(str(source))
        data = np.asarray(image.dataobj, dtype=np.float32)
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as e:  # nibabel raises many unrelated types for damaged files
        raise AnnotationError(f"{source}: mask is not a readable NIfTI file ({type(e).__name__}: {e})") from e
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise AnnotationError(f"{source}: mask must be 2D or 3D, got shape {data.shape}")
    n_nan = int(np.isnan(data).sum())
    if n_nan:
        raise AnnotationError(f"{source}: mask holds {n_nan} NaN voxel(s) of {data.size}; write 0 / 1 values")
    return data > 0.5, affine


def mask_lesion_diameters(path: str | Path) -> list[float]:
    """Equivalent diameters (mm) of the lesions in a NIfTI mask, one per connected component.

    A component of volume ``V`` counts as a sphere of diameter ``(6 V / pi) ** (1 / 3)``; in a
    single-slice (2D) mask, a component of area ``A`` as a disc of diameter ``2 (A / pi) ** 0.5``.
    Voxels touching by a face belong to one lesion.

    Raises:
        AnnotationError: as :func:`resample_mask` for a missing, unreadable or NaN mask.
    """
    lesion, affine = _load_mask(Path(path))
    flat = lesion.shape[2] == 1
    labelled, count = ndimage.label(lesion[..., 0] if flat else lesion)
    if not count:
        return []
    voxels = np.bincount(labelled.ravel())[1:]
    columns = affine[:3, :3]
    if flat:
        area = float(np.linalg.norm(np.cross(columns[:, 0], columns[:, 1])))
        return [round(2.0 * math.sqrt(n * area / math.pi), 3) for n in voxels]
    volume = abs(float(np.linalg.det(columns)))
    return [round((6.0 * n * volume / math.pi) ** (1.0 / 3.0), 3) for n in voxels]


def _resample(source: Path, shape: tuple[int, ...], affine_ras: np.ndarray) -> _Resampled:
    lesion, source_affine = _load_mask(source)
    grid = _spatial_shape(shape)
    flat = len(tuple(shape)) == 2
    target_affine = _affine_4x4(affine_ras, len(tuple(shape)))
    to_source = np.linalg.inv(source_affine) @ target_affine
    if flat and lesion.shape[2] == 1:
        to_source[2] = 0.0  # a single-slice mask on a 2D image: projection, whatever the depth
    source_shape = np.array(lesion.shape)
    target = np.zeros(grid, dtype=np.uint8)
    ii, jj = np.meshgrid(np.arange(grid[0], dtype=np.float64), np.arange(grid[1], dtype=np.float64), indexing="ij")
    for k in range(grid[2]):  # one slice at a time keeps memory at one slice of indices
        points = to_source[:3, :3] @ np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, float(k))]) + to_source[:3, 3:]
        index = np.floor(points + 0.5).astype(np.int64)
        inside = np.all((index >= 0) & (index < source_shape[:, None]), axis=0)
        values = np.zeros(ii.size, dtype=bool)
        values[inside] = lesion[index[0, inside], index[1, inside], index[2, inside]]
        target[:, :, k] = values.reshape(grid[:2])
    source_voxels = int(lesion.sum())
    overlaps = False
    if source_voxels:
        overlaps = _extents_overlap(lesion, source_affine, grid, target_affine, flat)
        if not target.any() and overlaps:
            # lesion smaller than a target voxel: mark the voxel holding its centroid
            centroid = np.append(np.argwhere(lesion).mean(axis=0), 1.0)
            nearest = np.floor((np.linalg.inv(target_affine) @ source_affine @ centroid)[:3] + 0.5).astype(int)
            if flat:
                nearest[2] = 0
            if np.all(nearest >= 0) and np.all(nearest < np.array(grid)):
                target[tuple(nearest)] = 1
    return _Resampled(target.reshape(tuple(int(n) for n in shape)), source_voxels, overlaps)


def _extents_overlap(lesion: np.ndarray, source_affine: np.ndarray, grid: tuple[int, int, int],
                     target_affine: np.ndarray, flat: bool) -> bool:
    """Whether the lesion voxels' world box meets the target grid's box (both in target index space)."""
    found = np.argwhere(lesion)
    lo, hi = found.min(axis=0) - 0.5, found.max(axis=0) + 0.5
    corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    in_target = (np.linalg.inv(target_affine) @ source_affine @ corners.T)[:3]
    box_lo, box_hi = in_target.min(axis=1), in_target.max(axis=1)
    grid_lo, grid_hi = np.full(3, -0.5), np.array(grid, dtype=np.float64) - 0.5
    if flat:
        box_lo[2], box_hi[2] = grid_lo[2], grid_hi[2]
    return bool(np.all(box_hi >= grid_lo) and np.all(box_lo <= grid_hi))
