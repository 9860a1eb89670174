"""The data fingerprint that planning starts from: a cohort's geometry from the manifest's columns (no
pixel reads) and intensity statistics from a seeded subsample of loaded samples.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from medrec.errors import ConfigError
from medrec.transforms.presets import CT_BODY_THRESHOLD_HU, MODALITY_PRESETS, otsu_threshold

logger = logging.getLogger("medrec.planning")

# Voxels drawn per loaded sample for the intensity statistics (bounds memory on big volumes).
INTENSITY_VOXELS_PER_SAMPLE = 20_000

SampleLoader = Callable[[Mapping[str, Any]], Any]


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
