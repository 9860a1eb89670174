"""Anomaly detection from normal studies only (``task: anomaly``).

The finding-map network (:mod:`medrec.models.findings`) is trained on the *negative* training
studies alone: a share of its slices get a synthetic anomaly (:mod:`medrec.transforms.anomaly`),
whose per-voxel blend factor is the target, and the rest are normal slices with an empty target.
The study score is, as for annotated training, the highest voxel logit, so whatever departs most
from normal anywhere in a study decides it. Labelled positives are never read in training; they
serve validation (epoch choice, calibration, threshold) and test, so the report still measures
detection of real findings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrec.config import TrainConfig
from medrec.data.dataset import CachedImageDataset, SampleStore
from medrec.determinism import derive_seed
from medrec.errors import ConfigError
from medrec.planning import Plan
from medrec.train.feature_fit import fit_normal_reference
from medrec.train.findings import finding_loss
from medrec.train.inputs import TrainingData
from medrec.train.slices import context_picks
from medrec.train.targets import MAX_LESION_WEIGHT, REFERENCE_LESION_FRACTION
from medrec.transforms.anomaly import SyntheticAnomaly

# derive_seed stream of the synthetic validation copies (apart from the training draws).
VALIDATION_STREAM = 7919

# Items drawn to measure the share of anomalous voxels (for ``lesion_weight: auto``).
WEIGHT_PROBE_ITEMS = 64


def _slab(volume: np.ndarray, z: int, context: int) -> np.ndarray:
    """Slices ``z - context .. z + context`` of ``(C, X, Y, Z)`` as a ``(C, X, Y, 2 context + 1)`` volume
    (beyond either end the edge slice repeats); a 2D ``(C, X, Y)`` image is returned as it is."""
    if volume.ndim == 3:
        return np.asarray(volume, dtype=np.float32)
    return np.asarray(volume[..., context_picks(z, volume.shape[-1], context)], dtype=np.float32)


def _as_channels(slab: np.ndarray) -> np.ndarray:
    """A slab's slices as channels, offset-major (the order of :func:`medrec.train.slices.slice_stack`)."""
    if slab.ndim == 3:
        return slab
    return np.concatenate([slab[..., k] for k in range(slab.shape[-1])], axis=0)


class AnomalySliceDataset(Dataset):
    """``(slice_stack, target, position)`` items from normal studies, a share with a synthetic anomaly.

    Draws are seeded by (seed, epoch, rank, position), as for annotated training.

    Args:
        store: the preprocessed samples.
        normal_ids: the normal training studies (the only ones read).
        context: 2.5D neighbours each side (0 for 2D images).
        length: items per epoch on this process.
        anomaly: the synthetic-anomaly transform (its own draws are reseeded per item).
        anomaly_fraction: share of items given an anomaly.
        seed: base seed.
        rank: this process's rank.
        flips: random in-plane flips.
    """

    def __init__(self, store: SampleStore, normal_ids: Sequence[str], context: int, length: int,
                 anomaly: SyntheticAnomaly, anomaly_fraction: float, seed: int, rank: int = 0,
                 flips: bool = True) -> None:
        if not normal_ids:
            raise ConfigError("task: anomaly: the training split holds no normal study to learn from")
        self.store, self.normal_ids, self.context, self.length = store, list(normal_ids), context, length
        self.anomaly, self.anomaly_fraction = anomaly, anomaly_fraction
        self.seed, self.rank, self.flips = seed, rank, flips
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _draw(self, rng: np.random.Generator, exclude: str | None = None) -> tuple[str, np.ndarray]:
        choices = [s for s in self.normal_ids if s != exclude] or self.normal_ids
        sample_id = choices[rng.integers(len(choices))]
        volume = self.store.get(sample_id).array
        z = int(rng.integers(volume.shape[-1])) if volume.ndim == 4 else 0
        return sample_id, _slab(volume, z, self.context)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        rng = np.random.default_rng(derive_seed(self.seed, self.epoch, self.rank, index))
        sample_id, slab = self._draw(rng)
        if rng.random() < self.anomaly_fraction:
            _, source = self._draw(rng, exclude=sample_id)
            self.anomaly.set_random_state(seed=int(rng.integers(2**31)))
            slab, target_slab = self.anomaly(slab, source)
            target = target_slab[..., self.context] if slab.ndim == 4 else target_slab
        else:
            target = np.zeros((1, *slab.shape[1:3]), dtype=np.float32)
        image = _as_channels(slab)
        if self.flips:
            for axis in (1, 2):
                if rng.random() < 0.5:
                    image, target = np.flip(image, axis), np.flip(target, axis)
        return (torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)), index)


class SyntheticValidation(Dataset):
    """Validation of an anomaly run whose validation split holds no labelled positive.

    Items ``0 .. n-1`` are the normal validation studies as they are (with their own labels),
    items ``n .. 2n-1`` the same studies each with one synthetic anomaly (class ``positive_index``;
    FPI from another validation study of the same shape, else an intensity change). Every copy is
    drawn from its own fixed seed, so every epoch is judged on the same studies; the copies are
    made when read, not kept.

    Args:
        base: the normal validation studies (``(image, label, position)`` items, no augmentation).
        anomaly: the synthetic-anomaly transform (reseeded per copy).
        positive_index: the class index of the altered copies.
        seed: base seed of the copies.
    """

    def __init__(self, base: CachedImageDataset, anomaly: SyntheticAnomaly, positive_index: int, seed: int) -> None:
        self.base, self.anomaly, self.seed = base, anomaly, seed
        self.store, self.sample_ids = base.store, base.sample_ids
        self.labels = [*base.labels, *[positive_index] * len(base)]

    def __len__(self) -> int:
        return 2 * len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        count = len(self.base)
        if index < count:
            return self.base[index]
        position = index - count
        rng = np.random.default_rng(derive_seed(self.seed, VALIDATION_STREAM, position))
        image = np.asarray(self.store.get(self.sample_ids[position]).array, dtype=np.float32)
        others = [i for i in range(count) if i != position]
        source = np.asarray(self.store.get(self.sample_ids[others[rng.integers(len(others))]]).array,
                            dtype=np.float32) if others else None
        self.anomaly.set_random_state(seed=int(rng.integers(2**31)))
        altered, _ = self.anomaly(image, source if source is not None and source.shape == image.shape else None)
        return torch.from_numpy(altered), self.labels[index], index


class AnomalyTraining:
    """The slice items of an anomaly run (the counterpart of :class:`~medrec.train.finding_setup.FindingTraining`).

    Args:
        config: the recipe (``task: anomaly``).
        data: the run's samples (its training split holds negatives only, see :mod:`medrec.train.inputs`).
        plan: the preprocessing plan (its spacing turns the anomaly sizes into voxels).
        store: the preprocessed samples.
        context: 2.5D neighbours each side (0 for 2D inputs).
        rank: this process's rank.
        log: the run's log.
    """

    def __init__(self, config: TrainConfig, data: TrainingData, plan: Plan, store: SampleStore, context: int,
                 rank: int, log: Callable[[str], None]) -> None:
        training = config.training
        anomaly = SyntheticAnomaly(modes=training.anomaly_modes, diameter_mm=training.anomaly_diameter_mm,
                                   spacing=[float(s) for s in plan.spacing])
        self._validation_anomaly = SyntheticAnomaly(
            modes=training.anomaly_modes, diameter_mm=training.anomaly_diameter_mm,
            spacing=[float(s) for s in plan.spacing])
        self.method, self.store, self.normal_ids = training.anomaly_method, store, list(data.parts["train"])
        reconstruction = self.method == "reconstruction"
        self.dataset = AnomalySliceDataset(
            store, data.parts["train"], context, training.steps_per_epoch * training.batch_size, anomaly,
            0.0 if reconstruction else training.anomaly_fraction, training.seed, rank=rank,
            flips=plan.augment is not None)
        self.mil_weight = 1.0
        if reconstruction:
            self.lesion_weight = 1.0
            log("reconstruction: the autoencoder learns to redraw the normal training slices (mean squared error)")
            return
        self.lesion_weight, why = self._weight(training.lesion_weight)
        log(f"synthetic anomalies ({', '.join(training.anomaly_modes)}, "
            f"{training.anomaly_diameter_mm[0]:g}-{training.anomaly_diameter_mm[1]:g} mm) on "
            f"{training.anomaly_fraction:.0%} of the slices; anomalous voxels weighted {self.lesion_weight:g} ({why})"
            + ("; afterwards the voxels are scored by a Gaussian of the network's features"
               if self.method == "features" else ""))

    def _weight(self, setting: float | str) -> tuple[float, str]:
        if setting != "auto":
            return float(setting), "training.lesion_weight"
        probe = [self.dataset[i][1] for i in range(min(WEIGHT_PROBE_ITEMS, len(self.dataset)))]
        altered = [float((target > 0).float().mean()) for target in probe if bool((target > 0).any())]
        fraction = float(np.mean(altered)) if altered else REFERENCE_LESION_FRACTION
        weight = float(np.clip(REFERENCE_LESION_FRACTION / max(fraction, 1e-9), 1.0, MAX_LESION_WEIGHT))
        return round(weight, 2), (f"auto: synthetic anomalies are {fraction:.2%} of their slices, "
                                  f"{REFERENCE_LESION_FRACTION:.2%} is the reference")

    def loss(self, output: torch.Tensor, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch: the reconstruction error, or the finding-map loss on the synthetic
        anomalies' targets."""
        if self.method == "reconstruction":
            return F.mse_loss(output.float(), images.float())
        return finding_loss(output, targets, self.lesion_weight, self.mil_weight)

    def finish(self, model: torch.nn.Module, log: Callable[[str], None]) -> bool:
        """After the epochs, on the best weights: fit the normal reference of ``features`` and
        ``reconstruction`` (:mod:`medrec.train.feature_fit`); returns whether the weights changed."""
        if self.method == "synthetic":
            return False
        fit_normal_reference(model, self.method, self.store, self.normal_ids, self.dataset.seed, log)
        return True

    def validation(self, base: CachedImageDataset, positive_index: int) -> SyntheticValidation:
        """The validation items when the validation split holds no labelled positive."""
        return SyntheticValidation(base, self._validation_anomaly, positive_index, self.dataset.seed)

    def epoch_items(self, epoch: int, model: torch.nn.Module) -> AnomalySliceDataset:
        """The slice items of ``epoch`` (the model is not consulted)."""
        self.dataset.set_epoch(epoch)
        return self.dataset
