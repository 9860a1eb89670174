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

from medrec.planning.fingerprinting import INTENSITY_VOXELS_PER_SAMPLE, SampleLoader, fingerprint
from medrec.planning.plan import PLAN_VERSION, Plan
from medrec.planning.planner import make_plan
from medrec.planning.rules import (
    ANISOTROPY_THRESHOLD,
    FEW_SLICES,
    MIN_FINDING_VOXELS,
    SIZE_MULTIPLE,
    VOXEL_BUDGETS,
)

__all__ = [
    "ANISOTROPY_THRESHOLD",
    "FEW_SLICES",
    "INTENSITY_VOXELS_PER_SAMPLE",
    "MIN_FINDING_VOXELS",
    "PLAN_VERSION",
    "SIZE_MULTIPLE",
    "VOXEL_BUDGETS",
    "Plan",
    "SampleLoader",
    "fingerprint",
    "make_plan",
]
