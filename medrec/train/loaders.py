"""The training batches of an epoch: their sampler and loader, and one pass over them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, WeightedRandomSampler

from medrec.config import TrainConfig
from medrec.data.dataset import CachedImageDataset, ThreadPrefetcher, die_with_parent
from medrec.determinism import derive_seed
from medrec.train.ddp import DistributedContext, DistributedWeightedSampler, all_reduce_sum


def classifier_loader(
    dataset: CachedImageDataset,
    config: TrainConfig,
    num_classes: int,
    context: DistributedContext,
    device: torch.device,
    epoch: int,
) -> DataLoader:
    """The batches of ``epoch``: balanced sampling with ``imbalance: balanced_sampler``, else a
    shuffle; sharded over torchrun processes; every draw seeded from (seed, epoch)."""
    training = config.training
    dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(derive_seed(training.seed, epoch, 1))
    labels = np.asarray(dataset.labels)
    sampler: Sampler
    if training.imbalance == "balanced_sampler":
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        weights = 1.0 / counts[labels]
        if context.enabled:
            sampler = DistributedWeightedSampler(weights, len(labels), context.rank, context.world_size, training.seed)
            sampler.set_epoch(epoch)
        else:
            sampler = WeightedRandomSampler(weights.tolist(), len(labels), replacement=True, generator=generator)
    elif context.enabled:
        sampler = DistributedSampler(
            dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=training.seed)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    return _loader(dataset, config, device, sampler=sampler,
                   generator=torch.Generator().manual_seed(derive_seed(training.seed, epoch, 2)))


def finding_loader(dataset: torch.utils.data.Dataset, config: TrainConfig, device: torch.device) -> DataLoader:
    """The batches of a finding-map epoch: its items are already drawn in order."""
    return _loader(dataset, config, device, shuffle=False)


def _loader(dataset: torch.utils.data.Dataset, config: TrainConfig, device: torch.device, **order: Any) -> DataLoader:
    """A training DataLoader: batch size and workers from the recipe, workers that die with the trainer."""
    training = config.training
    return DataLoader(
        dataset,
        batch_size=training.batch_size,
        num_workers=training.num_workers,
        worker_init_fn=die_with_parent if training.num_workers else None,
        pin_memory=device.type == "cuda",
        **order,
    )


def epoch_pass(
    loader: DataLoader,
    step: Callable[[Any], float],
    context: DistributedContext,
    on_step: Callable[[float], None],
) -> dict[str, float]:
    """Run ``step`` (one optimisation step, returning its loss) on every batch of ``loader``.

    Args:
        on_step: called after each step with the running mean loss (progress).

    Returns:
        ``train_loss`` (mean over the samples of every process), ``train_seconds`` and
        ``data_wait_seconds`` (time spent waiting for the next batch, mean over processes).
    """
    started = time.perf_counter()
    loss_sum, count, waited = 0.0, 0, 0.0
    # Without worker processes, a thread prepares the next batch (augmentation) during this step.
    prefetch = loader.num_workers == 0
    batches: Iterator = ThreadPrefetcher(loader) if prefetch else iter(loader)
    with batches if prefetch else contextlib.nullcontext():
        while True:
            wait_started = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - wait_started
            if batch is None:
                break
            loss = step(batch)
            loss_sum, count = loss_sum + loss * len(batch[1]), count + len(batch[1])
            on_step(loss_sum / max(count, 1))
    loss_sum, count, waited = all_reduce_sum(context, [loss_sum, float(count), waited])
    return {
        "train_loss": loss_sum / max(count, 1.0),
        "train_seconds": time.perf_counter() - started,
        "data_wait_seconds": waited / context.world_size,
    }
