"""Planning: :func:`make_plan` turns a fingerprint and a :class:`~medrec.transforms.PreprocessConfig`
into a :class:`~medrec.planning.plan.Plan` (rules in the :mod:`medrec.planning` docstring); any
explicit config value wins over the automatic rule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from medrec.errors import ConfigError
from medrec.planning.plan import Plan
from medrec.planning.rules import (
    ANISOTROPY_THRESHOLD,
    MIN_FINDING_VOXELS,
    SIZE_MULTIPLE,
    _budget,
    _choose_mode,
    _choose_preset,
    _coarsen,
    _fmt,
    _sizes,
)
from medrec.transforms.config import PreprocessConfig
from medrec.transforms.presets import CT_BODY_THRESHOLD_HU, CT_WINDOWS, DEFAULT_CT_WINDOW

logger = logging.getLogger("medrec.planning")


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
