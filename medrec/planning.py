"""Automatic preprocessing plans, in the spirit of nnU-Net's experiment planning.

Two steps, both recorded next to the run:

1. :func:`fingerprint` summarises the cohort: geometry from the manifest's columns (no pixel
   reads), intensity statistics from a seeded subsample of loaded samples.
2. :func:`make_plan` turns the fingerprint and a :class:`~medrec.transforms.PreprocessConfig`
   into a :class:`Plan`: target spacing, input size, intensity normalisation and dimensionality,
   each with the reason it was chosen. Any explicit config value wins over the automatic rule.

Rules (stated in each plan's ``reasons``):

- Spacing: the per-axis median spacing. When the median spacings differ by more than
  ``ANISOTROPY_THRESHOLD`` (3x, nnU-Net's rule), the coarse (out-of-plane) axis takes the 10th
  percentile of its spacings instead, so thin-slice scans are not thrown away for thick-slice ones.
- Input size: median physical extent (of the foreground when cropping) / target spacing, rounded
  up to a multiple of 8. Above the voxel budget the finest axes are coarsened first (5% steps)
  until the input fits.
- Dimensionality: 2D for projection images (DX, CR, MG, ...) or single-slice samples; 2.5D (a 2D
  network on each axial slice with its neighbours, pooled per study) for strongly anisotropic
  volumes with few slices (anisotropy > 3 and at most ``FEW_SLICES`` slices); 3D otherwise.
- Intensities: CT uses a HU window (abdomen W400 L40 unless configured); MR clips to the 0.5 / 99.5
  percentiles and z-scores the nonzero foreground; XR maps its 0.5 / 99.5 percentiles to [0, 1].
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medrec.errors import ConfigError
from medrec.transforms.config import AugmentConfig, PreprocessConfig
from medrec.transforms.presets import (
    CT_BODY_THRESHOLD_HU,
    CT_WINDOWS,
    DEFAULT_CT_WINDOW,
    MODALITY_PRESETS,
    PROJECTION_MODALITIES,
    otsu_threshold,
)

logger = logging.getLogger("medrec.planning")

PLAN_VERSION = 2  # 2: anti_aliasing (plans of version 1 resampled without it)
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
# Voxels drawn per loaded sample for the intensity statistics (bounds memory on big volumes).
INTENSITY_VOXELS_PER_SAMPLE = 20_000

SampleLoader = Callable[[Mapping[str, Any]], Any]


class Plan(BaseModel):
    """A resolved preprocessing recipe: everything :func:`medrec.transforms.build_transforms` needs.

    Json-serialisable (``plan.model_dump(mode="json")``, ``Plan.model_validate(data)``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(PLAN_VERSION, description="Plan format version.")
    preset: Literal["ct", "mr", "xr"] = Field(description="Intensity preset.")
    spatial_dims: Literal[2, 3] = Field(description="Dimensions of the preprocessed input (2: images, 3: volumes).")
    mode: Literal["3d", "2d", "2.5d"] = Field(description="Network dimensionality (2d / 2.5d on volumes: per slice).")
    slice_context: int = Field(0, ge=0, description="2.5d: neighbouring slices on each side as channels.")
    spacing: tuple[float, ...] = Field(description="Target spacing in mm along RAS axes (x, y[, z]).")
    input_size: tuple[int, ...] = Field(description="Fixed input size in voxels (x, y[, z]).")
    ct_window: tuple[float, float] | None = Field(None, description="CT: [lower, upper] HU mapped to [0, 1].")
    ct_window_name: str | None = Field(None, description="CT: the window's name, or 'custom'.")
    intensity_percentiles: tuple[float, float] | None = Field(
        None, description="MR: clip percentiles before the z-score; XR: percentiles mapped to [0, 1]."
    )
    anti_aliasing: bool = Field(
        True, description="Gaussian smoothing (sigma = (factor - 1) / 2 voxels) before resampling to a coarser spacing."
    )
    crop_foreground: bool = Field(True, description="Crop to the foreground before resampling.")
    crop_margin: int = Field(4, ge=0, description="Voxels kept around the foreground.")
    foreground_threshold: float | None = Field(
        None, description="CT: HU above which a voxel is body (MR uses Otsu's threshold, XR does not crop)."
    )
    augment: AugmentConfig | None = Field(None, description="Training augmentation, or None for none.")
    reasons: tuple[str, ...] = Field((), description="Why each choice was made.")
    fingerprint: dict[str, Any] = Field(default_factory=dict, description="The data fingerprint the plan came from.")

    @model_validator(mode="before")
    @classmethod
    def _version_1_had_no_anti_aliasing(cls, data: Any) -> Any:
        # a run trained before plans recorded anti_aliasing must be scored as it was trained
        if isinstance(data, dict) and data.get("version", PLAN_VERSION) < 2 and "anti_aliasing" not in data:
            return {**data, "anti_aliasing": False}
        return data

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`medrec.models.create_model` that match this plan's inputs.

        Examples:
            >>> model = create_model("resnet18", in_channels=1, num_classes=2, **plan.model_kwargs())
        """
        if self.spatial_dims == 3 and self.mode in ("2d", "2.5d"):
            return {"spatial_dims": 3, "slice_mode": self.mode, "context": self.slice_context}
        return {"spatial_dims": self.spatial_dims}


# --------------------------------------------------------------------------------------- fingerprint


def _ras_geometry(row: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    """(spacing, shape) of a manifest row along RAS axes, or None when its geometry is incomplete."""
    try:
        spacing = [float(row["spacing_x"]), float(row["spacing_y"]), float(row.get("spacing_z", "nan"))]
        shape = [float(row["cols"]), float(row["rows"]), float(row.get("n_slices", 1) or 1)]
    except (KeyError, TypeError, ValueError):
        return None
    if shape[2] == 1 and not (math.isfinite(spacing[2]) and spacing[2] > 0):
        spacing[2] = 1.0  # a single 2D image has no slice spacing
    if not all(math.isfinite(v) and v > 0 for v in spacing + shape):
        return None
    # Voxel axes (i, j, k) follow (row dir, column dir, normal); Orientation("RAS") reorders them.
    orientation = str(row.get("orientation", "") or "").lower()
    order = {"sagittal": (2, 0, 1), "coronal": (0, 2, 1)}.get(orientation, (0, 1, 2))
    return [spacing[a] for a in order], [shape[a] for a in order]


def _foreground_mask(values: np.ndarray, preset: str) -> np.ndarray:
    if preset == "ct":
        return values > CT_BODY_THRESHOLD_HU
    if preset == "mr":
        return values > otsu_threshold(torch.from_numpy(values))
    return np.ones(values.shape, dtype=bool)


def _preset_of(modality: Any) -> str | None:
    return MODALITY_PRESETS.get(str(modality or "").strip().upper())


def _load_statistics(
    rows: list[Mapping[str, Any]], sample_loader: SampleLoader, seed: int
) -> tuple[dict[str, Any] | None, list[list[float]], list[tuple[list[float], list[float]]], int]:
    """Intensity statistics, foreground extents and geometry of loaded samples."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    rng = np.random.default_rng(seed)
    pooled: list[np.ndarray] = []
    hu_like = 0
    extents: list[list[float]] = []
    geometry: list[tuple[list[float], list[float]]] = []
    failures = 0
    for row in rows:
        try:
            image = sample_loader(row)
        except Exception as e:  # one unreadable sample must not stop planning  # noqa: BLE001
            failures += 1
            logger.warning("fingerprint: sample %s not loaded (%s)", row.get("sample_id", "?"), e)
            continue
        if isinstance(image, MetaTensor) and image.ndim == 4:
            image = Orientation("RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(image)
        values = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float32)
        values = values[0] if values.ndim in (3, 4) and values.shape[0] == 1 else values
        if isinstance(image, MetaTensor):
            affine = np.asarray(image.affine, dtype=float)
            spacing = [float(np.linalg.norm(affine[:3, axis])) for axis in range(values.ndim)]
        else:
            spacing = [1.0] * values.ndim
        geometry.append((spacing, [float(n) for n in values.shape]))
        modality = row.get("modality") or (image.meta.get("modality") if isinstance(image, MetaTensor) else None)
        # Air in HU is -1000: a 1st percentile below -500 is CT whatever the header says.
        looks_like_hu = bool(np.percentile(values, 1) < CT_BODY_THRESHOLD_HU)
        hu_like += looks_like_hu
        preset = _preset_of(modality) or ("ct" if looks_like_hu else "mr")
        mask = _foreground_mask(values, preset)
        if not mask.any():
            continue
        coords = np.nonzero(mask)
        extents.append([float((c.max() - c.min() + 1) * s) for c, s in zip(coords, spacing, strict=True)])
        foreground = values[mask]
        if foreground.size > INTENSITY_VOXELS_PER_SAMPLE:
            foreground = rng.choice(foreground, INTENSITY_VOXELS_PER_SAMPLE, replace=False)
        pooled.append(foreground)
    if not pooled:
        return None, extents, geometry, failures
    voxels = np.concatenate(pooled).astype(np.float64)
    p005, p50, p995 = np.percentile(voxels, [0.5, 50.0, 99.5])
    intensity = {
        "n_loaded": len(pooled),
        "p00_5": float(p005),
        "p50": float(p50),
        "p99_5": float(p995),
        "mean": float(voxels.mean()),
        "std": float(voxels.std()),
        "hu_like_fraction": round(hu_like / len(geometry), 4),
    }
    return intensity, extents, geometry, failures


def _default_loader() -> SampleLoader | None:
    try:
        from medrec.loader import load_sample
    except ImportError:
        return None
    return load_sample


def fingerprint(
    manifest: pd.DataFrame,
    sample_loader: SampleLoader | None = None,
    max_samples: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """Summarise a cohort's geometry and intensities for planning.

    Args:
        manifest: manifest rows (geometry columns ``spacing_x/y/z, rows, cols, n_slices``, ``modality``,
            ``orientation``); typically the training split only.
        sample_loader: ``row -> MetaTensor`` used for intensity statistics; default
            :func:`medrec.loader.load_sample`.
        max_samples: samples loaded for intensities (a seeded subsample); 0 reads no pixels.
        seed: seed of the subsample.

    Returns:
        A json-serialisable dict: ``n_samples, modalities, spatial_dims, spacing_median, spacing_p10,
        anisotropy, shape_median, n_slices_median, extent_median_mm, foreground_extent_median_mm,
        intensity`` (``p00_5, p50, p99_5, mean, std`` over the foreground and ``hu_like_fraction``, or None),
        ``geometry_source``, ``n_load_failures``.

    Raises:
        ConfigError: the manifest is empty.
    """
    if manifest is None or len(manifest) == 0:
        raise ConfigError("fingerprint: the manifest has no rows; index some scans first ('medrec index')")
    rows = [row for _, row in manifest.iterrows()]
    modalities = Counter(str(row.get("modality", "") or "").strip().upper() or "unknown" for row in rows)

    geometry = [g for g in (_ras_geometry(row) for row in rows) if g is not None]
    geometry_source = "manifest"

    loader = sample_loader if sample_loader is not None else _default_loader()
    intensity = None
    foreground_extents: list[list[float]] = []
    failures = 0
    if max_samples > 0 and loader is not None:
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(len(rows), size=min(max_samples, len(rows)), replace=False))
        intensity, foreground_extents, loaded_geometry, failures = _load_statistics(
            [rows[i] for i in chosen], loader, seed
        )
        if not geometry and loaded_geometry:
            geometry, geometry_source = loaded_geometry, "loaded samples"

    result: dict[str, Any] = {
        "n_samples": len(rows),
        "modalities": dict(sorted(modalities.items())),
        "geometry_source": geometry_source if geometry else None,
        "spatial_dims": None,
        "spacing_median": None,
        "spacing_p10": None,
        "anisotropy": None,
        "shape_median": None,
        "n_slices_median": None,
        "extent_median_mm": None,
        "foreground_extent_median_mm": None,
        "intensity": intensity,
        "n_load_failures": failures,
    }
    if geometry:
        two_d = sum(1 for _, shape in geometry if len(shape) == 2 or shape[2] == 1)
        dims = 2 if two_d * 2 > len(geometry) else 3
        spacing = np.array([s[:dims] for s, _ in geometry], dtype=float)
        shape = np.array([n[:dims] for _, n in geometry], dtype=float)
        median_spacing = np.median(spacing, axis=0)
        result.update(
            spatial_dims=dims,
            spacing_median=[round(float(v), 4) for v in median_spacing],
            spacing_p10=[round(float(v), 4) for v in np.percentile(spacing, 10, axis=0)],
            anisotropy=round(float(median_spacing.max() / median_spacing.min()), 4),
            shape_median=[float(v) for v in np.median(shape, axis=0)],
            n_slices_median=float(np.median([n[2] if len(n) > 2 else 1 for _, n in geometry])),
            extent_median_mm=[round(float(v), 2) for v in np.median(spacing * shape, axis=0)],
        )
        usable = [e[:dims] for e in foreground_extents if len(e) >= dims]
        if usable:
            result["foreground_extent_median_mm"] = [round(float(v), 2) for v in np.median(np.array(usable), axis=0)]
    return result


# ---------------------------------------------------------------------------------------------- plan


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


def make_plan(
    fingerprint: Mapping[str, Any],
    config: PreprocessConfig | None = None,
    compute_budget: Literal["cpu", "gpu"] | int = "cpu",
    finding_size_mm: float | None = None,
    finding_size_source: str = "",
) -> Plan:
    """Decide the preprocessing for a cohort (rules in the module docstring).

    Args:
        fingerprint: output of :func:`fingerprint`.
        config: the recipe's preprocessing block; explicit values win over the rules.
        compute_budget: ``cpu`` (96x96x64 voxels in 3D, 256^2 in 2D), ``gpu`` (160x160x128, 512^2),
            or a voxel count; ``config.voxel_budget`` overrides it.
        finding_size_mm: the smallest finding to keep visible (e.g. from lesion annotations);
            ``config.finding_size_mm`` overrides it. An automatic spacing becomes at most a quarter
            of it on every axis and is not coarsened past that to fit the budget.
        finding_size_source: where ``finding_size_mm`` came from (for the plan's reasons).

    Returns:
        The :class:`Plan`, with a reason for every choice.

    Raises:
        ConfigError: the fingerprint lacks geometry and the config does not give spacing and size,
            or config values contradict the data (e.g. a 3D spacing for 2D images).
    """
    config = config or PreprocessConfig()
    fp = dict(fingerprint)
    reasons: list[str] = []
    preset = _choose_preset(fp, config, reasons)
    spatial_dims, mode = _choose_mode(fp, config, preset, reasons)
    slice_context = config.slice_context if mode == "2.5d" else 0

    # Spacing.
    median = fp.get("spacing_median")
    if config.spacing != "auto":
        if len(config.spacing) != spatial_dims:
            raise ConfigError(
                f"preprocessing.spacing: {list(config.spacing)} has {len(config.spacing)} values but the samples "
                f"are {spatial_dims}D; give {spatial_dims} values or auto"
            )
        spacing = np.array(config.spacing, dtype=float)
        reasons.append(f"spacing {_fmt(spacing)} mm: from config")
    else:
        if not median or len(median) < spatial_dims:
            raise ConfigError(
                "preprocessing.spacing: the manifest has no geometry (spacing_x/y/z, rows, cols, n_slices) "
                "and no samples could be loaded; set preprocessing.spacing and preprocessing.input_size"
            )
        spacing = np.array(median[:spatial_dims], dtype=float)
        anisotropy = float(spacing.max() / spacing.min())
        if anisotropy > ANISOTROPY_THRESHOLD:
            coarse = int(np.argmax(spacing))
            spacing[coarse] = float(fp["spacing_p10"][coarse])
            reasons.append(
                f"spacing {_fmt(spacing)} mm: median spacing, but anisotropic (ratio {anisotropy:.1f} > "
                f"{ANISOTROPY_THRESHOLD:g}) so axis {coarse} takes the 10th percentile of its spacings "
                f"({spacing[coarse]:g} mm) instead of the median ({median[coarse]:g} mm)"
            )
        else:
            reasons.append(f"spacing {_fmt(spacing)} mm: median spacing (anisotropy {anisotropy:.1f})")
    finest_allowed: np.ndarray | None = None
    if config.finding_size_mm is not None:
        finding_size_mm, finding_size_source = config.finding_size_mm, "preprocessing.finding_size_mm"
    if finding_size_mm is not None and config.spacing == "auto":
        finest_allowed = np.full(spatial_dims, float(finding_size_mm) / MIN_FINDING_VOXELS)
        if (spacing > finest_allowed).any():
            before = spacing.copy()
            spacing = np.round(np.minimum(spacing, finest_allowed), 3)
            reasons.append(
                f"spacing {_fmt(before)} -> {_fmt(spacing)} mm: the smallest finding ({finding_size_mm:g} mm, "
                f"{finding_size_source}) must span at least {MIN_FINDING_VOXELS} voxels on every axis"
            )
        else:
            reasons.append(
                f"spacing kept: the smallest finding ({finding_size_mm:g} mm, {finding_size_source}) spans at least "
                f"{MIN_FINDING_VOXELS} voxels on every axis"
            )

    # Input size (may coarsen an automatic spacing).
    budget, budget_source = _budget(config, compute_budget, spatial_dims)
    # Slice modes run a 2D network per slice: the slice axis needs no multiple of 8.
    multiples = [SIZE_MULTIPLE] * spatial_dims
    if mode in ("2d", "2.5d") and spatial_dims == 3:
        multiples[2] = 1
    if config.input_size != "auto":
        if len(config.input_size) != spatial_dims:
            raise ConfigError(
                f"preprocessing.input_size: {list(config.input_size)} has {len(config.input_size)} values but the "
                f"samples are {spatial_dims}D; give {spatial_dims} values or auto"
            )
        input_size = [int(v) for v in config.input_size]
        reasons.append(f"input size {_fmt(input_size)}: from config")
    else:
        # Radiographs are never cropped (see below), so their field of view is the extent.
        foreground = fp.get("foreground_extent_median_mm") if config.crop_foreground and preset != "xr" else None
        full = fp.get("extent_median_mm")
        source = foreground if foreground and len(foreground) >= spatial_dims else full
        if not source or len(source) < spatial_dims:
            raise ConfigError(
                "preprocessing.input_size: the fingerprint has no extents; set preprocessing.input_size"
            )
        extent = np.array(source[:spatial_dims], dtype=float)
        what = "foreground" if source is foreground else "field of view"
        input_size = _sizes(extent, spacing, multiples)
        if math.prod(input_size) > budget and finest_allowed is not None:
            start = spacing.copy()
            spacing, input_size = _coarsen(spacing, extent, multiples, budget, finest_allowed)
            if (spacing != np.round(start, 3)).any():
                reasons.append(
                    f"spacing coarsened from {_fmt(start)} to {_fmt(spacing)} mm (finest axes first, at most a quarter "
                    f"of the smallest finding) towards the {budget}-voxel budget ({budget_source})"
                )
            if math.prod(input_size) > budget:
                reasons.append(
                    f"input size {_fmt(input_size)} exceeds the {budget}-voxel budget ({budget_source}) but the "
                    "spacing is not coarsened further: the smallest finding would blur away (finding-map models "
                    "run slice by slice)"
                )
        elif math.prod(input_size) > budget:
            if config.spacing == "auto":
                start = spacing.copy()
                spacing, input_size = _coarsen(spacing, extent, multiples, budget, np.full(len(spacing), np.inf))
                while math.prod(input_size) > budget:  # rounding may overshoot by a hair
                    largest = int(np.argmax(input_size))
                    input_size[largest] -= multiples[largest]
                reasons.append(
                    f"spacing coarsened from {_fmt(start)} to {_fmt(spacing)} mm (finest axes first) so that the "
                    f"median {what} ({_fmt(extent)} mm) fits {budget} voxels ({budget_source})"
                )
            else:
                while math.prod(input_size) > budget:
                    largest = int(np.argmax(input_size))
                    input_size[largest] = max(multiples[largest], input_size[largest] - multiples[largest])
                    if all(n <= m for n, m in zip(input_size, multiples, strict=True)):
                        break
                reasons.append(
                    f"input size capped at {budget} voxels ({budget_source}); spacing is from config, so inputs "
                    "are center-cropped rather than resampled"
                )
        reasons.append(
            f"input size {_fmt(input_size)}: median {what} {_fmt(extent)} mm / spacing, rounded up to a multiple "
            f"of {SIZE_MULTIPLE}" + (" (slice axis unrounded)" if multiples[-1] == 1 else "")
        )
    if math.prod(input_size) > budget and config.input_size != "auto":
        reasons.append(f"warning: input size {_fmt(input_size)} exceeds the {budget}-voxel budget ({budget_source})")

    # Intensities.
    ct_window: tuple[float, float] | None = None
    ct_window_name: str | None = None
    percentiles: tuple[float, float] | None = None
    foreground_threshold: float | None = None
    if preset == "ct":
        if isinstance(config.ct_window, tuple):
            ct_window, ct_window_name = config.ct_window, "custom"
            reasons.append(f"CT window {_fmt(ct_window)} HU: from config")
        elif config.ct_window != "auto":
            ct_window, ct_window_name = CT_WINDOWS[config.ct_window], config.ct_window
            reasons.append(f"CT window {ct_window_name} {_fmt(ct_window)} HU: from config")
        else:
            ct_window, ct_window_name = CT_WINDOWS[DEFAULT_CT_WINDOW], DEFAULT_CT_WINDOW
            reasons.append(
                f"CT window {DEFAULT_CT_WINDOW} {_fmt(ct_window)} HU (W400 L40): default for CT soft-tissue lesions; "
                f"set preprocessing.ct_window to one of {', '.join(CT_WINDOWS)} or [lower, upper]"
            )
        foreground_threshold = CT_BODY_THRESHOLD_HU
    elif preset == "mr":
        percentiles = config.mr_percentiles
        reasons.append(
            f"MR intensities: clip to percentiles {_fmt(percentiles)}, then z-score over the nonzero foreground"
        )
    else:
        percentiles = config.xr_percentiles
        reasons.append(f"XR intensities: percentiles {_fmt(percentiles)} mapped to [0, 1]")

    crop = config.crop_foreground and preset != "xr"
    if config.crop_foreground and preset == "xr":
        reasons.append("no foreground crop: radiographs fill the image")
    elif crop:
        rule = f"HU > {CT_BODY_THRESHOLD_HU:g}" if preset == "ct" else "above Otsu's threshold"
        reasons.append(f"crop to the foreground ({rule}) with a {config.crop_margin}-voxel margin before resampling")

    if config.anti_aliasing:
        reasons.append("anti-aliasing: Gaussian smoothing (sigma = (factor - 1) / 2 voxels) on axes resampled to a "
                       "coarser spacing")
    else:
        reasons.append("anti-aliasing: off (from config)")

    augment = config.augmentation if config.augment else None
    reasons.append("augmentation: " + ("on (training samples only)" if augment else "off (from config)"))

    plan = Plan(
        preset=preset,
        spatial_dims=spatial_dims,
        mode=mode,
        slice_context=slice_context,
        spacing=tuple(float(v) for v in spacing),
        input_size=tuple(int(v) for v in input_size),
        ct_window=ct_window,
        ct_window_name=ct_window_name,
        intensity_percentiles=percentiles,
        anti_aliasing=config.anti_aliasing,
        crop_foreground=crop,
        crop_margin=config.crop_margin,
        foreground_threshold=foreground_threshold,
        augment=augment,
        reasons=tuple(reasons),
        fingerprint=fp,
    )
    for reason in reasons:
        logger.info("plan: %s", reason)
    return plan
