"""Render a planned study to pixels: geometry, phantom, noise, and storage as the scanner stores it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrec.synth.lesions import lesion_distance
from medrec.synth.plan import StudyPlan
from medrec.synth.scanners import ScannerProfile
from medrec.synth.shapes import Canvas

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class RenderedStudy:
    """The main series of one study.

    Attributes:
        stored: stored pixel values (what goes into PixelData), vol[i, j, k] / img[i, j] convention.
        volume: real-world values a correct reader returns (CT: int16 HU; MR / XR: float32).
        affine_lps: voxel index -> LPS mm.
        modality_image: the float render in modality units before storage (for tests and recons).
    """

    stored: np.ndarray
    volume: np.ndarray
    affine_lps: np.ndarray
    modality_image: np.ndarray


def affine_lps(plan: StudyPlan) -> np.ndarray:
    """Voxel index -> LPS mm for the main series (columns: row dir * dx, col dir * dy, normal * dz, IPP)."""
    d = plan.pixel_spacing
    affine = np.eye(4)
    if plan.phantom.dims == 3:
        affine[:3, :3] = np.diag([d, d, plan.slice_thickness])
        affine[:3, 3] = plan.origin
    else:
        # PA radiograph: rows run to the patient's left, columns to the feet (PatientOrientation L\F)
        affine[:3, 0] = (d, 0.0, 0.0)
        affine[:3, 1] = (0.0, 0.0, -d)
        affine[:3, 2] = (0.0, 1.0, 0.0)
        affine[:3, 3] = (plan.origin[0], 0.0, -plan.origin[1])
    return affine


def _index_to_body(plan: StudyPlan) -> np.ndarray:
    dims = plan.phantom.dims
    d = plan.pixel_spacing
    if dims == 3:
        scale = np.diag([d, d, plan.slice_thickness])
    else:
        scale = np.diag([d, d])
    rotation_t = plan.pose_rotation.T
    matrix = np.eye(dims + 1)
    matrix[:dims, :dims] = rotation_t @ scale
    matrix[:dims, dims] = rotation_t @ (np.asarray(plan.origin) - plan.pose_translation)
    return matrix


def grid_shape(plan: StudyPlan) -> tuple[int, ...]:
    if plan.phantom.dims == 3:
        return (plan.image_size, plan.image_size, plan.n_slices)
    return (plan.image_size, plan.image_size)


def lesion_index(plan: StudyPlan, center_body: tuple[float, ...]) -> np.ndarray:
    """Voxel index (float) of a body-frame point in the main series."""
    matrix = _index_to_body(plan)
    body = np.r_[np.asarray(center_body, dtype=float), 1.0]
    return (np.linalg.inv(matrix) @ body)[:-1]


def body_to_lps(plan: StudyPlan, center_body: tuple[float, ...]) -> np.ndarray:
    """LPS mm of a body-frame point in this study (the pose applied)."""
    index = lesion_index(plan, center_body)
    affine = affine_lps(plan)
    padded = np.zeros(3)
    padded[: len(index)] = index
    return affine[:3, :3] @ padded + affine[:3, 3]


def render_modality_image(plan: StudyPlan, with_lesions: bool = True, with_noise: bool = True) -> np.ndarray:
    """Render the study in modality units (HU, MR signal, attenuation) as float32.

    With the same plan, renders with and without lesions differ only where the lesions are.
    """
    phantom = plan.phantom
    canvas = Canvas(grid_shape(plan), _index_to_body(plan), phantom.background)
    texture_rng, noise_rng = np.random.default_rng(plan.render_seed).spawn(2)
    phantom.render(canvas, plan.anatomy, plan.lesions if with_lesions else (), texture_rng)
    if with_noise and plan.noise_sigma > 0:
        phantom.add_noise(canvas, plan.noise_sigma, noise_rng)
    return canvas.image


def render_lesion_mask(plan: StudyPlan) -> np.ndarray:
    """The lesions' voxels on the main series' grid (uint8, 1 inside any lesion outline).

    A voxel is lesion when its centre lies inside the lobulated outline that paints the lesion
    (signed distance >= 0 at the lesion's radius): the mask a reader would draw on the noise-free
    image, without the soft edge the render blends into the organ. MR tumors: the enhancing rim
    and core, not the surrounding edema.
    """
    canvas = Canvas(grid_shape(plan), _index_to_body(plan), 0.0)
    mask = np.zeros(canvas.shape, dtype=np.uint8)
    for lesion in plan.lesions:
        box, distance = lesion_distance(canvas, lesion, lesion.diameter_mm / 2.0)
        if box is not None:
            mask[box] |= (distance >= 0).astype(np.uint8)
    return mask


def store(scanner: ScannerProfile, modality: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantise a modality image the way ``scanner`` stores it.

    Returns:
        (stored values as int32, real-world values: int16 HU for CT, float32 otherwise). For
        MONOCHROME1 the stored values are inverted (``2**BitsStored - 1 - value``) and the real-world
        values are given in the MONOCHROME2 sense (higher is brighter).
    """
    lo, hi = scanner.stored_range
    slope, intercept = scanner.rescale_slope, scanner.rescale_intercept
    if modality == "CT":
        hu = np.rint(image).astype(np.int32)
        hu = np.clip(hu, max(-1024, int(lo * slope + intercept)), int(hi * slope + intercept))
        stored = ((hu - intercept) / slope).astype(np.int32)
        return stored, (stored * slope + intercept).astype(np.int16)
    if modality == "MR":
        real = image.astype(np.float64) * scanner.gain
        stored = np.clip(np.rint((real - intercept) / slope), lo, hi).astype(np.int32)
        return stored, (stored * slope + intercept).astype(np.float32)
    value = np.clip(np.rint(scanner.offset + scanner.gain * image.astype(np.float64)), lo, hi).astype(np.int32)
    stored = hi - value if scanner.photometric == "MONOCHROME1" else value
    return stored, value.astype(np.float32)


def render_study(plan: StudyPlan, with_lesions: bool = True) -> RenderedStudy:
    """Render and store the main series of ``plan``."""
    image = render_modality_image(plan, with_lesions=with_lesions)
    stored, volume = store(plan.scanner, plan.phantom.modality, image)
    return RenderedStudy(stored=stored, volume=volume, affine_lps=affine_lps(plan), modality_image=image)
