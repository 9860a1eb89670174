"""A target grid: its voxel-to-RAS affine as a 4x4 matrix and its spatial shape as three axes.

Targets are described by their voxel-to-RAS affine (the NIfTI / MONAI convention that
:func:`medrec.loader.load_sample` returns); a 2D image (a radiograph) is a grid one voxel deep.
"""

from __future__ import annotations

import numpy as np

from medrec.errors import AnnotationError


def _affine_4x4(affine_ras: np.ndarray, spatial_dims: int) -> np.ndarray:
    """The 4x4 voxel-to-RAS matrix (a 3x3 affine of a 2D image gets the identity as its third axis)."""
    affine = np.asarray(affine_ras, dtype=np.float64)
    if affine.shape == (4, 4):
        return affine
    if affine.shape == (3, 3) and spatial_dims == 2:
        full = np.eye(4)
        full[:2, :2] = affine[:2, :2]
        full[:2, 3] = affine[:2, 2]
        return full
    raise AnnotationError(f"affine must be 4x4 (or 3x3 for a 2D image), got shape {affine.shape}")


def _spatial_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    dims = tuple(int(n) for n in shape)
    if len(dims) not in (2, 3):
        raise AnnotationError(f"target shape must have 2 or 3 spatial dimensions, got {dims}")
    return (*dims, 1) if len(dims) == 2 else dims  # type: ignore[return-value]
