"""Sort the frames of a series along the slice normal and build its affine.

Geometry convention (shared by synth, index, loader and transforms): ``vol[i, j, k]`` with
i = column index (along the row direction IOP[0:3]), j = row index (along IOP[3:6]), k = slice
index along n = IOP[0:3] x IOP[3:6] with positions increasing along n; the pixel array of slice k
is ``vol[:, :, k].T``. The LPS affine has columns ``row * PixelSpacing[1]``,
``col * PixelSpacing[0]``, ``n * slice_spacing`` and translation = ImagePositionPatient of
slice 0; the RAS affine is ``diag(-1, -1, 1, 1) @ LPS``.

Missing geometry (radiographs, secondary captures), each recorded in the notes: no
ImageOrientationPatient -> directions from PatientOrientation letters (``L\\F`` for a PA chest
film), else rows along +x and columns along +y; no (or zero) PixelSpacing -> ImagerPixelSpacing,
else 1 mm; no ImagePositionPatient -> the image centre is put on the world origin; a multi-frame
file without per-frame functional groups is a stack of its frames along the normal,
SpacingBetweenSlices (else SliceThickness, else 1 mm) apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrec.errors import DicomError
from medrec.loader.dicom_header import _FileHeader, _Frame
from medrec.loader.dicom_orientation import _IDENTITY_ORIENTATION, _normal

# Two slices closer than this along the normal are the same position (a duplicate).
DUPLICATE_POSITION_MM = 1e-3
# Direction cosines further apart than this mean a different orientation.
ORIENTATION_TOLERANCE = 1e-3
# Relative deviation of one gap from the mean gap above which the spacing is called uneven.
UNEVEN_SPACING_FRACTION = 0.01


def _consistent(headers: list[_FileHeader]) -> None:
    first = headers[0]
    for header in headers[1:]:
        for name in ("rows", "cols", "samples"):
            if getattr(header, name) != getattr(first, name):
                raise DicomError(
                    f"{header.path}: {name}={getattr(header, name)} differs from {getattr(first, name)} in "
                    f"{first.path}; these files are not one series (re-run 'medrec index')"
                )


@dataclass(frozen=True)
class _Geometry:
    order: list[int]  # frame indices (into the flat frame list) in slice order
    affine_lps: np.ndarray
    spatial_dims: int


def _geometry(frames: list[_Frame], headers: list[_FileHeader], notes: list[str]) -> _Geometry:
    """Sort the frames along the slice normal and build the LPS affine."""
    def path_of(frame: _Frame) -> str:
        return headers[frame.file_index].path

    with_orientation = [f for f in frames if f.orientation is not None]
    if with_orientation and len(with_orientation) != len(frames):
        missing = next(f for f in frames if f.orientation is None)
        raise DicomError(f"{path_of(missing)}: ImageOrientationPatient missing while other files of the series have it")
    if with_orientation:
        reference = with_orientation[0]
        for frame in with_orientation[1:]:
            if np.abs(frame.orientation - reference.orientation).max() > ORIENTATION_TOLERANCE:
                raise DicomError(
                    f"{path_of(frame)}: ImageOrientationPatient {list(frame.orientation)} differs from "
                    f"{list(reference.orientation)} in {path_of(reference)}; the series mixes orientations"
                )
        orientation = reference.orientation
    else:
        orientation = np.array(_IDENTITY_ORIENTATION)
        notes.append("ImageOrientationPatient missing: assumed rows along +x and columns along +y (LPS)")
    first_path = headers[0].path
    normal = _normal(orientation, first_path)
    row_dir = orientation[:3] / np.linalg.norm(orientation[:3])
    col_dir = orientation[3:] / np.linalg.norm(orientation[3:])

    spacings = [f.pixel_spacing for f in frames if f.pixel_spacing is not None]
    if spacings:
        pixel_spacing = np.array(spacings[0])
        for frame in frames:
            if frame.pixel_spacing == spacings[0]:
                continue  # the common case, without allclose's overhead
            if frame.pixel_spacing is None or not np.allclose(frame.pixel_spacing, pixel_spacing, rtol=1e-3):
                raise DicomError(
                    f"{path_of(frame)}: PixelSpacing {frame.pixel_spacing} differs from {list(pixel_spacing)} "
                    f"in {path_of(frames[0])}; the series mixes pixel sizes"
                )
        if (pixel_spacing <= 0).any():
            raise DicomError(f"{first_path}: PixelSpacing {list(pixel_spacing)} must be positive")
    else:
        pixel_spacing = np.array([1.0, 1.0])
        notes.append("PixelSpacing missing: assumed 1 mm pixels")

    with_position = [f for f in frames if f.position is not None]
    if with_position and len(with_position) != len(frames):
        missing = next(f for f in frames if f.position is None)
        raise DicomError(f"{path_of(missing)}: ImagePositionPatient missing while other files of the series have it")

    n_slices = len(frames)
    thickness = next((f.thickness for f in frames if f.thickness), None)
    if with_position:
        along = np.array([f.position @ normal for f in frames])
        order = [int(i) for i in np.argsort(along, kind="stable")]
        if order != sorted(order):
            notes.append("files were not in slice order; re-sorted by position along the slice normal")
        sorted_along = along[order]
        gaps = np.diff(sorted_along)
        if n_slices > 1 and gaps.min() < DUPLICATE_POSITION_MM:
            at = int(np.argmin(gaps))
            first, second = frames[order[at]], frames[order[at + 1]]
            raise DicomError(
                f"{path_of(second)}: slice at {sorted_along[at + 1]:.3f} mm along the normal duplicates "
                f"{path_of(first)} (frame {first.frame_index}); the series holds two slices at one position "
                f"(repeated acquisition or mixed series); split it with 'medrec index'"
            )
        origin = frames[order[0]].position
        if n_slices > 1:
            slice_spacing = float((sorted_along[-1] - sorted_along[0]) / (n_slices - 1))
            if np.abs(gaps - slice_spacing).max() > max(UNEVEN_SPACING_FRACTION * slice_spacing, 1e-3):
                notes.append(
                    f"uneven slice spacing ({gaps.min():.3f}..{gaps.max():.3f} mm); the affine uses the mean "
                    f"{slice_spacing:.3f} mm"
                )
            positions = np.stack([frames[i].position for i in order])
            drift = positions - origin - np.outer(sorted_along - sorted_along[0], normal)
            max_drift = float(np.linalg.norm(drift, axis=1).max())
            if max_drift > 0.01 * float(pixel_spacing.min()):
                notes.append(
                    f"slice origins drift in-plane by up to {max_drift:.2f} mm (gantry tilt or sheared stack); "
                    f"the affine stacks slices along the normal"
                )
        else:
            slice_spacing = thickness or 1.0
    else:
        order = list(range(n_slices))
        slice_spacing = thickness or 1.0
        rows, cols = headers[0].rows, headers[0].cols
        # no position: put the centre of the image (or stack) on the world origin
        origin = -(row_dir * pixel_spacing[1] * (cols - 1) / 2 + col_dir * pixel_spacing[0] * (rows - 1) / 2
                   + normal * slice_spacing * (n_slices - 1) / 2)
        notes.append(
            "ImagePositionPatient missing: image centred on the world origin"
            + ("; kept the manifest's file order" if n_slices > 1 else "")
        )

    affine = np.eye(4)
    affine[:3, 0] = row_dir * pixel_spacing[1]
    affine[:3, 1] = col_dir * pixel_spacing[0]
    affine[:3, 2] = normal * slice_spacing
    affine[:3, 3] = origin
    return _Geometry(order=order, affine_lps=affine, spatial_dims=2 if n_slices == 1 else 3)
