"""Training finding-map models: lesion targets on the cached grid, slice sampling and the dense loss.

The lesion annotations (a lesion table or NIfTI masks, :mod:`medrec.annotations`) are rasterised
once onto each preprocessed training volume through its affine, so the target lies on exactly
the voxels the network sees. Every optimiser step then takes ``batch_size`` axial slices (with
their 2.5D neighbours): a ``foreground_fraction`` share drawn from lesion slices of annotated
studies, the rest from anywhere in studies whose target is known (annotated positives and all
negatives, whose target is empty). The loss is the voxels' binary cross-entropy (see
:func:`finding_loss`).

A positive study without annotation (label only) has no voxel target; it is used by multiple-
instance learning: once per epoch (from the second on) the current model picks the slice of each
such study holding its highest logit, and a ``mil_fraction`` share of the items are such slices,
whose target is "the maximum of this slice is a lesion" (cross-entropy of the slice's maximum
logit against 1). Negatives need no such term: their voxel target (all zeros) already says that
nothing in them is a lesion.

Hard slices: a ``hard_fraction`` share of the items are, for studies whose target is known, the
slice holding the study's highest logit (found by the current model for a third of those studies
each epoch, in turn), with its voxel target. The study score is the maximum of the map, so the
lesion-free places that look most like a lesion decide the score of a negative study; uniform slice
draws meet them rarely.

Draws are seeded by (seed, epoch, position), so an epoch is the same whatever the worker layout
and a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrec.data.dataset import SampleStore
from medrec.determinism import derive_seed
from medrec.errors import ConfigError, InputError
from medrec.train.paste import LesionPiece, cut_lesions, paste_lesion

# The target of a label-only slice: "somewhere in here is a lesion" (no voxel target).
MIL_TARGET = -1.0

# The share of their slices' pixels that lesion voxels took on the default CT phantoms (18-40 mm
# lesions at 2.8 mm: 0.75 %), where plain voxel cross-entropy learned. ``lesion_weight: auto``
# weights lesion voxels by this over a cohort's own share (at most MAX_LESION_WEIGHT), so that
# smaller findings keep the same share of the loss.
REFERENCE_LESION_FRACTION = 0.0075
MAX_LESION_WEIGHT = 20.0

# Slices of a study tried for a pasted lesion before the draw becomes an ordinary one.
PASTE_SLICES = 4


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


def _crop_origin(size: int, extent: int, centre: float) -> int:
    return int(np.clip(round(centre - size / 2), 0, extent - size))


def slice_stack(volume: np.ndarray, z: int, context: int) -> np.ndarray:
    """Slice ``z`` of a ``(C, X, Y, Z)`` volume with ``context`` neighbours each side as channels.

    The channel order matches :func:`medrec.models.stack_slice_context` (offset-major; slices beyond
    either end repeat the edge slice). 2D images ``(C, X, Y)`` are returned as they are.
    """
    if volume.ndim == 3:
        return volume
    depth = volume.shape[-1]
    picks = [min(max(z + offset, 0), depth - 1) for offset in range(-context, context + 1)]
    return np.concatenate([volume[..., k] for k in picks], axis=0)


class FindingSliceDataset(Dataset):
    """``(slice_stack, target, position)`` items drawn for one epoch (see the module docstring).

    With ``patch_size``, each item is a square crop of its slice (never larger than the slice):
    around a random lesion voxel for lesion draws (the lesion within the middle third), around the
    peak for hard and MIL draws, anywhere for the rest. A small finding then takes a larger share
    of each item, and a step costs a fraction of a whole-slice step, so a training budget buys
    more steps; the fully convolutional network still maps whole slices at inference.

    Args:
        store: the preprocessed samples.
        targets: from :func:`build_targets`.
        context: 2.5D neighbours on each side.
        length: items per epoch on this process (steps x batch size).
        foreground_fraction: share of items drawn from lesion slices.
        seed: base seed.
        rank: this process's rank (draws differ per rank).
        flips: random in-plane flips (augmentation).
        mil_fraction: share of items drawn from the top slices of label-only positives (once
            :meth:`set_top_slices` gave them).
        hard_fraction: share of items drawn from the top slices of studies with a known target
            (once :meth:`set_hard_slices` gave them).
        patch_size: in-plane size of the training crops (None: whole slices).
        paste_fraction: share of items that are a study with an annotated training lesion pasted
            into it (:mod:`medrec.train.paste`), for studies whose target is known.
    """

    def __init__(
        self,
        store: SampleStore,
        targets: FindingTargets,
        context: int,
        length: int,
        foreground_fraction: float,
        seed: int,
        rank: int = 0,
        flips: bool = True,
        mil_fraction: float = 0.0,
        hard_fraction: float = 0.0,
        patch_size: int | None = None,
        paste_fraction: float = 0.0,
    ) -> None:
        self.store, self.targets, self.context = store, targets, context
        self.length, self.foreground_fraction, self.seed, self.rank, self.flips = (
            length, foreground_fraction, seed, rank, flips
        )
        self.known = targets.known
        self.lesion_slices = {s: targets.lesion_slices(s) for s in targets.masks}
        self.with_lesion_slices = [s for s, slices in self.lesion_slices.items() if len(slices)]
        self.mil_fraction = mil_fraction
        self.top_slices: dict[str, TopSlice] = {}
        self.hard_fraction = hard_fraction
        self.hard_slices: dict[str, TopSlice] = {}
        self.patch_size = patch_size
        self.paste_fraction = paste_fraction
        self.pieces: list[LesionPiece] = []
        if paste_fraction > 0:
            for sample_id, mask in targets.masks.items():
                volume = store.get(sample_id).array
                if volume.ndim == 4:
                    self.pieces.extend(cut_lesions(volume, mask))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_top_slices(self, top_slices: Mapping[str, int | TopSlice]) -> None:
        """The slice (and peak) of the highest logit of each label-only positive (from the current model)."""
        self.top_slices = {s: _as_top(place) for s, place in top_slices.items()}

    def set_hard_slices(self, hard_slices: Mapping[str, int | TopSlice]) -> None:
        """The slice (and peak) of the highest logit of this epoch's share of studies with a known target.

        Replaced, not accumulated, each epoch: the pool then depends on the current model only,
        so a resumed run draws what the uninterrupted one drew.
        """
        self.hard_slices = {s: _as_top(place) for s, place in hard_slices.items()}

    def hard_refresh(self, epoch: int) -> list[str]:
        """The studies whose hard slice is refreshed before ``epoch`` (a third of them, in turn)."""
        return [s for position, s in enumerate(self.known) if position % 3 == epoch % 3]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        rng = np.random.default_rng(derive_seed(self.seed, self.epoch, self.rank, index))
        draw = rng.random()
        if self.top_slices and draw >= 1 - self.mil_fraction:
            return self._mil_item(rng, index)
        peak: TopSlice | None = None
        if self.with_lesion_slices and draw < self.foreground_fraction:
            sample_id = self.with_lesion_slices[rng.integers(len(self.with_lesion_slices))]
            slices = self.lesion_slices[sample_id]
            z = int(slices[rng.integers(len(slices))])
            volume = self.store.get(sample_id).array
        elif self.hard_slices and draw < self.foreground_fraction + self.hard_fraction:
            names = sorted(self.hard_slices)
            sample_id = names[rng.integers(len(names))]
            volume = self.store.get(sample_id).array
            peak = self.hard_slices[sample_id]
            z = peak.z if volume.ndim == 4 else 0
        else:
            sample_id = self.known[rng.integers(len(self.known))]
            volume = self.store.get(sample_id).array
            z = int(rng.integers(volume.shape[-1])) if volume.ndim == 4 else 0
            if self.pieces and draw < self.foreground_fraction + self.hard_fraction + self.paste_fraction:
                piece = self.pieces[rng.integers(len(self.pieces))]
                pasted = None
                for _ in range(PASTE_SLICES):  # a slice through tissue like the piece's surroundings
                    pasted = paste_lesion(volume, z, self.context, piece, rng, slice_stack)
                    if pasted is not None or volume.ndim != 4:
                        break
                    z = int(rng.integers(volume.shape[-1]))
                if pasted is not None:
                    image, target, (x, y) = pasted
                    self._add_own_target(target, sample_id, z)
                    if self.patch_size is not None:
                        image, target = self._crop(image, target, rng, TopSlice(z, float("nan"), x, y), lesion=False)
                    return self._item(image, target, rng, index)
        image = slice_stack(volume, z, self.context)
        target = np.zeros((1, *image.shape[1:]), dtype=np.float32)
        self._add_own_target(target, sample_id, z)
        if self.patch_size is not None:
            image, target = self._crop(image, target, rng, peak, lesion=draw < self.foreground_fraction)
        return self._item(image, target, rng, index)

    def _add_own_target(self, target: np.ndarray, sample_id: str, z: int) -> None:
        """The study's own lesion voxels on slice ``z`` into ``target`` (kept where a piece was pasted)."""
        mask = self.targets.masks.get(sample_id)
        if mask is not None:
            np.maximum(target[0], mask[..., z] if mask.ndim == 3 else mask, out=target[0])

    def _mil_item(self, rng: np.random.Generator, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The top slice of a label-only positive; its target is all ``MIL_TARGET`` (see :func:`finding_loss`)."""
        names = sorted(self.top_slices)
        sample_id = names[rng.integers(len(names))]
        volume = self.store.get(sample_id).array
        peak = self.top_slices[sample_id]
        image = slice_stack(volume, peak.z if volume.ndim == 4 else 0, self.context)
        target = np.full((1, *image.shape[1:]), MIL_TARGET, dtype=np.float32)
        if self.patch_size is not None:
            image, target = self._crop(image, target, rng, peak, lesion=False)
        return self._item(image, target, rng, index)

    def _crop(self, image: np.ndarray, target: np.ndarray, rng: np.random.Generator, peak: TopSlice | None,
              lesion: bool) -> tuple[np.ndarray, np.ndarray]:
        """A ``patch_size`` crop: around a lesion voxel, around ``peak``, or anywhere."""
        extent = image.shape[1:3]
        size = crop_shape(extent, self.patch_size)
        if lesion and target.max() > 0:
            voxels = np.argwhere(target[0] > 0)
            centre = voxels[rng.integers(len(voxels))] + rng.uniform(-1, 1, size=2) * np.asarray(size) / 6
        elif peak is not None and peak.x >= 0:
            centre = np.asarray([peak.x, peak.y]) + rng.uniform(-1, 1, size=2) * np.asarray(size) / 6
        else:
            centre = rng.uniform(0, 1, size=2) * np.asarray(extent)
        x0, y0 = (_crop_origin(size[axis], extent[axis], float(centre[axis])) for axis in (0, 1))
        window = (slice(None), slice(x0, x0 + size[0]), slice(y0, y0 + size[1]))
        return image[window], target[window]

    def _item(self, image: np.ndarray, target: np.ndarray, rng: np.random.Generator,
              index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.flips:
            for axis in (1, 2):
                if rng.random() < 0.5:
                    image, target = np.flip(image, axis), np.flip(target, axis)
        return (torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(target)), index)


def _as_top(place: int | TopSlice) -> TopSlice:
    return place if isinstance(place, TopSlice) else TopSlice(int(place), float("nan"))


@torch.no_grad()
def top_slice_scores(model: torch.nn.Module, store: SampleStore, sample_ids: Sequence[str]) -> dict[str, TopSlice]:
    """Where each sample's finding map peaks: slice, logit and in-plane voxel (model in eval mode)."""
    inner = getattr(model, "module", model)
    was_training = inner.training
    inner.eval()
    parameter = next(inner.parameters())
    found: dict[str, TopSlice] = {}
    try:
        for sample_id in sample_ids:
            volume = torch.from_numpy(np.asarray(store.get(sample_id).array, dtype=np.float32))[None]
            maps = inner.finding_map(volume.to(parameter.device))[0, 0]
            if maps.ndim == 2:
                maps = maps[..., None]
            peak = np.unravel_index(int(maps.argmax()), tuple(maps.shape))
            found[sample_id] = TopSlice(int(peak[2]), float(maps[peak]), int(peak[0]), int(peak[1]))
    finally:
        inner.train(was_training)
    return found


def top_slices(model: torch.nn.Module, store: SampleStore, sample_ids: Sequence[str]) -> dict[str, int]:
    """The axial slice holding the highest logit of each sample's finding map (model in eval mode)."""
    return {sample_id: top.z for sample_id, top in top_slice_scores(model, store, sample_ids).items()}


def gated_top_slices(
    candidates: Mapping[str, TopSlice], lesion_free: Sequence[float], quantile: float
) -> dict[str, TopSlice]:
    """The peaks of the label-only positives that the model already finds more suspicious
    than lesion-free studies: highest logit above the ``quantile`` of ``lesion_free``'s highest
    logits (``quantile`` 0, or no lesion-free logits, keeps all).

    Training an unsure top slice towards "finding" teaches the model whatever it happens to
    look at there; gating keeps MIL to slices that are likely to hold the finding.
    """
    if quantile <= 0 or not len(lesion_free):
        return dict(candidates)
    bar = float(np.quantile(np.asarray(lesion_free, dtype=np.float64), quantile))
    return {sample_id: top for sample_id, top in candidates.items() if top.score > bar}


def finding_loss(logits: torch.Tensor, target: torch.Tensor, lesion_weight: float = 1.0,
                 mil_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy of the voxel logits, plus the MIL term of label-only slices.

    ``lesion_weight`` multiplies the cross-entropy of lesion voxels (``pos_weight``): small
    findings give few lesion voxels, and without it the background's gradient drowns them.
    ``mil_weight`` multiplies the MIL term. The dense term is a mean over every voxel of a slice,
    most of them easy background, so it is small; an unscaled MIL term (one cross-entropy per
    slice) outweighed it a hundredfold and, on partly annotated CT, raised every study's maximum
    until validation AUC fell to chance (datasets/synthetic_phantoms.md). The trainer passes the
    share of its slice that a lesion takes, so a top slice counts as one annotated lesion would.

    Items whose target is ``MIL_TARGET`` (top slices of label-only positives) add the cross-entropy
    of their maximum logit against 1, weighted by their share of the batch; the others add the
    mean voxel cross-entropy, weighted likewise.

    Measured against nnU-Net's Dice + cross-entropy and against an extra cross-entropy of each
    slice's maximum logit (40-patient CT cohort, 20 training studies, 400 steps of 16 slices): the
    plain voxel cross-entropy reached training AUC 1.0 after 200 steps, the others 0.91 and 0.98
    after 400. Batch Dice rewards a wide blob of moderately high probability around a lesion,
    which also raises the maxima of lesion-free studies that the study score is taken from.
    """
    weak = target.flatten(1)[:, 0] == MIL_TARGET
    pos_weight = None if lesion_weight == 1.0 else torch.tensor(lesion_weight, device=logits.device)
    if not bool(weak.any()):
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
    share = weak.float().mean()
    slice_maxima = logits[weak].flatten(1).amax(dim=1)
    mil = F.binary_cross_entropy_with_logits(slice_maxima, torch.ones_like(share).expand(int(weak.sum())))
    if bool(weak.all()):
        return mil_weight * mil
    dense = F.binary_cross_entropy_with_logits(logits[~weak], target[~weak], pos_weight=pos_weight)
    return (1 - share) * dense + share * mil_weight * mil


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
