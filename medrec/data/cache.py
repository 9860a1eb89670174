"""A cache of preprocessed samples: one ``.npy`` + one ``.json`` per sample, never a pickle.

Why not MONAI's ``PersistentDataset``: it stores items with ``torch.save`` and reads them back
with an unpickler, so a planted cache file could run code. Here an entry is a plain ``.npy``
array (read with ``allow_pickle=False``) and a JSON record with its shape, dtype, sha256, the
plan hash and the sample id. Entries are keyed by sample id + plan hash, so a new plan never
reads old tensors. Anything that does not check out (missing, truncated, flipped byte, wrong
shape, pickle payload) is treated as a miss and rebuilt; reading a cache never raises.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrec.atomicio import write_bytes, write_text

logger = logging.getLogger("medrec.data.cache")

CACHE_FORMAT = "medrec-sample-cache-2"  # 2: radiographs cache their patient-space affine
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class CachedSample:
    """A cached preprocessed image and the geometry needed to rebuild a MetaTensor."""

    array: np.ndarray
    affine: np.ndarray | None


class SampleCache:
    """Preprocessed tensors on disk, keyed by ``sample_id`` and the preprocessing plan's hash.

    Args:
        root: the cache folder (created on first write).
        plan_hash: hex digest of the preprocessing plan; part of every key.
    """

    def __init__(self, root: str | Path, plan_hash: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{8,128}", plan_hash):
            raise ValueError(f"plan_hash must be a hex digest, got {plan_hash!r}")
        self.root = Path(root)
        self.plan_hash = plan_hash

    def _stem(self, sample_id: str) -> Path:
        # Sample ids are short hashes; anything else is hashed so a file name never leaves root.
        name = sample_id if _SAFE_NAME.match(sample_id) else hashlib.sha256(sample_id.encode()).hexdigest()[:32]
        return self.root / f"{name}-{self.plan_hash[:16]}"

    def paths(self, sample_id: str) -> tuple[Path, Path]:
        """The ``(.npy, .json)`` paths of a sample's entry."""
        stem = self._stem(sample_id)
        return stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".json")

    def get(self, sample_id: str) -> CachedSample | None:
        """The cached sample, or None when absent or invalid (an invalid entry is logged, to be rebuilt)."""
        array_path, record_path = self.paths(sample_id)
        if not record_path.is_file() or not array_path.is_file():
            return None
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            data = array_path.read_bytes()
            problem = self._check_record(record, sample_id, data)
            if problem is None:
                array = np.load(io.BytesIO(data), allow_pickle=False)
                if list(array.shape) != record["shape"] or str(array.dtype) != record["dtype"]:
                    problem = (f"array is {array.dtype}{list(array.shape)}, "
                               f"record says {record['dtype']}{record['shape']}")
        except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
            problem = f"{type(e).__name__}: {e}"
        if problem is not None:
            logger.warning("cache entry %s is invalid (%s); rebuilding it", array_path.name, problem)
            return None
        affine = record.get("affine")
        return CachedSample(array=array, affine=None if affine is None else np.asarray(affine, dtype=np.float64))

    def _check_record(self, record: object, sample_id: str, data: bytes) -> str | None:
        if not isinstance(record, dict) or record.get("format") != CACHE_FORMAT:
            return "not a medrec cache record"
        if record.get("sample_id") != sample_id or record.get("plan_hash") != self.plan_hash:
            return "record belongs to another sample or plan"
        if record.get("nbytes") != len(data):
            return f"file has {len(data)} bytes, record says {record.get('nbytes')}"
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            return "checksum mismatch"
        return None

    def put(self, sample_id: str, array: np.ndarray, affine: np.ndarray | None = None) -> None:
        """Store a sample: the ``.npy`` first, then the ``.json`` that makes it valid (both atomic)."""
        values = np.ascontiguousarray(array)
        if values.dtype == object:
            raise ValueError(f"sample {sample_id}: refusing to cache an object array")
        buffer = io.BytesIO()
        np.save(buffer, values, allow_pickle=False)
        data = buffer.getvalue()
        array_path, record_path = self.paths(sample_id)
        write_bytes(array_path, data)
        record = {
            "format": CACHE_FORMAT,
            "sample_id": sample_id,
            "plan_hash": self.plan_hash,
            "shape": list(values.shape),
            "dtype": str(values.dtype),
            "nbytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "affine": None if affine is None else np.asarray(affine, dtype=np.float64).tolist(),
        }
        write_text(record_path, json.dumps(record) + "\n")

    def cached_ids(self) -> list[str]:
        """Sample ids that have a record for this plan (validity is checked by :meth:`get`)."""
        ids = []
        for record_path in sorted(self.root.glob(f"*-{self.plan_hash[:16]}.json")):
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and isinstance(record.get("sample_id"), str):
                ids.append(record["sample_id"])
        return ids
