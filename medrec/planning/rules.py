"""The rules a plan's choices follow, one function each: the intensity preset, the network's
dimensionality, the voxel budget and the input size at a spacing (coarsening the finest axes first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from medrec.errors import ConfigError
from medrec.planning.fingerprinting import _preset_of
from medrec.transforms.config import PreprocessConfig
from medrec.transforms.presets import CT_BODY_THRESHOLD_HU, PROJECTION_MODALITIES

ANISOTROPY_THRESHOLD = 3.0
FEW_SLICES = 40
SIZE_MULTIPLE = 8
# The smallest finding spans at least this many voxels on every axis when its size is known.
MIN_FINDING_VOXELS = 4
# Largest input (voxels) per compute budget and spatial dimension: CPU training of a small 3D CNN
# on 96 x 96 x 64 inputs takes seconds per batch; 2D inputs of 256^2 likewise.
VOXEL_BUDGETS: dict[str, dict[int, int]] = {
    "cpu": {2: 256 * 256, 3: 96 * 96 * 64},
    "gpu": {2: 512 * 512, 3: 160 * 160 * 128},
}


def _fmt(values: Any) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _choose_preset(fp: Mapping[str, Any], config: PreprocessConfig, reasons: list[str]) -> str:
    if config.preset != "auto":
        reasons.append(f"preset {config.preset}: from config")
        return config.preset
    modalities = {m: n for m, n in fp.get("modalities", {}).items() if m != "unknown"}
    if modalities:
        modality = max(modalities, key=lambda m: (modalities[m], m))
        preset = _preset_of(modality)
        if preset is not None:
            mix = ", ".join(f"{m} {n}" for m, n in sorted(modalities.items()))
            reasons.append(f"preset {preset}: most samples are {modality} ({mix})")
            return preset
    intensity = fp.get("intensity") or {}
    if fp.get("spatial_dims") == 2:
        reasons.append("preset xr: modality unknown, samples are single 2D images")
        return "xr"
    if intensity and intensity.get("hu_like_fraction", 0.0) > 0.5:
        reasons.append(
            f"preset ct: modality unknown, intensities look like HU (air below {CT_BODY_THRESHOLD_HU:g} in "
            f"{intensity['hu_like_fraction']:.0%} of loaded samples)"
        )
        return "ct"
    if intensity:
        reasons.append("preset mr: modality unknown, intensities are not HU (no air below -500)")
        return "mr"
    raise ConfigError(
        "preprocessing.preset: cannot tell the modality (no modality column, no intensities loaded); "
        "set preprocessing.preset to ct, mr or xr"
    )


def _choose_mode(fp: Mapping[str, Any], config: PreprocessConfig, preset: str, reasons: list[str]) -> tuple[int, str]:
    modalities = {m for m in fp.get("modalities", {}) if m != "unknown"}
    is_2d = preset == "xr" or fp.get("spatial_dims") == 2 or (modalities and modalities <= PROJECTION_MODALITIES)
    spatial_dims = 2 if is_2d else 3
    if config.mode != "auto":
        if spatial_dims == 2 and config.mode != "2d":
            raise ConfigError(
                f"preprocessing.mode: {config.mode!r} needs volumes but the samples are 2D images; use 2d or auto"
            )
        reasons.append(f"mode {config.mode}: from config")
        return spatial_dims, config.mode
    if is_2d:
        reasons.append("mode 2d: projection images / single-slice samples")
        return 2, "2d"
    anisotropy = fp.get("anisotropy") or 1.0
    n_slices = fp.get("n_slices_median") or 0
    if anisotropy > ANISOTROPY_THRESHOLD and 0 < n_slices <= FEW_SLICES:
        reasons.append(
            f"mode 2.5d: anisotropic volumes (ratio {anisotropy:.1f} > {ANISOTROPY_THRESHOLD:g}) with few slices "
            f"(median {n_slices:g} <= {FEW_SLICES}): a 2D network per slice with neighbours, pooled per study"
        )
        return 3, "2.5d"
    reasons.append(
        f"mode 3d: volumes (anisotropy {anisotropy:.1f}, median {n_slices:g} slices) suit a 3D network"
    )
    return 3, "3d"


def _budget(config: PreprocessConfig, compute_budget: str | int, spatial_dims: int) -> tuple[int, str]:
    if config.voxel_budget != "auto":
        return int(config.voxel_budget), "from config"
    if isinstance(compute_budget, int) and not isinstance(compute_budget, bool):
        return compute_budget, "from the compute budget"
    if compute_budget not in VOXEL_BUDGETS:
        raise ConfigError(
            f"compute_budget must be one of {', '.join(VOXEL_BUDGETS)} or a voxel count, got {compute_budget!r}"
        )
    return VOXEL_BUDGETS[compute_budget][spatial_dims], f"{compute_budget} budget"


def _round_up(value: float, multiple: int) -> int:
    return max(multiple, int(math.ceil(value / multiple - 1e-9)) * multiple)


def _sizes(extent: np.ndarray, spacing: np.ndarray, multiples: list[int]) -> list[int]:
    return [_round_up(e / s, m) for e, s, m in zip(extent, spacing, multiples, strict=True)]


def _coarsen(spacing: np.ndarray, extent: np.ndarray, multiples: list[int], budget: int,
             coarsest: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Coarsen the finest axes first (5 % steps), none past ``coarsest``, until the input fits the
    budget or every axis is at its limit; returns the spacing (rounded to 0.001 mm) and input size."""
    while math.prod(_sizes(extent, spacing, multiples)) > budget and (spacing < coarsest).any():
        finest = spacing[spacing < coarsest].min()
        spacing = np.where(spacing <= finest * 1.05, np.minimum(spacing * 1.05, coarsest), spacing)
    spacing = np.round(spacing, 3)
    return spacing, _sizes(extent, spacing, multiples)
