"""Patient coordinates (LPS mm) <-> the pixels of single-frame source slices, through highdicom.

Conventions (DICOM's): ImagePositionPatient is the centre of the first transmitted pixel;
ImageOrientationPatient[0:3] points along a row (increasing column index), [3:6] down a column
(increasing row index); PixelSpacing is (between rows, between columns). SR image coordinates
(SCOORD) put (0, 0) at the top-left *corner* of the top-left pixel, so the centre of pixel
(column c, row r) is (c + 0.5, r + 0.5); :class:`highdicom.spatial.ReferenceToImageTransformer`
applies that offset. NIfTI finding maps are RAS: x_lps = -x_ras, y_lps = -y_ras.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from highdicom.spatial import PixelToReferenceTransformer, ReferenceToImageTransformer
from pydicom.dataset import Dataset
from scipy import ndimage

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
PLANE_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


def has_plane_geometry(dataset: Dataset) -> bool:
    """Whether a single-frame image places its pixels in patient space (IPP, IOP and PixelSpacing)."""
    return all(dataset.get(keyword) for keyword in PLANE_KEYWORDS) and int(dataset.get("NumberOfFrames", 1) or 1) == 1


def slice_normal(dataset: Dataset) -> np.ndarray:
    """The unit normal IOP[0:3] x IOP[3:6] of a slice."""
    orientation = np.asarray(dataset.ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / np.linalg.norm(normal)


def sort_along_normal(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Slices ordered by position along the first slice's normal (the order medrec's loader stacks them)."""
    normal = slice_normal(datasets[0])
    return sorted(datasets, key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)))


def slice_spacing(datasets: Sequence[Dataset]) -> float:
    """Distance between neighbouring slices (median), else SpacingBetweenSlices / SliceThickness, else 1 mm."""
    if len(datasets) > 1:
        normal = slice_normal(datasets[0])
        positions = np.sort([np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal) for ds in datasets])
        steps = np.diff(positions)
        steps = steps[steps > 0]
        if steps.size:
            return float(np.median(steps))
    first = datasets[0]
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = first.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


@dataclass(frozen=True)
class SlicePoint:
    """A patient point seen on its nearest slice.

    Attributes:
        dataset: the slice whose plane is nearest to the point.
        column, row: image coordinates of the point's projection (SCOORD convention, pixel units).
        distance_mm: distance from the point to that plane.
        inside: the projection lies on the image and the point within half a slice spacing of the plane.
    """

    dataset: Dataset
    column: float
    row: float
    distance_mm: float
    inside: bool


def _image_transformer(dataset: Dataset) -> ReferenceToImageTransformer:
    return ReferenceToImageTransformer(
        image_position=[float(v) for v in dataset.ImagePositionPatient],
        image_orientation=[float(v) for v in dataset.ImageOrientationPatient],
        pixel_spacing=[float(v) for v in dataset.PixelSpacing],
    )


def nearest_slice(datasets: Sequence[Dataset], point_lps: Sequence[float]) -> SlicePoint:
    """The slice whose plane is nearest to ``point_lps``, with the point's image coordinates on it.

    Args:
        datasets: single-frame slices with plane geometry (:func:`has_plane_geometry`).
        point_lps: (x, y, z) in patient LPS mm.
    """
    point = np.asarray([point_lps], dtype=float)
    best: SlicePoint | None = None
    for dataset in datasets:
        column, row, offset = _image_transformer(dataset)(point)[0]
        if best is None or abs(offset) < best.distance_mm:
            best = SlicePoint(dataset, float(column), float(row), float(abs(offset)), False)
    if best is None:
        raise ValueError("nearest_slice needs at least one slice")
    on_image = 0.0 <= best.column <= float(best.dataset.Columns) and 0.0 <= best.row <= float(best.dataset.Rows)
    within = best.distance_mm <= slice_spacing(datasets) / 2.0
    return SlicePoint(best.dataset, best.column, best.row, best.distance_mm, on_image and within)


def pixel_centres_lps(dataset: Dataset) -> np.ndarray:
    """The LPS mm position of every pixel centre of a slice, shape ``(Rows, Columns, 3)``."""
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    column_index, row_index = np.meshgrid(np.arange(columns), np.arange(rows))
    transformer = PixelToReferenceTransformer(
        image_position=[float(v) for v in dataset.ImagePositionPatient],
        image_orientation=[float(v) for v in dataset.ImageOrientationPatient],
        pixel_spacing=[float(v) for v in dataset.PixelSpacing],
    )
    indices = np.stack([column_index.ravel(), row_index.ravel()], axis=1)
    return transformer(indices).reshape(rows, columns, 3)


def sample_on_slices(values: np.ndarray, affine_ras: np.ndarray, datasets: Sequence[Dataset]) -> np.ndarray:
    """Nearest-neighbour samples of a volume at every pixel centre of each slice, ``(slices, Rows, Columns)``.

    Args:
        values: a 3D array ``(I, J, K)`` whose voxel (i, j, k) lies at ``affine_ras @ (i, j, k, 1)`` (RAS mm),
            as nibabel reads a NIfTI file.
        affine_ras: its 4 x 4 voxel-to-RAS affine.
        datasets: the slices to sample on (single-frame, with plane geometry).

    Returns:
        The sampled values; pixels whose centre falls outside the volume are 0.
    """
    lps_to_index = np.linalg.inv(RAS_TO_LPS @ np.asarray(affine_ras, dtype=float))
    frames = []
    for dataset in datasets:
        centres = pixel_centres_lps(dataset)
        shape = centres.shape[:2]
        points = centres.reshape(-1, 3)
        index = lps_to_index[:3, :3] @ points.T + lps_to_index[:3, 3:4]
        # grid-constant: a voxel covers +-0.5 of its index, so edge voxels keep their full extent
        # ("constant" would drop the outer half voxel)
        sampled = ndimage.map_coordinates(values, index, order=0, mode="grid-constant", cval=0.0)
        frames.append(sampled.reshape(shape))
    return np.stack(frames)
