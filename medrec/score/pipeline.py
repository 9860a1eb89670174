"""Decoding and preprocessing in worker processes, overlapped with batched inference.

A torch ``DataLoader`` runs the run's deterministic transforms in ``num_workers`` processes with a
bounded prefetch. A sample that fails to load or preprocess never reaches the model and never
kills a worker: :class:`medrec.data.dataset.PreprocessDataset` catches the error and returns a marker that
:func:`collate_scoring` routes to the error list of the batch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from medrec.data.dataset import PreprocessDataset, die_with_parent


@dataclass
class ScoringBatch:
    """One collated batch: the good samples stacked per shape, the failures with their reasons."""

    indices: list[int] = field(default_factory=list)
    images: list[torch.Tensor] = field(default_factory=list)
    affines: list[np.ndarray | None] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)

    def stacks(self) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Positions (into ``indices``) and a stacked tensor for each group of equal shape."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for position, image in enumerate(self.images):
            by_shape.setdefault(tuple(image.shape), []).append(position)
        for positions in by_shape.values():
            yield positions, torch.stack([self.images[p] for p in positions])

    def pin_memory(self) -> ScoringBatch:
        """Called by the DataLoader's pin-memory thread when ``pin_memory=True``."""
        self.images = [image.pin_memory() for image in self.images]
        return self


def collate_scoring(items: Sequence[Mapping[str, Any]]) -> ScoringBatch:
    """Route error markers to ``failed``; keep good samples (stacked later per shape)."""
    batch = ScoringBatch()
    for item in items:
        if item["image"] is None:
            batch.failed.append((item["index"], item["error"]))
        else:
            batch.indices.append(item["index"])
            batch.images.append(item["image"])
            batch.affines.append(item["affine"])
    return batch


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers() -> int:
    """Loader processes ``medrec score`` uses when ``--workers`` is not given: one per core, at most 4.

    Decoding and preprocessing a series costs far more CPU than the forward pass of the models
    medrec trains on CPU (a 128 x 128 x 45 CT series: ~280 ms to decode and preprocess, ~5 ms of
    ``cnn_small`` in a batch of 8), so the main process mostly waits and every core is better
    spent loading; with one core, load in the main process.
    """
    cores = usable_cores()
    return 0 if cores < 2 else min(4, cores)


@contextlib.contextmanager
def threads_beside_workers(workers: int) -> Iterator[None]:
    """Limit this process's torch intra-op threads to the cores the loader processes leave free.

    Worker processes run single-threaded; a main process that also starts one OpenMP thread per
    core oversubscribes the machine, and OpenMP threads spinning for a core slow small kernels
    down many times over. The previous setting is restored on exit.
    """
    previous = torch.get_num_threads()
    wanted = max(1, min(previous, usable_cores() - workers)) if workers > 0 else previous
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _as_list(items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return list(items)


def iterate_batches(
    dataset: PreprocessDataset, batch_size: int, workers: int, pin_memory: bool = False, prefetch: int = 2
) -> Iterator[ScoringBatch]:
    """Batches of ``dataset`` in order, loaded by ``workers`` processes (0: in this process).

    Workers load single samples (handed out in turn) and the batches are assembled here, so that
    the work is spread evenly even when there are fewer batches than workers, and the first
    batch is ready after ``batch_size / workers`` loads instead of ``batch_size``.

    Args:
        dataset: the samples to load.
        batch_size: samples per batch.
        workers: worker processes; each keeps at most ``prefetch`` batches' worth of samples ready.
        pin_memory: pin host memory (for fast copies to a CUDA device).
        prefetch: batches prefetched per worker.
    """
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs["prefetch_factor"] = max(1, prefetch * batch_size)
    loader = DataLoader(
        dataset,
        batch_size=1,
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_list,
        worker_init_fn=die_with_parent if workers else None,
        **kwargs,
    )
    with threads_beside_workers(workers):
        pending: list[Mapping[str, Any]] = []
        for items in loader:
            pending.extend(items)
            if len(pending) >= batch_size:
                batch = collate_scoring(pending)
                pending = []
                yield batch.pin_memory() if pin_memory else batch
        if pending:
            batch = collate_scoring(pending)
            yield batch.pin_memory() if pin_memory else batch
