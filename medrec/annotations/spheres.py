"""Lesion-table lesions on a target grid: spheres in patient space, and the voxel that holds a centre."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medrec.annotations.grid import _affine_4x4, _spatial_shape
from medrec.annotations.record import Lesion


def rasterise_spheres(shape: tuple[int, ...], affine_ras: np.ndarray, lesions: Sequence[Lesion]) -> np.ndarray:
    """Mark the voxels of each lesion sphere on a target grid.

    A voxel belongs to a lesion when its centre lies within ``diameter_mm / 2`` of the lesion's
    centre; the voxel holding the centre is always marked (when inside the array), so a lesion
    smaller than a voxel is never lost. A 2D target (a radiograph) is the plane ``k = 0``:
    lesions are projected onto it along the affine's third column and distances are in-plane.

    Args:
        shape: spatial shape, ``(I, J, K)`` or ``(I, J)``.
        affine_ras: 4x4 voxel-to-RAS matrix of the target (3x3 accepted for 2D).
        lesions: lesions with LPS centres.

    Returns:
        uint8 array of ``shape``, 1 inside a lesion.
    """
    grid = _spatial_shape(shape)
    flat = len(tuple(shape)) == 2
    affine = _affine_4x4(affine_ras, len(tuple(shape)))
    inverse = np.linalg.inv(affine)
    target = np.zeros(grid, dtype=np.uint8)
    for lesion in lesions:
        x, y, z = lesion.center_lps
        center_ras = np.array([-x, -y, z, 1.0])
        center_index = (inverse @ center_ras)[:3]
        radius = lesion.diameter_mm / 2.0
        # the sphere's extent along index axis a is radius * |row a of the inverse|
        half = radius * np.linalg.norm(inverse[:3, :3], axis=1)
        lo = np.maximum(np.floor(center_index - half), 0).astype(int)
        hi = np.minimum(np.ceil(center_index + half), np.array(grid) - 1).astype(int)
        if flat:
            lo[2] = hi[2] = 0
        if np.all(hi >= lo):
            axes = [np.arange(lo[a], hi[a] + 1, dtype=np.float64) for a in range(3)]
            if flat:
                axes[2] = np.array([center_index[2]])  # in-plane distance: the voxels at the lesion's depth
            ii, jj, kk = np.meshgrid(*axes, indexing="ij")
            world = np.tensordot(affine[:3, :3], np.stack([ii, jj, kk]), axes=1) + affine[:3, 3, None, None, None]
            inside = np.sum((world - center_ras[:3, None, None, None]) ** 2, axis=0) <= radius**2
            target[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] |= inside.astype(np.uint8)
        nearest = nearest_voxel(lesion.center_lps, shape, affine_ras)
        if nearest is not None:
            target[(*nearest, 0) if flat else nearest] = 1
    return target.reshape(tuple(int(n) for n in shape))


def nearest_voxel(center_lps: Sequence[float], shape: tuple[int, ...],
                  affine_ras: np.ndarray) -> tuple[int, ...] | None:
    """The voxel that holds an LPS point (the one :func:`rasterise_spheres` always marks), or None
    when it lies outside the array. A 2D target gives ``(i, j)``: the point projected onto it.

    Args:
        center_lps: ``(x, y, z)`` patient LPS mm.
        shape: spatial shape, ``(I, J, K)`` or ``(I, J)``.
        affine_ras: 4x4 voxel-to-RAS matrix of the target (3x3 accepted for 2D).
    """
    grid = np.array(_spatial_shape(shape))
    flat = len(tuple(shape)) == 2
    x, y, z = (float(v) for v in center_lps)
    index = (np.linalg.inv(_affine_4x4(affine_ras, len(tuple(shape)))) @ np.array([-x, -y, z, 1.0]))[:3]
    nearest = np.floor(index + 0.5).astype(int)
    if flat:
        nearest[2] = 0
    if not (np.all(nearest >= 0) and np.all(nearest < grid)):
        return None
    return tuple(int(v) for v in nearest[:2]) if flat else tuple(int(v) for v in nearest)
