"""The slice items a finding-map model trains on, drawn afresh each epoch.

Every optimiser step takes ``batch_size`` axial slices (with their 2.5D neighbours): a
``foreground_fraction`` share drawn from lesion slices of annotated studies, the rest from
anywhere in studies whose target is known (annotated positives and all negatives, whose target is
empty). A ``mil_fraction`` share are the top slices of label-only positives (multiple-instance
learning, :mod:`medrec.train.findings`).

Hard slices: a ``hard_fraction`` share of the items are, for studies whose target is known, the
slice holding the study's highest logit (found by the current model for a third of those studies
each epoch, in turn), with its voxel target. The study score is the maximum of the map, so the
lesion-free places that look most like a lesion decide the score of a negative study; uniform slice
draws meet them rarely.

Draws are seeded by (seed, epoch, position), so an epoch is the same whatever the worker layout
and a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from medrec.data.dataset import SampleStore
from medrec.determinism import derive_seed
from medrec.train.paste import LesionPiece, cut_lesions, paste_lesion
from medrec.train.targets import MIL_TARGET, FindingTargets, TopSlice, crop_shape

# Slices of a study tried for a pasted lesion before the draw becomes an ordinary one.
PASTE_SLICES = 4


def _crop_origin(size: int, extent: int, centre: float) -> int:
    return int(np.clip(round(centre - size / 2), 0, extent - size))


def context_picks(z: int, depth: int, context: int) -> list[int]:
    """The slice indices ``z - context .. z + context``, the edge slice repeated beyond either end."""
    return [min(max(z + offset, 0), depth - 1) for offset in range(-context, context + 1)]


def slice_stack(volume: np.ndarray, z: int, context: int) -> np.ndarray:
    """Slice ``z`` of a ``(C, X, Y, Z)`` volume with ``context`` neighbours each side as channels.

    The channel order matches :func:`medrec.models.stack_slice_context` (offset-major; slices beyond
    either end repeat the edge slice). 2D images ``(C, X, Y)`` are returned as they are.
    """
    if volume.ndim == 3:
        return volume
    return np.concatenate([volume[..., k] for k in context_picks(z, volume.shape[-1], context)], axis=0)


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

