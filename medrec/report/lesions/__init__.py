"""Lesion-level results of a finding-map run: its findings against a lesion table.

* :mod:`~medrec.report.lesions.froc`: when a finding hits a lesion, and the hit rate, FROC with its
  CPM and the sensitivity by lesion diameter and contrast of a set of studies (its docstring gives
  the definitions);
* :mod:`~medrec.report.lesions.results`: the predictions, their findings file and the lesion table
  read into those studies;
* :mod:`~medrec.report.lesions.voxel_ap`: the voxel-level average precision of the studies' finding
  maps (``medrec score --explain``), every voxel pooled, as the MOOD challenge scores anomaly maps.
"""

from __future__ import annotations

from medrec.report.lesions.froc import (
    BAND_FP_RATE,
    DIAMETER_BANDS,
    FP_RATES,
    LesionCase,
    Point,
    contrast_tertiles,
    froc_curve,
    froc_points,
    hits,
    lesion_level_analysis,
)
from medrec.report.lesions.results import findings_file_of, lesion_level_results, require_lesion_table
from medrec.report.lesions.voxel_ap import (
    ThresholdCounts,
    VoxelStudy,
    pooled_average_precision,
    voxel_level_ap,
)

__all__ = [
    "BAND_FP_RATE",
    "DIAMETER_BANDS",
    "FP_RATES",
    "LesionCase",
    "Point",
    "ThresholdCounts",
    "VoxelStudy",
    "contrast_tertiles",
    "findings_file_of",
    "froc_curve",
    "froc_points",
    "hits",
    "lesion_level_analysis",
    "lesion_level_results",
    "pooled_average_precision",
    "require_lesion_table",
    "voxel_level_ap",
]
