"""Training data: the no-pickle preprocessed-sample cache and the datasets served from it."""

from __future__ import annotations

from medrec.data.cache import CachedSample, SampleCache
from medrec.data.dataset import CachedImageDataset, SampleStore, ThreadPrefetcher, fill_cache

__all__ = ["CachedImageDataset", "CachedSample", "SampleCache", "SampleStore", "ThreadPrefetcher", "fill_cache"]
