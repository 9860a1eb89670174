"""Intensity presets (CT windows, per-modality defaults) and the MONAI transform chains built from a plan.

CT windows are given as ``[lower, upper]`` HU (window width W, level L: ``[L - W/2, L + W/2]``),
using the values radiology teaching references list as standard.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medrec.errors import ConfigError
from medrec.transforms.modalities import MODALITY_PRESETS, PROJECTION_MODALITIES  # noqa: F401 - re-exported
from medrec.transforms.validation import CheckPlanInputd

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (-160.0, 240.0),  # W400 L40: abdominal soft tissue
    "liver": (-45.0, 105.0),  # W150 L30
    "lung": (-1350.0, 150.0),  # W1500 L-600
    "mediastinum": (-125.0, 225.0),  # W350 L50
    "brain": (0.0, 80.0),  # W80 L40
    "bone": (-450.0, 1050.0),  # W1500 L300
}
DEFAULT_CT_WINDOW = "abdomen"

# Voxels above this HU are "inside the body" for cropping CT before windowing (air is -1000,
# fat about -100; -500 keeps lungs' surroundings and drops the air and the table's gaps).
CT_BODY_THRESHOLD_HU = -500.0

# MR: clip to these percentiles of the whole image, then z-score over the nonzero foreground.
DEFAULT_MR_PERCENTILES: tuple[float, float] = (0.5, 99.5)
# XR: map these percentiles to [0, 1] (robust to burnt-in text and collimator edges).
DEFAULT_XR_PERCENTILES: tuple[float, float] = (0.5, 99.5)


# ------------------------------------------------------------------------------------ transform chains

if TYPE_CHECKING:
    from medrec.planning import Plan


class AboveThreshold:
    """Foreground selector ``x > value`` for ``CropForegroundd``; all voxels when none pass.

    A class rather than a lambda so that transform chains pickle into DataLoader workers.
    """

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        mask = image > self.value
        return mask if bool(mask.any()) else torch.ones_like(mask)

    def __repr__(self) -> str:
        return f"AboveThreshold({self.value:g})"


def otsu_threshold(image: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold (the level that best separates two intensity classes) of an image.

    Hand-written because neither MONAI nor the project's dependencies provide one for tensors
    (scikit-image is not a dependency). Values above the 99.9th percentile are clipped first so
    that a few hot voxels do not squeeze the histogram.
    """
    flat = torch.as_tensor(image).detach().reshape(-1).float()
    # torch.quantile has an input-size limit; a strided subsample is plenty for a threshold.
    flat = flat[:: max(1, flat.numel() // 1_000_000)]
    low = float(flat.min())
    high = float(torch.quantile(flat, 0.999))
    if not high > low:
        return low
    hist = torch.histc(flat.clamp(max=high), bins=bins, min=low, max=high).double()
    centers = low + (torch.arange(bins, dtype=torch.float64) + 0.5) * (high - low) / bins
    weight_low = hist.cumsum(0)
    weight_high = hist.sum() - weight_low
    mass_low = (hist * centers).cumsum(0)
    mean_low = mass_low / weight_low.clamp(min=1)
    mean_high = (mass_low[-1] - mass_low) / weight_high.clamp(min=1)
    between = (weight_low * weight_high * (mean_low - mean_high) ** 2)[:-1]
    # Empty bins between the classes give a plateau of equal scores: take its middle.
    best = torch.nonzero(between >= between.max() * (1 - 1e-9)).flatten().double()
    index = float(best.min() + best.max()) / 2
    return float(low + (index + 1) * (high - low) / bins)


class OtsuForeground:
    """Foreground selector ``x > otsu_threshold(x)`` for ``CropForegroundd`` (MR: the noise floor is not zero)."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        mask = image > otsu_threshold(image)
        return mask if bool(mask.any()) else torch.ones_like(mask)

    def __repr__(self) -> str:
        return "OtsuForeground()"


# Meta keys under which :class:`PlanarAffined` keeps a 2D image's patient-space affine and the
# planar affine it put in its place (see :func:`patient_affine`).
PATIENT_AFFINE_KEY = "medrec_patient_affine"
PLANAR_AFFINE_KEY = "medrec_planar_affine"


class PlanarAffined(MapTransform):
    """2D images: replace the patient-space affine by the in-plane pixel spacing.

    A radiograph's 4x4 affine maps its two axes into 3D patient space (e.g. onto x and z for a PA
    chest film); MONAI's 2D ``Spacingd`` reads only the top-left 2x2 block of it, which is then
    singular. The transforms therefore run on the pixel spacing alone; the patient-space affine is
    kept in the meta data, and :func:`patient_affine` composes it with what the transforms did, so
    lesion marks and finding locations stay in patient coordinates.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        for key in self.key_iterator(result):
            image = result[key]
            if not isinstance(image, MetaTensor):
                continue
            affine = planar_affine(image.affine)
            meta = {name: value for name, value in image.meta.items() if name != "affine"}
            meta[PATIENT_AFFINE_KEY] = np.asarray(torch.as_tensor(image.affine, dtype=torch.float64))
            meta[PLANAR_AFFINE_KEY] = affine.numpy().copy()
            result[key] = MetaTensor(image.as_tensor(), affine=affine, meta=meta)
        return result


def planar_affine(affine: object) -> torch.Tensor:
    """A 2D image's planar affine: its two pixel spacings on the diagonal, no rotation, origin 0."""
    spacing = torch.linalg.vector_norm(torch.as_tensor(affine, dtype=torch.float64)[:3, :2], dim=0)
    planar = torch.eye(4, dtype=torch.float64)
    planar[0, 0], planar[1, 1] = float(spacing[0]), float(spacing[1])
    return planar


def patient_affine(image: object) -> np.ndarray | None:
    """The voxel-to-RAS affine of a transformed image, in patient space also for 2D images.

    For a 2D image :class:`PlanarAffined` replaced the patient-space affine ``P`` by a planar one
    ``Q``; the transforms then turned ``Q`` into ``Q'`` (crops, resampling). The output pixel
    ``(i, j)`` lies at input pixel ``inv(Q) Q' (i, j)``, so its patient position is
    ``P inv(Q) Q' (i, j)``. Other images return their affine as it is; None without one.
    """
    affine = getattr(image, "affine", None)
    if affine is None:
        return None
    result = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)
    meta = getattr(image, "meta", None) or {}
    if PATIENT_AFFINE_KEY in meta and PLANAR_AFFINE_KEY in meta and result.shape == (4, 4):
        patient = np.asarray(meta[PATIENT_AFFINE_KEY], dtype=np.float64).reshape(4, 4)
        planar = np.asarray(meta[PLANAR_AFFINE_KEY], dtype=np.float64).reshape(4, 4)
        result = patient @ np.linalg.inv(planar) @ result
    return result


def anti_aliasing_sigma(spacing: Sequence[float], target: Sequence[float]) -> tuple[float, ...]:
    """Gaussian sigma in voxels per axis before resampling from ``spacing`` to ``target`` (mm).

    ``(factor - 1) / 2`` for an axis made coarser by ``factor`` (the rule of scikit-image's
    ``resize(anti_aliasing=True)``), 0 for an axis kept or made finer.
    """
    return tuple(max(0.0, (float(t) / float(s) - 1.0) / 2.0) for s, t in zip(spacing, target, strict=True))


class AntiAliasd(MapTransform):
    """Smooth each image with a Gaussian before it is resampled to the coarser spacing ``pixdim``.

    MONAI's ``Spacingd`` interpolates at the new grid points only: going from 0.7 mm to 5 mm
    keeps one voxel's noise and detail in every 7 and drops the rest (aliasing). Smoothing first
    (sigma from :func:`anti_aliasing_sigma` and the image's own affine, so every scanner's spacing
    gets its own sigma) makes each output voxel an average of the voxels it replaces. Filtered with
    ``scipy.ndimage.gaussian_filter`` in float32 into a new tensor (the input is left untouched);
    the affine and the meta data are unchanged.
    """

    def __init__(self, keys: Sequence[str], pixdim: Sequence[float], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.pixdim = tuple(float(v) for v in pixdim)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from scipy.ndimage import gaussian_filter

        result = dict(data)
        dims = len(self.pixdim)
        for key in self.key_iterator(result):
            image = result[key]
            affine = torch.as_tensor(
                image.affine if isinstance(image, MetaTensor) else torch.eye(4), dtype=torch.float64)
            spacing = torch.linalg.vector_norm(affine[:3, :dims], dim=0).tolist()
            sigma = anti_aliasing_sigma(spacing, self.pixdim)
            if not any(sigma):
                continue
            source = (image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)).numpy()
            smoothed = np.empty(source.shape, dtype=np.float32)
            for channel, out in zip(source, smoothed, strict=True):
                gaussian_filter(channel, sigma=sigma, output=out, mode="nearest", truncate=3.0)
            if isinstance(image, MetaTensor):
                meta = {name: value for name, value in image.meta.items() if name != "affine"}
                result[key] = MetaTensor(torch.from_numpy(smoothed), affine=image.affine, meta=meta)
            else:
                result[key] = torch.from_numpy(smoothed)
        return result


def _intensity_transforms(plan: Plan, keys: Sequence[str]) -> list[Transform]:
    if plan.preset == "ct":
        if plan.ct_window is None:
            raise ConfigError("plan: a CT plan needs ct_window [lower, upper]")
        lower, upper = plan.ct_window
        return [mt.ScaleIntensityRanged(keys, a_min=lower, a_max=upper, b_min=0.0, b_max=1.0, clip=True)]
    lower, upper = plan.intensity_percentiles or DEFAULT_MR_PERCENTILES
    if plan.preset == "mr":
        return [
            mt.ClipIntensityPercentilesd(keys, lower=lower, upper=upper),
            mt.NormalizeIntensityd(keys, nonzero=True),
        ]
    return [mt.ScaleIntensityRangePercentilesd(keys, lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True)]


def _crop_transform(plan: Plan, keys: Sequence[str]) -> list[Transform]:
    if not plan.crop_foreground:
        return []
    select: Callable[[torch.Tensor], torch.Tensor]
    if plan.preset == "ct":
        select = AboveThreshold(plan.foreground_threshold if plan.foreground_threshold is not None
                                else CT_BODY_THRESHOLD_HU)
    elif plan.preset == "mr":
        select = OtsuForeground()
    else:
        return []
    return [
        mt.CropForegroundd(
            keys,
            source_key=keys[0],
            select_fn=select,
            margin=plan.crop_margin,
            allow_smaller=True,
            start_coord_key=None,
            end_coord_key=None,
        )
    ]


def build_transforms(
    plan: Plan,
    keys: Sequence[str] = ("image",),
    include_loader: bool = True,
    track_meta: bool = False,
) -> tuple[mt.Compose, mt.Compose | None]:
    """The deterministic preprocessing chain and the random augmentation chain for a plan.

    Deterministic chain, in order (dict transforms on ``keys``; the first key drives the crop):

    1. ``CheckPlanInputd``: a row the plan cannot take (a 2D image for a 3D plan, a volume for a 2D
       plan, a modality of another preset the plan was not made from) fails with its reason, unread.
       ``LoadSampled``: the manifest row's dict -> MetaTensor ``(1, I, J[, K])`` in real-world values.
    2. Volumes: ``Orientationd("RAS")``. 2D images: ``PlanarAffined`` (keep only the pixel spacing;
       radiographs are used as displayed).
    3. ``CropForegroundd`` on the raw values, before anything that rescales them: CT body = HU above
       the plan's threshold (-500), MR = above Otsu's threshold (the noise floor is not zero);
       ``crop_margin`` voxels kept. No crop for radiographs.
       Cropping before resampling also saves resampling the air around the body.
    4. ``AntiAliasd`` (when ``plan.anti_aliasing``: Gaussian smoothing on the axes made coarser,
       sigma = (factor - 1) / 2 voxels), then ``Spacingd(plan.spacing, bilinear)``.
    5. Intensity: CT ``ScaleIntensityRanged`` window -> [0, 1], clipped; MR ``ClipIntensityPercentilesd``
       then ``NormalizeIntensityd(nonzero=True)``; XR ``ScaleIntensityRangePercentilesd`` -> [0, 1].
    6. ``ResizeWithPadOrCropd(plan.input_size)`` (centered; pads with 0 = window bottom / MR background).
    7. ``EnsureTyped(float32)``: a plain fixed-size tensor (cacheable) unless ``track_meta``.

    Augmentation (training only; plain tensors in, plain tensors out): ``RandFlipd`` per axis,
    ``RandAffined`` (rotation + zoom; in-plane only for 2d / 2.5d plans), ``RandGaussianNoised``,
    ``RandAdjustContrastd`` (gamma) and, for MR, ``RandBiasFieldd``. Seed it with
    ``augment.set_random_state(seed)``.

    Args:
        plan: from :func:`medrec.planning.make_plan`.
        keys: dict keys holding images.
        include_loader: start with ``CheckPlanInputd`` and ``medrec.loader.LoadSampled``; False when the
            dicts already hold MetaTensors (in-memory inputs, tests).
        track_meta: keep MetaTensors (affine, history) at the end instead of plain tensors.

    Returns:
        ``(deterministic, augment)``; ``augment`` is None when the plan has no augmentation.
    """
    keys = tuple(keys)
    if not keys:
        raise ConfigError("build_transforms: keys must name at least one image key")
    dims = plan.spatial_dims
    if len(plan.spacing) != dims or len(plan.input_size) != dims:
        raise ConfigError(
            f"plan: spacing {list(plan.spacing)} and input_size {list(plan.input_size)} must both have "
            f"{dims} values for {dims}D inputs"
        )
    steps: list[Transform] = []
    if include_loader:
        from medrec.loader import LoadSampled

        steps.append(CheckPlanInputd(plan))
        steps.append(LoadSampled(keys=keys))
    if dims == 2:
        steps.append(PlanarAffined(keys))
    else:
        # Explicit labels: the loader's affines are RAS by contract, whatever the meta "space" says.
        steps.append(mt.Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))))
    steps += _crop_transform(plan, keys)
    if plan.anti_aliasing:
        steps.append(AntiAliasd(keys, pixdim=plan.spacing))
    steps.append(mt.Spacingd(keys, pixdim=tuple(plan.spacing), mode="bilinear", padding_mode="border"))
    steps += _intensity_transforms(plan, keys)
    steps.append(mt.ResizeWithPadOrCropd(keys, spatial_size=tuple(plan.input_size), mode="constant"))
    steps.append(mt.EnsureTyped(keys, dtype=torch.float32, track_meta=track_meta))
    deterministic = mt.Compose(steps)
    return deterministic, build_augmentation(plan, keys)


def build_augmentation(plan: Plan, keys: Sequence[str] = ("image",)) -> mt.Compose | None:
    """The random augmentation chain of a plan (see :func:`build_transforms`), or None when off."""
    aug = plan.augment
    if aug is None:
        return None
    keys = tuple(keys)
    dims = plan.spatial_dims
    steps: list[Transform] = [
        mt.RandFlipd(keys, prob=aug.flip_prob, spatial_axis=axis) for axis in aug.flip_axes if axis < dims]
    if aug.affine_prob > 0 and (aug.rotate_deg > 0 or aug.scale > 0):
        angle = math.radians(aug.rotate_deg)
        rotate_range: tuple[float, ...]
        scale_range: tuple[float, ...]
        if dims == 2:
            rotate_range, scale_range = (angle,), (aug.scale,) * 2
        elif plan.mode in ("2d", "2.5d"):
            # Slice-wise networks: rotate and zoom in-plane only, so that slices stay slices.
            rotate_range, scale_range = (0.0, 0.0, angle), (aug.scale, aug.scale, 0.0)
        else:
            rotate_range, scale_range = (angle,) * 3, (aug.scale,) * 3
        steps.append(
            mt.RandAffined(
                keys,
                prob=aug.affine_prob,
                rotate_range=rotate_range,
                scale_range=scale_range,
                mode="bilinear",
                padding_mode="zeros",
            )
        )
    if aug.noise_prob > 0 and aug.noise_std > 0:
        steps.append(mt.RandGaussianNoised(keys, prob=aug.noise_prob, mean=0.0, std=aug.noise_std))
    if aug.contrast_prob > 0:
        steps.append(mt.RandAdjustContrastd(keys, prob=aug.contrast_prob, gamma=aug.contrast_gamma))
    if plan.preset == "mr" and aug.bias_field_prob > 0:
        steps.append(mt.RandBiasFieldd(keys, prob=aug.bias_field_prob, coeff_range=aug.bias_field_coeff))
    steps.append(mt.EnsureTyped(keys, dtype=torch.float32, track_meta=False))
    return mt.Compose(steps)
