"""Patient-clustered bootstrap weights: which clusters each replicate draws, in reproducible blocks.

Each replicate draws clusters (patients) with replacement, within outcome strata, and gives every
sample its cluster's draw count as weight. The weights depend only on the seed (never on the block
size or the number of threads), so blocks can be drawn and evaluated side by side (:func:`_map_blocks`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from medrec.report.stats.inputs import _cluster_codes


def _cluster_strata(codes: np.ndarray, n_clusters: int, labels: np.ndarray | None,
                    stratify: bool) -> np.ndarray:
    """Stratum per cluster: 1 if the cluster holds any positive, else 0 (all 0 without stratify)."""
    if not stratify or labels is None:
        return np.zeros(n_clusters, dtype=np.int64)
    labels = np.asarray(labels)
    if labels.ndim == 1 and np.isin(labels, (0, 1)).all():
        any_positive = np.zeros(n_clusters, dtype=bool)
        any_positive[codes[labels == 1]] = True
        return any_positive.astype(np.int64)
    # Multi-class: stratum = the set of classes a cluster holds.
    classes, label_codes = np.unique(labels, return_inverse=True)
    membership = np.zeros((n_clusters, classes.size), dtype=bool)
    membership[codes, label_codes.reshape(-1)] = True
    _, strata = np.unique(membership, axis=0, return_inverse=True)
    return strata.reshape(-1)


def _default_chunk(n_boot: int, width: int) -> int:
    # About 12 million entries per (replicates x width) block (~50 MB per int32 array, ~100 MB per
    # float64 one): large enough that per-block overheads vanish, small enough to bound memory.
    return int(max(1, min(n_boot, 12_000_000 // max(width, 1))))


def _prepare_clusters(clusters: np.ndarray | Sequence | None, labels: np.ndarray | None, n_samples: int,
                      stratify: bool) -> tuple[np.ndarray, int, np.ndarray]:
    """Cluster index per sample, number of clusters and stratum per cluster.

    Clusters are numbered stratum by stratum, so that each stratum is a contiguous range of columns
    of the weight matrix.
    """
    codes, n_clusters = _cluster_codes(clusters, n_samples)
    strata = _cluster_strata(codes, n_clusters, labels, stratify)
    order = np.argsort(strata, kind="stable")
    renumber = np.empty(n_clusters, dtype=np.int64)
    renumber[order] = np.arange(n_clusters)
    return renumber[codes], n_clusters, strata[order]


# Replicates per random stream: replicates [16 b, 16 b + 16) come from the b-th child of
# SeedSequence(seed). Chunks are whole multiples of it, so the weights depend only on the seed (never
# on the chunk size or the threads), and chunks can be drawn in any order, in parallel.
_DRAW_BLOCK = 16


def _weight_makers(strata: np.ndarray, n_boot: int, seed: int, chunk: int) -> Iterator[Callable[[], np.ndarray]]:
    """Yield, in replicate order, functions that each draw one (rows, n_clusters) int32 weight block.

    ``strata`` must be sorted (see :func:`_prepare_clusters`). Within each stratum of k clusters,
    every replicate draws k clusters with replacement (uniformly: multinomial(k, 1/k) counts).
    Every ``_DRAW_BLOCK`` replicates have their own random stream, spawned from ``seed``; per
    stratum, the block's draws are one ``rng.integers`` call of shape (block, k), counted row by row
    with ``bincount``. ``chunk`` is rounded up to a multiple of the block.
    """
    n_clusters = strata.size
    values, starts = np.unique(strata, return_index=True)
    bounds = [(int(a), int(b)) for a, b in zip(starts, [*starts[1:], n_clusters], strict=True)]
    streams = np.random.SeedSequence(seed).spawn(-(-n_boot // _DRAW_BLOCK))
    chunk = -(-max(int(chunk), 1) // _DRAW_BLOCK) * _DRAW_BLOCK

    def make(first: int, rows: int) -> np.ndarray:
        weights = np.empty((rows, n_clusters), dtype=np.int32)
        for block_first in range(0, rows, _DRAW_BLOCK):
            rng = np.random.default_rng(streams[(first + block_first) // _DRAW_BLOCK])
            block = min(_DRAW_BLOCK, rows - block_first)
            for start, stop in bounds:
                k = stop - start
                draws = rng.integers(0, k, size=(block, k))
                for row, drawn in enumerate(draws, start=block_first):  # a per-row count array stays in cache
                    weights[row, start:stop] = np.bincount(drawn, minlength=k)
        return weights

    for first in range(0, n_boot, chunk):
        yield lambda first=first: make(first, min(chunk, n_boot - first))


def _weight_chunks(strata: np.ndarray, n_boot: int, seed: int, chunk: int) -> Iterator[np.ndarray]:
    """Yield the (rows, n_clusters) int32 weight blocks of :func:`_weight_makers`, in order."""
    for make in _weight_makers(strata, n_boot, seed, chunk):
        yield make()


# Threads that draw and evaluate weight blocks side by side (numpy releases the GIL in the random
# draws, take, cumsum, einsum and matrix products).
BOOTSTRAP_THREADS = 2


def _map_blocks(func: Callable[[np.ndarray], Any], makers: Iterator[Callable[[], np.ndarray]]) -> list[Any]:
    """``[func(make()) for make in makers]``, in up to :data:`BOOTSTRAP_THREADS` threads.

    At most one block per thread plus one more is in flight, so memory stays bounded; results keep
    the order of the blocks and do not depend on the number of threads.
    """
    workers = max(1, min(BOOTSTRAP_THREADS, os.cpu_count() or 1))
    if workers == 1:
        return [func(make()) for make in makers]
    results: list[Any] = []
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for make in makers:
            pending.append(pool.submit(lambda make=make: func(make())))
            if len(pending) > workers:
                results.append(pending.popleft().result())
        results.extend(future.result() for future in pending)
    return results


def bootstrap_cluster_weights(clusters: np.ndarray | Sequence | None, labels: np.ndarray | None = None,
                              n_boot: int = 2000, seed: int = 0,
                              stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The cluster weight matrix that :func:`cluster_bootstrap` uses, in one piece (for small data).

    Returns:
        ``(codes, weights)``: ``codes[i]`` is sample i's cluster index; ``weights`` is
        (n_boot, n_clusters) int32 draw counts; sample i's weight in replicate r is ``weights[r, codes[i]]``.
    """
    n_samples = len(labels) if labels is not None else len(clusters)  # type: ignore[arg-type]
    codes, n_clusters, strata = _prepare_clusters(clusters, labels, n_samples, stratify)
    chunk = _default_chunk(n_boot, n_samples)
    return codes, np.vstack(list(_weight_chunks(strata, n_boot, seed, chunk)))
