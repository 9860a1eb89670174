from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from medrec.data.cache import SampleCache
from medrec.data.dataset import fill_cache

PLAN = "ab" * 32


class _Marker:
    """Unpickling this object would create a marker file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _cache_with_entry(tmp_path):
    cache = SampleCache(tmp_path / "cache", PLAN)
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    cache.put("s1", array, np.eye(4))
    return cache, array


def test_round_trip(tmp_path):
    cache, array = _cache_with_entry(tmp_path)
    sample = cache.get("s1")
    np.testing.assert_array_equal(sample.array, array)
    np.testing.assert_array_equal(sample.affine, np.eye(4))
    assert cache.get("other") is None
    assert SampleCache(tmp_path / "cache", "cd" * 32).get("s1") is None  # another plan never matches
    assert cache.cached_ids() == ["s1"]
    npy, record = cache.paths("s1")
    assert json.loads(record.read_text())["sha256"]
    assert not [p for p in npy.parent.iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "shape", "record"])
def test_damaged_entry_is_a_miss_and_is_rebuilt(tmp_path, damage):
    cache, array = _cache_with_entry(tmp_path)
    npy, record = cache.paths("s1")
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:-7])
    elif damage == "flip":
        data = bytearray(npy.read_bytes())
        data[-3] ^= 0xFF
        npy.write_bytes(bytes(data))
    elif damage == "shape":
        info = json.loads(record.read_text())
        info["shape"] = [1, 2, 3, 5]
        record.write_text(json.dumps(info))
    else:
        record.write_text("{not json")
    assert cache.get("s1") is None
    calls = []

    def transform(row):
        calls.append(row["sample_id"])
        return {"image": array}

    fill_cache([{"sample_id": "s1"}], transform, cache)
    assert calls == ["s1"]
    np.testing.assert_array_equal(cache.get("s1").array, array)


def test_pickle_payload_as_cache_file_is_refused(tmp_path):
    cache, array = _cache_with_entry(tmp_path)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Marker(str(marker)))
    npy, record = cache.paths("s1")
    npy.write_bytes(payload)
    # even with a record that matches the payload's checksum and size, it is never unpickled
    info = json.loads(record.read_text())
    import hashlib

    info.update(nbytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    record.write_text(json.dumps(info))
    assert cache.get("s1") is None
    # an object-dtype .npy (pickled inside) is refused too
    with open(npy, "wb") as handle:
        np.save(handle, np.array([_Marker(str(marker))], dtype=object), allow_pickle=True)
    payload = npy.read_bytes()
    info.update(nbytes=len(payload), sha256=hashlib.sha256(payload).hexdigest(), dtype="object", shape=[1])
    record.write_text(json.dumps(info))
    assert cache.get("s1") is None
    assert not marker.exists()
    fill_cache([{"sample_id": "s1"}], lambda row: {"image": array}, cache)
    np.testing.assert_array_equal(cache.get("s1").array, array)
    assert not marker.exists()


def test_odd_sample_ids_stay_inside_the_cache(tmp_path):
    cache = SampleCache(tmp_path / "cache", PLAN)
    cache.put("../../escape", np.zeros((1, 2), np.float32))
    assert all(p.parent == tmp_path / "cache" for p in (tmp_path / "cache").iterdir())
    assert cache.get("../../escape") is not None
    assert not any(name.startswith("escape") for name in os.listdir(tmp_path))


def test_failed_samples_are_named(tmp_path):
    from medrec.errors import InputError

    cache = SampleCache(tmp_path / "cache", PLAN)

    def transform(row):
        if row["sample_id"] == "bad":
            raise ValueError("cannot decode")
        return {"image": np.ones((1, 2, 2), np.float32)}

    with pytest.raises(InputError, match="bad: ValueError: cannot decode"):
        fill_cache([{"sample_id": "ok"}, {"sample_id": "bad"}], transform, cache)
    assert cache.get("ok") is not None


def _ones(row):
    return {"image": np.full((1, 3, 3), float(len(row["sample_id"])), np.float32)}


def test_fill_cache_with_worker_processes(tmp_path):
    cache = SampleCache(tmp_path / "cache", PLAN)
    rows = [{"sample_id": f"s{i}"} for i in range(4)]
    computed = fill_cache(rows, _ones, cache, num_workers=2)
    assert sorted(computed) == ["s0", "s1", "s2", "s3"]
    assert sorted(cache.cached_ids()) == ["s0", "s1", "s2", "s3"]
    assert fill_cache(rows, _ones, cache, num_workers=2) == {}  # all cached: nothing recomputed
