"""Voxel-level average precision of a finding-map run: its finding maps against the lesion table.

The measure is the one the MOOD challenge (Zimmerer et al. 2022, IEEE TMI 41:2728) scores anomaly
maps with: every voxel of every analysed study is one item, pooled over all studies; its score is
the finding map's probability there and its label is whether it lies inside a reference lesion.

**Definition** (scikit-learn's ``average_precision_score``, step-wise, never interpolated): with
the distinct scores of lesion voxels ``t_1 > t_2 > ...``, ``TP_n`` the lesion voxels and ``A_n``
all voxels scoring at or above ``t_n``, ``P`` the lesion voxels in all,
``AP = sum_n (R_n - R_{n-1}) * P_n`` with recall ``R_n = TP_n / P`` and precision
``P_n = TP_n / A_n``. Thresholds at which no lesion voxel enters add nothing (the recall does not
move), so only the lesion voxels' scores matter as thresholds; every other voxel only needs to be
counted against them. That makes the computation exact with memory in the lesion voxels:

1. read each map once, keep the scores of its lesion voxels (few), and keep the whole map only
   while a budget of :data:`CACHE_VOXELS` voxels lasts;
2. take the distinct lesion scores as thresholds and count, per map (the kept ones, then the others
   read again), how many voxels reach each threshold (``searchsorted`` over the sorted
   thresholds, in chunks, exact integer counts; scores compare as the maps' float32 values).

**Source of the scores**: the finding maps that ``medrec score --explain DIR`` writes, one
``DIR/<sample id>.nii.gz`` per sample (:class:`medrec.score.explain.GradCamExplainer`: the
model's voxel probability of a lesion, resampled onto the scan's own grid, with the scan's RAS
affine), found where the report looks for them (the folder the predictions' sidecar names, then
``explain/`` beside the predictions). They are the honest source: they hold every voxel's
probability, on the scan's grid, as scoring computed it. Scoring itself cannot summarise them
(e.g. as a score histogram) because it does not know the lesions, and a binned summary would
only approximate the AP. Without the maps the result says why and holds no number.

**Labels**: the lesion table's spheres drawn on each map's grid through the map's affine
(:func:`medrec.annotations.rasterise_spheres`: a voxel is inside when its centre lies within the
radius of a lesion's centre, LPS centres turned to RAS; the voxel holding a centre is always
marked, as for the training targets). A study of several samples (series) pools the maps of all
of them. Reference-negative studies are all background. Left out and counted: positive studies
without an annotated lesion (their voxels cannot be labelled), studies with a sample whose map is
missing or unreadable, and positive studies whose lesions fall on none of their maps' voxels.
The value comes without a confidence interval: the voxels of one study are not independent.
A map is taken as the scoring of these predictions wrote it; one left in the folder by an earlier
scoring with other weights cannot be told apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medrec.annotations import Lesion, rasterise_spheres
from medrec.errors import InputError

CACHE_VOXELS = 1 << 25  # maps kept in memory between the two passes (float32: 128 MiB)
CHUNK_VOXELS = 1 << 22  # voxels counted at once (bounds the searchsorted index array)
MAP_SUFFIX = ".nii.gz"
NAMED_UNREADABLE = 10  # unreadable maps named in the result (all are counted)
SOURCE_TEXT = "finding maps written by 'medrec score --explain'"
HOW_TO_GET = "score with 'medrec score --explain DIR' to get voxel-level AP"


@dataclass(frozen=True)
class VoxelStudy:
    """One analysed study: its reference, its lesions and the samples whose maps it pools."""

    positive: bool
    lesions: tuple[Lesion, ...]
    sample_ids: tuple[str, ...]


class ThresholdCounts:
    """Exact step-wise average precision from the lesion voxels' scores and counts of all voxels.

    Args:
        lesion_scores: the score of every lesion voxel (all maps).
        chunk_voxels: voxels counted at once by :meth:`add`.
    """

    def __init__(self, lesion_scores: np.ndarray, chunk_voxels: int = CHUNK_VOXELS) -> None:
        scores = np.asarray(lesion_scores, dtype=np.float32).ravel()
        self.thresholds, self.lesions_at = np.unique(scores, return_counts=True)  # ascending
        self.chunk_voxels = int(chunk_voxels)
        # reached[k]: voxels that reach exactly k thresholds (k = 0: below the lowest lesion score)
        self.reached = np.zeros(len(self.thresholds) + 1, dtype=np.int64)

    def add(self, scores: np.ndarray) -> None:
        """Count voxels (of any label: lesion voxels are counted here too) against the thresholds."""
        flat = np.asarray(scores, dtype=np.float32).ravel(order="K")
        for start in range(0, flat.size, self.chunk_voxels):
            index = np.searchsorted(self.thresholds, flat[start:start + self.chunk_voxels], side="right")
            self.reached += np.bincount(index, minlength=len(self.reached))

    @property
    def voxels(self) -> int:
        return int(self.reached.sum())

    @property
    def lesion_voxels(self) -> int:
        return int(self.lesions_at.sum())

    def average_precision(self) -> float | None:
        """``sum_n (R_n - R_{n-1}) P_n`` over the distinct lesion scores; None without lesion voxels.

        Raises:
            InputError: fewer voxels reach a threshold than lesion voxels do (the lesion scores
                were not among the counted voxels).
        """
        total = self.lesion_voxels
        if total == 0:
            return None
        at_or_above = np.cumsum(self.reached[::-1])[::-1][1:]  # all voxels >= threshold m
        lesions_at_or_above = np.cumsum(self.lesions_at[::-1])[::-1]
        if np.any(at_or_above < lesions_at_or_above):
            raise InputError("voxel-level AP: the lesion voxels' scores are not among the counted voxels; count "
                             "every voxel of every map, lesion voxels included")
        precision = lesions_at_or_above / at_or_above
        return float(np.sum(self.lesions_at / total * precision))


def pooled_average_precision(studies: Iterable[tuple[np.ndarray, np.ndarray]],
                             chunk_voxels: int = CHUNK_VOXELS) -> float | None:
    """Average precision of ``(scores, inside)`` pairs pooled over studies, all in memory.

    Args:
        studies: per study, its voxel scores and a same-shaped mask (true inside a lesion).
        chunk_voxels: voxels counted at once.

    Returns:
        The AP (scikit-learn's definition), or None when no voxel is inside a lesion.
    """
    pairs = [(np.asarray(s, dtype=np.float32), np.asarray(m, dtype=bool)) for s, m in studies]
    counts = ThresholdCounts(np.concatenate([s[m] for s, m in pairs]) if pairs else np.zeros(0, np.float32),
                             chunk_voxels)
    for scores, _ in pairs:
        counts.add(scores)
    return counts.average_precision()


def map_folders(predictions_csv: str | os.PathLike[str], record: Mapping[str, Any] | None) -> list[Path]:
    """Where the finding maps of the predictions may lie (as the report's case pictures look for them)."""
    from medrec.report.case_pictures import _explain_folders

    return _explain_folders(Path(predictions_csv), record)


def map_path(sample_id: str, folders: Sequence[Path]) -> Path | None:
    """The first ``<sample id>.nii.gz`` (named as the scorer names it) in ``folders``, or None."""
    from medrec.score.explain import safe_file_stem

    name = safe_file_stem(sample_id) + MAP_SUFFIX
    return next((folder / name for folder in folders if (folder / name).is_file()), None)


def read_map(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A finding map's float32 values (2D or 3D) and its voxel-to-RAS affine.

    Raises:
        InputError: unreadable, not 2D / 3D, or holding non-finite values.
    """
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))  # a NIfTI image: typed as the file-based base class
        values = np.asarray(image.dataobj, dtype=np.float32)
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as e:  # nibabel raises many unrelated types for damaged files
        raise InputError(f"{path.name}: unreadable finding map ({type(e).__name__})") from e
    while values.ndim > 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim not in (2, 3):
        raise InputError(f"{path.name}: a finding map must be 2D or 3D, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise InputError(f"{path.name}: the finding map holds non-finite values")
    return values, affine


def _lesion_mask(values: np.ndarray, affine: np.ndarray, lesions: Sequence[Lesion]) -> np.ndarray:
    return rasterise_spheres(values.shape, affine, lesions).astype(bool)


def _lesion_scores(values: np.ndarray, affine: np.ndarray, lesions: Sequence[Lesion]) -> np.ndarray:
    return values[_lesion_mask(values, affine, lesions)] if lesions else np.zeros(0, dtype=np.float32)


def voxel_level_ap(studies: Sequence[VoxelStudy], folders: Sequence[Path],
                   cache_voxels: int = CACHE_VOXELS, chunk_voxels: int = CHUNK_VOXELS) -> dict[str, Any]:
    """Voxel-level average precision of the analysed studies' finding maps (see the module docstring).

    Args:
        studies: the analysed studies (a reference-negative study's lesions are ignored).
        folders: where the maps may lie (:func:`map_folders`), first match wins.
        cache_voxels: map voxels kept in memory between the two passes; the rest are read twice.
        chunk_voxels: voxels counted at once.

    Returns:
        ``value`` (None when not computed), ``reason`` (why not; None when computed), ``source``,
        ``studies`` (pooled), ``positive_studies``, ``maps``, ``voxels``, ``lesion_voxels`` and the
        studies left out: ``studies_without_map``, ``studies_with_unreadable_map`` (the first
        :data:`NAMED_UNREADABLE` named with their reason in ``unreadable_maps``),
        ``positive_without_lesions``, ``positive_lesions_off_map``.

    Raises:
        InputError: a map that was read in the first pass cannot be read in the second.
    """
    result: dict[str, Any] = {
        "value": None, "reason": None, "source": SOURCE_TEXT, "definition": "scikit-learn average_precision_score "
        "over all voxels of all pooled studies (step-wise, not interpolated)", "folders": [],
        "studies": 0, "positive_studies": 0, "maps": 0, "voxels": 0, "lesion_voxels": 0,
        "studies_analysed": len(studies), "studies_without_map": 0, "studies_with_unreadable_map": 0,
        "positive_without_lesions": 0, "positive_lesions_off_map": 0, "unreadable_maps": [],
    }
    lesion_scores: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    again: list[Path] = []
    used: set[Path] = set()
    budget = int(cache_voxels)
    for study in studies:
        lesions = study.lesions if study.positive else ()
        if study.positive and not lesions:
            result["positive_without_lesions"] += 1
            continue
        paths = [map_path(sample_id, folders) for sample_id in study.sample_ids]
        if not paths or any(path is None for path in paths):
            result["studies_without_map"] += 1
            continue
        try:
            maps = [read_map(path) for path in paths]  # type: ignore[arg-type]
        except InputError as e:
            result["studies_with_unreadable_map"] += 1
            if len(result["unreadable_maps"]) < NAMED_UNREADABLE:
                result["unreadable_maps"].append(str(e))
            continue
        inside = [_lesion_scores(values, affine, lesions) for values, affine in maps]
        if study.positive and not sum(len(found) for found in inside):
            result["positive_lesions_off_map"] += 1
            continue
        result["studies"] += 1
        result["positive_studies"] += int(study.positive)
        lesion_scores.extend(inside)
        for path, (values, _) in zip(paths, maps, strict=True):
            used.add(path.parent)  # type: ignore[union-attr]
            result["maps"] += 1
            if values.size <= budget:
                kept.append(values)
                budget -= values.size
            else:
                again.append(path)  # type: ignore[arg-type]
    result["folders"] = sorted(folder.name or str(folder) for folder in used)

    if not result["studies"]:
        result["reason"] = _why_none(result, folders)
        return result
    counts = ThresholdCounts(np.concatenate(lesion_scores), chunk_voxels)
    for values in kept:
        counts.add(values)
    kept.clear()
    for path in again:
        try:
            counts.add(read_map(path)[0])
        except InputError as e:
            raise InputError(f"voxel-level AP: a finding map in {path.parent.name} changed while the report was "
                             f"read ({e}); make the report again") from e
    result.update(voxels=counts.voxels, lesion_voxels=counts.lesion_voxels, value=counts.average_precision())
    if result["value"] is None:
        result["reason"] = (f"no voxel of the {result['studies']} pooled studies' maps lies inside a lesion (none of "
                            "them is reference-positive with an annotated lesion on its maps)")
    return result


def _why_none(result: Mapping[str, Any], folders: Sequence[Path]) -> str:
    """Why no study could be pooled."""
    analysed = result["studies_analysed"]
    if not analysed:
        return "no analysed study"
    if result["studies_without_map"] and not any(folder.is_dir() for folder in folders):
        where = ", ".join(dict.fromkeys(folder.name or str(folder) for folder in folders))
        return (f"the predictions come without finding maps (looked for <sample id>{MAP_SUFFIX} in {where}: no such "
                f"folder); {HOW_TO_GET}, and keep the folder beside the predictions")
    left = [(result["studies_without_map"], "have no finding map"),
            (result["studies_with_unreadable_map"], "have an unreadable finding map"),
            (result["positive_without_lesions"], "are positive without an annotated lesion"),
            (result["positive_lesions_off_map"], "are positive with lesions on none of their maps' voxels")]
    parts = "; ".join(f"{count} {text}" for count, text in left if count)
    hint = f"; {HOW_TO_GET}" if result["studies_without_map"] else ""
    return f"none of the {analysed} analysed studies could be pooled ({parts}){hint}"
