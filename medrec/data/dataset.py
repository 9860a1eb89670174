"""Datasets for training: preprocess each sample once into the cache, then serve cached tensors.

The deterministic preprocessing (loading, resampling, intensity windowing, cropping) of each
sample runs once, possibly in DataLoader worker processes, and lands in the
:class:`~medrec.data.cache.SampleCache`. Every epoch then reads only cached tensors (kept in
memory when they fit the budget) and applies the random augmentation on top, seeded by
(seed, epoch, sample index) so that an epoch is the same whatever the worker layout.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch.utils.data import DataLoader, Dataset

from medrec.data.cache import CachedSample, SampleCache
from medrec.determinism import derive_seed
from medrec.errors import InputError, MedrecError
from medrec.transforms.presets import patient_affine, planar_affine

logger = logging.getLogger("medrec.data")

IMAGE_KEY = "image"


# Longest failure reason kept (the predictions CSV's error column, training's error message).
MAX_REASON_CHARS = 400


# MONAI's apply_transform re-raises every failure as RuntimeError(f"applying transform {transform}")
# from the original error; the transform's default repr carries a memory address.
_MONAI_WRAPPER_PREFIX = "applying transform "
_OBJECT_REPR = re.compile(r"^<(?:[\w.]*\.)?(\w+) object at 0x[0-9a-fA-F]+>$")


def failure_reason(error: BaseException, limit: int = MAX_REASON_CHARS) -> str:
    """A one-line reason for a sample that failed to load or preprocess.

    MONAI wraps exceptions raised inside transforms in ``RuntimeError("applying transform <X object
    at 0x...>")``, once per nested ``Compose``. The medrec error that caused it (named file, reason,
    fix) is the useful message, so the cause chain is searched for it first; otherwise the wrappers
    are unwrapped to the original error, named with the innermost transform's class
    (``AntiAliasd failed: RuntimeError: ...``). Whitespace is collapsed and the text cut at ``limit``.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    transform = ""
    cause: BaseException = error
    text = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MedrecError):
            text = str(current)
            break
        if _is_monai_wrapper(current):
            transform = _transform_name(str(current)[len(_MONAI_WRAPPER_PREFIX):])
        elif cause is error or _is_monai_wrapper(cause):
            cause = current
        current = current.__cause__ or current.__context__
    if not text:
        text = f"{type(cause).__name__}: {cause}"
        if transform and transform != "Compose":
            text = f"{transform} failed: {text}"
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _is_monai_wrapper(error: BaseException) -> bool:
    return type(error) is RuntimeError and str(error).startswith(_MONAI_WRAPPER_PREFIX) and error.__cause__ is not None


def _transform_name(described: str) -> str:
    """``Spacingd`` from ``<monai...dictionary.Spacingd object at 0x7f...>``; a custom repr as it is."""
    match = _OBJECT_REPR.match(described.strip())
    return match.group(1) if match else described.strip()


class PreprocessDataset(Dataset):
    """Manifest rows -> preprocessed float32 tensors; a failing sample gives an error marker, not an exception.

    Used to fill the training cache and to score: one bad file never stops a DataLoader worker.
    Each item is ``{"index", "sample_id", "image", "affine", "error"}``: ``image`` is a plain
    float32 tensor (None on failure), ``affine`` the float64 array of the transformed image (or None),
    ``error`` the :func:`failure_reason` ('' on success).

    Args:
        rows: manifest rows as plain dicts (the fields ``LoadSampled`` reads, and ``sample_id``).
        transform: the deterministic transforms (dict in, dict with ``key`` out).
        key: the image key of the transform chain.
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], transform: Callable, key: str = IMAGE_KEY) -> None:
        self.rows = [dict(row) for row in rows]
        self.transform = transform
        self.key = key

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        item = {"index": index, "sample_id": str(row.get("sample_id", "")), "image": None, "affine": None, "error": ""}
        try:
            data = self.transform(dict(row))
            image = data[self.key] if isinstance(data, Mapping) else data
            affine = patient_affine(image)
            tensor = torch.as_tensor(image).detach().cpu().as_subclass(torch.Tensor).to(torch.float32, copy=True)
            if not torch.isfinite(tensor).all():
                raise ValueError("preprocessed image holds NaN or infinite values")
        except Exception as e:  # noqa: BLE001 - one bad sample is reported by id, with its reason
            item["error"] = failure_reason(e)
            return item
        item["image"] = tensor
        item["affine"] = affine
        return item


def _keep_as_is(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def die_with_parent(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: a worker process is killed when its parent dies (Linux).

    Without it, workers of a parent killed by SIGKILL keep running until they notice (seconds),
    holding memory and open files. ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; elsewhere a no-op.
    """
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)


def fill_cache(
    rows: Sequence[Mapping[str, Any]],
    transform: Callable,
    cache: SampleCache,
    num_workers: int = 0,
    on_sample: Callable[[str], None] | None = None,
) -> dict[str, CachedSample]:
    """Preprocess every row not validly cached yet and store it.

    Args:
        rows: manifest rows (dicts with ``sample_id`` and the fields the loader reads).
        transform: the plan's deterministic transforms (dict in, dict with ``image`` out).
        cache: where tensors go.
        num_workers: DataLoader worker processes for loading / preprocessing.
        on_sample: called with each sample id when it is done (progress).

    Returns:
        The newly computed samples by id (callers may keep them instead of reading them back).

    Raises:
        InputError: some samples could not be loaded or preprocessed (ids and reasons listed).
    """
    missing = []
    for row in rows:
        if cache.get(str(row["sample_id"])) is None:
            missing.append(row)
        elif on_sample is not None:
            on_sample(str(row["sample_id"]))
    computed: dict[str, CachedSample] = {}
    if not missing:
        return computed
    loader = DataLoader(
        PreprocessDataset(missing, transform),
        batch_size=1,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_keep_as_is,
        worker_init_fn=die_with_parent if num_workers else None,
    )
    failures: list[str] = []
    for batch in loader:
        for item in batch:
            if item["error"]:
                failures.append(f"{item['sample_id']}: {item['error']}")
            else:
                array = item["image"].numpy()
                cache.put(item["sample_id"], array, item["affine"])
                computed[item["sample_id"]] = CachedSample(array, item["affine"])
            if on_sample is not None:
                on_sample(item["sample_id"])
    if failures:
        shown = "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
        raise InputError(
            f"{len(failures)} sample(s) could not be preprocessed: {shown}. "
            "Fix or remove these rows of the manifest (or re-run 'medrec index')"
        )
    return computed


class SampleStore:
    """Cached preprocessed samples by id: in memory when they fit, else read from the cache on use.

    Args:
        cache: the sample cache (already filled).
        sample_ids: the ids this store serves.
        memory_budget_bytes: keep arrays in memory when their total size is at most this.
        preloaded: arrays already in hand (from :func:`fill_cache`), used instead of re-reading.
    """

    def __init__(
        self,
        cache: SampleCache,
        sample_ids: Sequence[str],
        memory_budget_bytes: float,
        preloaded: Mapping[str, CachedSample] | None = None,
    ) -> None:
        self.cache = cache
        self.sample_ids = list(sample_ids)
        self.in_memory: dict[str, CachedSample] | None = {}
        used = 0.0
        for sample_id in self.sample_ids:
            sample = (preloaded or {}).get(sample_id) or self._read(sample_id)
            used += sample.array.nbytes
            if used > memory_budget_bytes:
                logger.info("preprocessed samples exceed the memory budget; reading them from the cache each epoch")
                self.in_memory = None
                break
            self.in_memory[sample_id] = sample

    def _read(self, sample_id: str) -> CachedSample:
        sample = self.cache.get(sample_id)
        if sample is None:
            raise InputError(
                f"cache entry of sample {sample_id} under {self.cache.root} vanished or was damaged during "
                "training; run again (it will be rebuilt)"
            )
        return sample

    def get(self, sample_id: str) -> CachedSample:
        if self.in_memory is not None:
            return self.in_memory[sample_id]
        return self._read(sample_id)


class CachedImageDataset(Dataset):
    """``(image, label_index, position)`` items from a :class:`SampleStore`, optionally augmented.

    Args:
        store: the preprocessed samples.
        sample_ids: the samples, in a fixed order.
        labels: class index of each sample.
        augment: the plan's random transforms (a MONAI Compose) or None.
        seed: base seed of the augmentation.
    """

    def __init__(
        self,
        store: SampleStore,
        sample_ids: Sequence[str],
        labels: Sequence[int],
        augment: Callable | None = None,
        seed: int = 0,
    ) -> None:
        if len(sample_ids) != len(labels):
            raise ValueError("sample_ids and labels differ in length")
        self.store = store
        self.sample_ids = list(sample_ids)
        self.labels = [int(label) for label in labels]
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        sample = self.store.get(self.sample_ids[index])
        image = torch.from_numpy(np.array(sample.array, dtype=np.float32, copy=True))
        if self.augment is not None:
            affine = None if sample.affine is None else torch.as_tensor(sample.affine)
            if affine is not None and image.ndim == 3:  # 2D: MONAI's 2D transforms read the planar affine
                affine = planar_affine(affine)
            meta_image = MetaTensor(image, affine=affine)
            # Seeded per (seed, epoch, sample): the same draws whichever worker runs the sample.
            if hasattr(self.augment, "set_random_state"):
                self.augment.set_random_state(seed=derive_seed(self.seed, self.epoch, index) % 2**32)
            output = self.augment({IMAGE_KEY: meta_image})
            augmented = output[IMAGE_KEY] if isinstance(output, Mapping) else output
            image = torch.as_tensor(augmented).as_subclass(torch.Tensor).float().contiguous()
        return image, self.labels[index], index


class ThreadPrefetcher:
    """Iterate ``batches`` in a background thread, keeping up to ``depth`` items ready.

    Why: with ``num_workers=0`` the next batch (cache read, augmentation, collation) would be
    made between two optimisation steps, and the model would wait for it. torch and numpy kernels
    release the GIL, so a thread can prepare batch n+1 while the main thread trains on batch n,
    without worker processes (no start-up per epoch, no copy of the in-memory cache). The order
    of the items is the iterable's own, so a seeded epoch yields the same batches.

    An exception raised while producing is re-raised by ``__next__``; :meth:`close` (also on
    leaving a ``with`` block) stops the producer and waits for it.

    Args:
        batches: any iterable (a DataLoader with ``num_workers=0``).
        depth: items kept ready at most.
    """

    _ITEM, _END, _ERROR = 0, 1, 2

    def __init__(self, batches: Iterable[Any], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(batches,), name="medrec-prefetch", daemon=True)
        self._thread.start()

    def _put(self, entry: tuple[int, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, batches: Iterable[Any]) -> None:
        try:
            for item in batches:
                if not self._put((self._ITEM, item)):
                    return
            self._put((self._END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put((self._ERROR, e))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == self._ITEM:
            return value
        self._done = True
        self._thread.join()
        if kind == self._ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the producer (dropping prepared items) and wait for its thread to end."""
        self._done = True
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> ThreadPrefetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
