"""What a finding-map model trains on: its lesion annotations, voxel targets and slice items.

:class:`FindingTraining` is built once from the training split; each epoch it hands out the slice
items for that epoch, after re-examining hard slices and label-only positives with the current
model where the recipe asks for them (:mod:`medrec.train.slices`, :mod:`medrec.train.findings`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from medrec.config import TrainConfig
from medrec.data.dataset import SampleStore
from medrec.errors import AnnotationError, ConfigError
from medrec.planning import Plan
from medrec.train.findings import finding_loss, gated_top_slices, top_slice_scores
from medrec.train.inputs import TrainingData
from medrec.train.slices import FindingSliceDataset
from medrec.train.targets import FindingTargets, build_targets, mask_function, positive_checker

# training.patch_size auto: crops of PATCH_LESIONS times the largest annotated lesion, at least PATCH_MIN voxels.
PATCH_LESIONS = 3
PATCH_MIN = 48

Log = Callable[[str], None]


def read_training_annotations(config: TrainConfig, data: TrainingData, log: Log) -> Any:
    """The lesion annotations a finding-map model learns from (every rank reads them).

    Raises:
        ConfigError: the recipe gives neither ``data.lesions`` nor ``data.masks``.
    """
    from medrec.annotations import read_annotations

    if config.data.lesions is None and config.data.masks is None:
        raise ConfigError(
            f"model {config.model.name} learns where findings are: give lesion annotations "
            "(data.lesions: a lesion table, or data.masks: a CSV with a mask column)"
        )
    annotations = read_annotations(
        data.rows, lesions=config.data.lesions, masks=config.data.masks,
        label_positive=lambda label: str(label) == str(data.space.positive_class),
    )
    log(annotations.summary())
    return annotations


def training_lesion_diameters(annotations: Any, train_ids: list[str]) -> tuple[list[float], int]:
    """Diameters (mm) of the training split's annotated lesions, and how many came from masks.

    Lesion-table rows give their diameters; each connected component of a training mask counts
    as a lesion of its equivalent-sphere diameter. An unreadable mask is skipped here (its
    problem is recorded when the targets are built).
    """
    from medrec.annotations import mask_lesion_diameters

    train = set(train_ids)
    diameters = [lesion.diameter_mm for sample_id, lesions in annotations.lesions.items()
                 if sample_id in train for lesion in lesions]
    from_masks = 0
    for sample_id, path in annotations.masks.items():
        if sample_id in train and path is not None and sample_id in annotations.positives:
            try:
                found = mask_lesion_diameters(path)
            except AnnotationError:
                continue
            diameters.extend(found)
            from_masks += len(found)
    return diameters, from_masks


def finding_size(diameters: list[float], from_masks: int) -> tuple[float | None, str]:
    """The smallest annotated lesion of the training split (5th percentile of diameters), for the plan."""
    if not diameters:
        return None, ""
    size = round(float(np.percentile(diameters, 5)), 2)
    masked = f", {from_masks} of them mask components" if from_masks else ""
    return size, f"5th percentile of {len(diameters)} annotated training lesions{masked}"


def patch_size(config: TrainConfig, plan: Plan, diameters: list[float], log: Log) -> int | None:
    """The in-plane size of the training crops (``training.patch_size``, ``auto`` resolved)."""
    setting = config.training.patch_size
    if setting != "auto":
        if setting is not None:
            log(f"training crops: {setting} voxels in-plane (training.patch_size)")
        return setting
    spacing = min(float(value) for value in plan.spacing[:2])
    largest = float(np.percentile(diameters, 95)) if diameters else 0.0
    size = max(PATCH_MIN, int(math.ceil(PATCH_LESIONS * largest / spacing / 16.0)) * 16)
    log(f"training crops: {size} voxels in-plane (auto: {PATCH_LESIONS} x the largest annotated "
        f"lesion, 95th percentile {largest:.1f} mm, at {spacing:g} mm; at least {PATCH_MIN})")
    return size


class FindingTraining:
    """The voxel targets and slice items of a finding-map run, and their per-epoch refresh.

    Args:
        config: the recipe.
        data: the run's labelled samples and splits.
        plan: the preprocessing plan.
        store: the preprocessed training samples.
        annotations: from :func:`read_training_annotations`.
        diameters: from :func:`training_lesion_diameters`.
        context: 2.5D neighbours each side (0 for 2D inputs).
        rank: this process's rank.
        log: the run's log.
    """

    def __init__(self, config: TrainConfig, data: TrainingData, plan: Plan, store: SampleStore, annotations: Any,
                 diameters: list[float], context: int, rank: int, log: Log) -> None:
        self.config, self.log = config, log
        is_positive = positive_checker(data.labels, data.space.positive_class)
        self.targets: FindingTargets = build_targets(store, data.parts["train"], is_positive,
                                                     mask_function(annotations))
        log(self.targets.summary())
        training = config.training
        crop = patch_size(config, plan, diameters, log)
        self.dataset = FindingSliceDataset(
            store, self.targets, context, training.steps_per_epoch * training.batch_size,
            training.foreground_fraction, training.seed, rank=rank, flips=plan.augment is not None,
            mil_fraction=training.mil_fraction if self.targets.label_only else 0.0,
            hard_fraction=training.hard_fraction, patch_size=crop, paste_fraction=training.paste_fraction,
        )
        if training.paste_fraction > 0:
            log(f"lesion copy-paste: {len(self.dataset.pieces)} annotated lesions cut out, "
                f"{training.paste_fraction:.0%} of the items are a study with one of them pasted in")
        self.lesion_weight, why = self.targets.lesion_weight(training.lesion_weight, crop)
        log(f"lesion voxels weighted {self.lesion_weight:g} in the loss ({why})")
        # A label-only top slice counts as a slice with an annotated lesion of the cohort's size.
        self.mil_weight = round(self.targets.lesion_fraction(crop) * self.lesion_weight, 6)
        if self.targets.label_only and training.mil_fraction > 0:
            log(f"MIL term weighted {self.mil_weight:g} (the share of its slice an annotated lesion takes, "
                "times the lesion weight)")
        self._top_slices_epoch = 0
        self._hard_slices_epoch = 0

    def loss(self, logits: torch.Tensor, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch of slice items (:func:`~medrec.train.findings.finding_loss`)."""
        return finding_loss(logits, targets, self.lesion_weight, self.mil_weight)

    def finish(self, model: torch.nn.Module, log: Log) -> bool:
        """Nothing is fitted after the epochs of annotated training (the weights stay as kept)."""
        return False

    def epoch_items(self, epoch: int, model: torch.nn.Module) -> FindingSliceDataset:
        """The slice items of ``epoch``, after re-examining hard slices and label-only positives
        with the current ``model`` where the recipe asks for them (from the second epoch on)."""
        config = self.config.training
        dataset, targets = self.dataset, self.targets
        dataset.set_epoch(epoch)
        label_only = targets.label_only
        mil_start = max(2, int(config.mil_start * config.epochs) + 1)
        mil = bool(label_only) and config.mil_fraction > 0 and epoch >= mil_start and epoch != self._top_slices_epoch
        negatives = set(targets.negatives)
        refreshed: dict[str, Any] = {}
        if (config.hard_fraction > 0 or mil) and epoch >= 2 and epoch != self._hard_slices_epoch:
            refresh = dataset.hard_refresh(epoch)
            if config.hard_fraction == 0:  # only MIL's gate needs them: the lesion-free studies
                refresh = [s for s in refresh if s in negatives]
            refreshed = top_slice_scores(model, dataset.store, refresh)
            if config.hard_fraction > 0:
                dataset.set_hard_slices(refreshed)
                self.log(f"epoch {epoch}: hard slices of {len(refresh)} studies re-examined")
            self._hard_slices_epoch = epoch
        if mil:
            lesion_free = [top.score for s, top in refreshed.items() if s in negatives]
            chosen = gated_top_slices(top_slice_scores(model, dataset.store, label_only), lesion_free, config.mil_gate)
            dataset.set_top_slices(chosen)
            self._top_slices_epoch = epoch
            self.log(f"epoch {epoch}: MIL on the top slices of {len(chosen)} of {len(label_only)} positives without "
                     f"annotation (those above the {config.mil_gate:g} quantile of {len(lesion_free)} lesion-free "
                     "studies' highest logits)")
        return dataset
