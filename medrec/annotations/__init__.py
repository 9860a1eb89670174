"""Lesion annotations: a lesion table or lesion masks, matched to manifest samples.

Two inputs, either or both:

* a **lesion table** (``--lesions``): one row per lesion with ``study_uid`` and / or ``series_uid``,
  ``center_x, center_y, center_z`` (patient LPS mm) and ``diameter_mm``, the columns of ``medrec
  synth``'s ``ground_truth.csv``. A row names a series (matched first) or a study (every sample of
  the study gets the lesion: a lesion in a study is in each of its series). Lesions become spheres.
* a **masks file**: a labels-style CSV with a ``mask`` column, a NIfTI path relative to the CSV's
  folder; the mask is in the scan's world geometry on any voxel grid. An empty cell says the study
  has no lesion. Rows match samples exactly as ``medrec index --labels`` matches them
  (:func:`medrec.index.labels.match_labels`).

A sample is *annotated* when its dense target is known: it has lesions or a usable mask, or it is
a negative study (its target is all zeros, listed or not). A positive study without lesions is
*label-only*. Bad input never stops the read: every bad row, unmatched row or unusable mask is
counted in :attr:`Annotations.counts` and listed in :attr:`Annotations.problems` (file and line).

Geometry: targets are described by their voxel-to-RAS affine (the NIfTI / MONAI convention that
:func:`medrec.loader.load_sample` returns); LPS becomes RAS by negating x and y.

One module per step: :mod:`~medrec.annotations.record` holds what was read per sample
(:class:`Annotations`), :mod:`~medrec.annotations.reading` reads the lesion table and the masks
file and matches them to the samples, :mod:`~medrec.annotations.grid` describes a target grid,
:mod:`~medrec.annotations.spheres` marks lesion spheres on it, :mod:`~medrec.annotations.masks`
brings a NIfTI mask onto it, and :mod:`~medrec.annotations.target` combines both into one
sample's dense target.
"""

from __future__ import annotations

from medrec.annotations.masks import mask_lesion_diameters, resample_mask
from medrec.annotations.reading import (
    CENTER_COLUMNS,
    CONTRAST_COLUMN,
    DIAMETER_COLUMN,
    MASK_COLUMN,
    check_lesion_table,
    read_annotations,
)
from medrec.annotations.record import COUNT_KEYS, PROBLEM_COLUMNS, Annotations, Lesion, write_problems
from medrec.annotations.spheres import nearest_voxel, rasterise_spheres
from medrec.annotations.target import annotation_mask

__all__ = [
    "CENTER_COLUMNS",
    "CONTRAST_COLUMN",
    "COUNT_KEYS",
    "DIAMETER_COLUMN",
    "MASK_COLUMN",
    "PROBLEM_COLUMNS",
    "Annotations",
    "Lesion",
    "annotation_mask",
    "check_lesion_table",
    "mask_lesion_diameters",
    "nearest_voxel",
    "rasterise_spheres",
    "read_annotations",
    "resample_mask",
    "write_problems",
]
