"""The ``training`` section: the optimisation loop and the finding-map models' slice sampling."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medrec.config.base import ResolvedPath, _Section
from medrec.device import DEVICE_PATTERN

IMBALANCE_METHODS: tuple[str, ...] = ("weighted_loss", "balanced_sampler", "none")


class TrainingConfig(_Section):
    """The optimisation loop.

    Attributes:
        epochs: maximum number of epochs.
        batch_size: samples per step (per process under torchrun).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length before the cosine decay (per step).
        patience: stop after this many epochs without a better validation AUC (None: never).
        selection_window: the kept weights are those of the epoch with the best trailing mean of
            the validation AUC over this many epochs (1: the best single epoch). On a small
            validation split the single best epoch is partly luck; a window prefers an epoch
            where the model has been good for a while (early stopping follows the same mean).
        imbalance: ``weighted_loss`` (class-weighted cross-entropy), ``balanced_sampler``
            (class-balanced sampling with replacement) or ``none``.
        seed: seed of initialisation, sampling and augmentation.
        num_workers: DataLoader worker processes.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision (CUDA only; bf16 where supported, else fp16 with a GradScaler).
        cache_dir: folder of the preprocessed-sample cache (default: ``RUN/cache``).
        memory_budget_gb: largest allowed size of one input batch in memory; also the most
            the preprocessed training set may take to be kept in memory between epochs.
        deterministic: ask torch for deterministic kernels.
        steps_per_epoch: finding-map models: optimiser steps per epoch (each on ``batch_size``
            slices; validation and checkpointing follow each epoch).
        foreground_fraction: finding-map models: share of the slices of a batch drawn from lesion
            slices of annotated studies (the rest from anywhere in studies whose target is known).
        mil_fraction: finding-map models: share of the slices of a batch drawn from positives
            without annotation (each at the slice holding its highest logit), trained so that
            the slice's maximum says "finding" (weighted as one annotated lesion). Off by default:
            on partly annotated CT it gave no gain over leaving those positives out (0.870 vs 0.873
            test AUC, datasets/synthetic_phantoms.md).
        lesion_weight: finding-map models: weight of lesion voxels in the voxel cross-entropy, or
            ``auto``: 1 where lesions fill as much of their slices as on the default CT phantoms
            (0.75 %), proportionally more (at most 20) where they fill less.
        mil_start: share of the epochs trained on the annotated studies alone before MIL begins.
        mil_gate: MIL draws only the positives whose highest logit exceeds this quantile of the
            highest logits of lesion-free studies (re-examined with the hard slices); 0 draws all.
        hard_fraction: finding-map models: share of the slices of a batch that are the slice
            holding the highest logit of a study with a known target (hard examples, from the
            second epoch; a third of those studies is re-examined each epoch).
        patch_size: finding-map models: train on square in-plane crops of this many voxels
            instead of whole slices (lesion draws centred near a lesion voxel, hard draws near the
            peak), or ``auto``: three times the largest annotated lesion (95th percentile) at the
            plan's spacing, at least 48 voxels, a multiple of 16. None: whole slices.
        paste_fraction: finding-map models: share of the slices of a batch that are a study with
            known target with one of the annotated training lesions pasted into tissue like its
            own surroundings (lesion copy-paste, :mod:`medrec.train.paste`).
        anomaly_fraction: ``task: anomaly``: share of the training slices given a synthetic anomaly
            (the rest are normal slices with an empty target).
        anomaly_modes: ``task: anomaly``: the synthetic alterations (``fpi``: blended with another
            normal study; ``intensity``: made brighter or darker; :mod:`medrec.transforms.anomaly`).
        anomaly_diameter_mm: ``task: anomaly``: range of the synthetic anomalies' diameters.
        anomaly_method: ``task: anomaly``: how a study departs from normal. ``synthetic``: the
            finding-map network's head, trained on the synthetic anomalies, scores each voxel;
            ``features``: the same network trained the same way, then a Gaussian of its features
            on the normal training slices, each voxel scored by its Mahalanobis distance
            (PaDiM-style, :mod:`medrec.train.feature_fit`); ``reconstruction``: an autoencoder
            (``model.name: anomaly_autoencoder``) learns to redraw normal slices, each voxel scored
            by how badly it is redrawn (the baseline).
    """

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: int = Field(1, ge=0)
    patience: int | None = Field(10, ge=1)
    selection_window: int = Field(1, ge=1)
    imbalance: Literal["weighted_loss", "balanced_sampler", "none"] = "weighted_loss"
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    device: str = Field("auto", pattern=DEVICE_PATTERN.pattern)
    amp: bool = True
    cache_dir: ResolvedPath | None = None
    memory_budget_gb: float = Field(4.0, gt=0.0)
    deterministic: bool = True
    steps_per_epoch: int = Field(100, ge=1)
    foreground_fraction: float = Field(0.33, ge=0.0, le=1.0)
    mil_fraction: float = Field(0.0, ge=0.0, le=1.0)
    lesion_weight: float | Literal["auto"] = 1.0
    mil_start: float = Field(0.5, ge=0.0, lt=1.0)
    mil_gate: float = Field(0.9, ge=0.0, le=1.0)
    hard_fraction: float = Field(0.0, ge=0.0, le=1.0)
    patch_size: int | Literal["auto"] | None = None
    paste_fraction: float = Field(0.0, ge=0.0, le=1.0)
    anomaly_fraction: float = Field(0.5, gt=0.0, le=1.0)
    anomaly_modes: tuple[Literal["fpi", "intensity"], ...] = Field(("fpi", "intensity"), min_length=1)
    anomaly_diameter_mm: tuple[float, float] = (8.0, 48.0)
    anomaly_method: Literal["synthetic", "features", "reconstruction"] = "synthetic"

    @model_validator(mode="after")
    def _fractions(self) -> TrainingConfig:
        if self.patch_size is not None and self.patch_size != "auto" and self.patch_size < 16:
            raise ValueError(f"patch_size must be at least 16 voxels, auto or null, got {self.patch_size}")
        if not 0 < self.anomaly_diameter_mm[0] <= self.anomaly_diameter_mm[1]:
            raise ValueError(f"anomaly_diameter_mm must be [low, high] with 0 < low <= high, got "
                             f"{list(self.anomaly_diameter_mm)}")
        if self.lesion_weight != "auto" and not self.lesion_weight > 0:
            raise ValueError(f"lesion_weight must be a positive number or auto, got {self.lesion_weight}")
        if self.foreground_fraction + self.mil_fraction + self.hard_fraction + self.paste_fraction > 1.0:
            raise ValueError(
                "foreground_fraction + mil_fraction + hard_fraction + paste_fraction must be <= 1, got "
                f"{self.foreground_fraction} + {self.mil_fraction} + {self.hard_fraction} + {self.paste_fraction}"
            )
        return self
