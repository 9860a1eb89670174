"""Indexed synthetic cohorts and an independent sphere rasteriser for the annotation tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medrec.index import index_folder
from medrec.manifest import read_manifest
from medrec.synth import generate_cohort

SMALL = {"image_size": 32, "slice_thickness": 10.0, "patients": 6, "seed": 0, "lesion_diameter_mm": (20.0, 30.0)}


@dataclass(frozen=True)
class IndexedCohort:
    """A synth cohort, indexed with its labels.csv."""

    root: Path
    manifest: pd.DataFrame
    ground_truth: pd.DataFrame
    labels: pd.DataFrame


def indexed_cohort(root: Path, out: Path, **kw: object) -> IndexedCohort:
    """Generate a small synth cohort under ``root`` and index it into ``out`` with its labels.csv."""
    generate_cohort(root, **{**SMALL, **kw})
    index_folder(root, out, labels=root / "labels.csv", show_progress=False)
    return IndexedCohort(
        root=root,
        manifest=read_manifest(out / "manifest.csv"),
        ground_truth=pd.read_csv(root / "ground_truth.csv", dtype={"study_uid": str, "series_uid": str}),
        labels=pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False),
    )


def spheres_by_distance(shape: tuple[int, ...], affine_ras: np.ndarray, centers_lps, diameters) -> np.ndarray:
    """Reference rasteriser: every voxel centre's distance to every lesion centre (3D grids only)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = index @ affine_ras[:3, :3].T + affine_ras[:3, 3]
    mask = np.zeros(len(index), dtype=bool)
    for (x, y, z), diameter in zip(centers_lps, diameters, strict=True):
        mask |= np.linalg.norm(world - np.array([-x, -y, z]), axis=1) <= diameter / 2
    return mask.reshape(shape).astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two binary masks."""
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())
