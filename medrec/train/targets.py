"""Finding-map training targets: the lesion annotations rasterised onto the cached training grids.

The lesion annotations (a lesion table or NIfTI masks, :mod:`medrec.annotations`) are rasterised
once onto each preprocessed training volume through its affine, so the target lies on exactly
the voxels the network sees. Annotated positives get a lesion mask, negatives an empty target;
a positive study without annotation (label only) has no voxel target and is learned by
multiple-instance learning (:mod:`medrec.train.findings`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from medrec.data.dataset import SampleStore
from medrec.errors import ConfigError, InputError

# The target of a label-only slice: "somewhere in here is a lesion" (no voxel target).
MIL_TARGET = -1.0

# The share of their slices' pixels that lesion voxels took on the default CT phantoms (18-40 mm
# lesions at 2.8 mm: 0.75 %), where plain voxel cross-entropy learned. ``lesion_weight: auto``
# weights lesion voxels by this over a cohort's own share (at most MAX_LESION_WEIGHT), so that
# smaller findings keep the same share of the loss.
REFERENCE_LESION_FRACTION = 0.0075
MAX_LESION_WEIGHT = 20.0


class FindingTargets:
    """The voxel targets of the training studies, on their cached grids.

    Attributes:
        masks: sample id -> uint8 lesion mask ``(X, Y, Z)`` (or ``(X, Y)``) of an annotated positive.
        negatives: sample ids whose target is empty (negative studies).
        label_only: positive sample ids without a usable annotation (no voxel target).
    """

    def __init__(self) -> None:
        self.masks: dict[str, np.ndarray] = {}
        self.negatives: list[str] = []
        self.label_only: list[str] = []

    @property
    def known(self) -> list[str]:
        """Samples whose whole target is known (annotated positives, then negatives)."""
        return [*self.masks, *self.negatives]

    def lesion_slices(self, sample_id: str) -> np.ndarray:
        """Indices of the axial slices holding lesion voxels (index 0 for 2D images)."""
        mask = self.masks[sample_id]
        if mask.ndim == 2:
            return np.zeros(1, dtype=np.int64) if mask.any() else np.zeros(0, dtype=np.int64)
        return np.flatnonzero(mask.reshape(-1, mask.shape[-1]).any(axis=0))

    def lesion_fraction(self, patch_size: int | None = None) -> float:
        """Lesion voxels over all pixels of the items that hold them (the foreground draws' share):
        whole slices, or ``patch_size`` crops of them."""
        voxels = sum(int(mask.sum()) for mask in self.masks.values())
        pixels = sum(len(self.lesion_slices(s)) * int(np.prod(crop_shape(mask.shape[:2], patch_size)))
                     for s, mask in self.masks.items())
        return voxels / pixels if pixels else 0.0

    def lesion_weight(self, setting: float | str, patch_size: int | None = None) -> tuple[float, str]:
        """The weight of lesion voxels in the loss and why (``setting``: a number or ``auto``)."""
        if setting != "auto":
            return float(setting), "training.lesion_weight"
        fraction = self.lesion_fraction(patch_size)
        weight = float(np.clip(REFERENCE_LESION_FRACTION / max(fraction, 1e-9), 1.0, MAX_LESION_WEIGHT))
        items = "their slices" if patch_size is None else f"their {patch_size}-voxel patches"
        return round(weight, 2), (f"auto: lesion voxels are {fraction:.2%} of {items}, "
                                  f"{REFERENCE_LESION_FRACTION:.2%} is the reference")

    def summary(self) -> str:
        voxels = sum(int(mask.sum()) for mask in self.masks.values())
        return (
            f"finding targets: {len(self.masks)} annotated positives ({voxels} lesion voxels), "
            f"{len(self.negatives)} negatives, {len(self.label_only)} positives without annotation (no voxel target)"
        )


def build_targets(
    store: SampleStore,
    sample_ids: Sequence[str],
    is_positive: Callable[[str], bool],
    mask_of: Callable[[str, tuple[int, ...], np.ndarray], np.ndarray | None],
) -> FindingTargets:
    """Rasterise the annotation of every training study onto its cached grid.

    Args:
        store: the preprocessed samples (their affines must be cached).
        sample_ids: the training samples.
        is_positive: whether a sample's label is the positive class.
        mask_of: ``(sample_id, spatial_shape, affine_ras) -> mask or None`` (None: not annotated).

    Raises:
        InputError: a cached sample has no affine (a cache written without geometry).
    """
    targets = FindingTargets()
    for sample_id in sample_ids:
        if not is_positive(sample_id):
            targets.negatives.append(sample_id)
            continue
        sample = store.get(sample_id)
        if sample.affine is None:
            raise InputError(
                f"sample {sample_id}: its cached image has no affine, so lesion annotations cannot be placed; "
                "delete the cache folder (training.cache_dir) and train again"
            )
        mask = mask_of(sample_id, tuple(sample.array.shape[1:]), np.asarray(sample.affine, dtype=np.float64))
        if mask is None or not mask.any():
            targets.label_only.append(sample_id)
        else:
            targets.masks[sample_id] = np.ascontiguousarray(mask, dtype=np.uint8)
    if not targets.masks:
        raise ConfigError(
            "finding-map training: no training study has a usable lesion annotation "
            f"({len(targets.label_only)} positives without one); check data.lesions / data.masks and annotations_qc.csv"
        )
    return targets


class TopSlice(NamedTuple):
    """Where a study's finding map peaks: the axial slice, the logit, and the in-plane voxel
    (``x`` / ``y`` -1 when unknown: the whole slice is the place)."""

    z: int
    score: float
    x: int = -1
    y: int = -1


def crop_shape(shape: Sequence[int], patch_size: int | None) -> tuple[int, int]:
    """The in-plane size of a training item: ``patch_size`` square, never larger than the slice."""
    if patch_size is None:
        return int(shape[0]), int(shape[1])
    return min(int(patch_size), int(shape[0])), min(int(patch_size), int(shape[1]))


def mask_function(annotations: object) -> Callable[[str, tuple[int, ...], np.ndarray], np.ndarray | None]:
    """``(sample_id, shape, affine) -> mask or None`` over :class:`medrec.annotations.Annotations`."""
    from medrec.annotations import annotation_mask

    def mask_of(sample_id: str, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray | None:
        return annotation_mask(annotations, sample_id, shape, affine)

    return mask_of


def positive_checker(labels: Mapping[str, str], positive_class: str | None) -> Callable[[str], bool]:
    """Whether a sample's label is the positive class."""
    if positive_class is None:
        raise ConfigError("finding-map models score one finding per study: the task must be binary")
    return lambda sample_id: str(labels[sample_id]) == str(positive_class)
