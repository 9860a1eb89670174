"""Preprocessed samples: the no-pickle cache, the datasets served from it, and the preprocessing dataset
that training and scoring share."""

from __future__ import annotations

from medrec.data.cache import CachedSample, SampleCache
from medrec.data.dataset import (
    CachedImageDataset,
    PreprocessDataset,
    SampleStore,
    ThreadPrefetcher,
    failure_reason,
    fill_cache,
)

__all__ = [
    "CachedImageDataset",
    "CachedSample",
    "PreprocessDataset",
    "SampleCache",
    "SampleStore",
    "ThreadPrefetcher",
    "failure_reason",
    "fill_cache",
]
