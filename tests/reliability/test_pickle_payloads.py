"""Item 3: pickle payloads planted where medrec reads weights or cache entries never execute."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medrec.errors import MedrecError


class _Payload:
    """Unpickling this writes the marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps({"weight": _Payload(marker)}, protocol=2)


def _torch_zip_bytes(marker: Path) -> bytes:
    # Same layout as torch.save: a zip archive whose data.pkl holds the payload.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", _pickle_bytes(marker))
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def _fake_run(run_dir: Path, weights: bytes) -> Path:
    run_dir.mkdir(parents=True)
    info = {
        "format": "medrec-run-1",
        "architecture": {"name": "resnet10", "spatial_dims": 3, "in_channels": 1, "num_classes": 1, "kwargs": {}},
        "classes": ["negative", "positive"],
        "plan": {},
        "weights": {"file": "model.safetensors"},
        "threshold": {"value": 0.5, "source": "validation"},
    }
    (run_dir / "model.json").write_text(json.dumps(info), encoding="utf-8")
    (run_dir / "config.yaml").write_text("model:\n  name: resnet10\n", encoding="utf-8")
    (run_dir / "model.safetensors").write_bytes(weights)
    return run_dir


@pytest.mark.parametrize("make_bytes", [_pickle_bytes, _torch_zip_bytes], ids=["pickle", "torch-zip"])
def test_load_run_refuses_pickle_weights(tmp_path: Path, make_bytes) -> None:
    from medrec.rundir import load_run

    marker = tmp_path / "PWNED"
    run_dir = _fake_run(tmp_path / "run", make_bytes(marker))
    with pytest.raises(MedrecError) as info:
        load_run(run_dir)
    assert "model.safetensors" in str(info.value)
    assert not marker.exists()


def test_score_cli_refuses_pickle_weights(tmp_path: Path, run_cli, ct_series) -> None:
    marker = tmp_path / "PWNED"
    run_dir = _fake_run(tmp_path / "run", _pickle_bytes(marker))
    scans = tmp_path / "scans"
    ct_series(scans / "p1", slices=3)
    code, output = run_cli(["score", run_dir, scans, "-o", tmp_path / "pred.csv"])
    assert code != 0
    assert "Traceback" not in output
    assert "model.safetensors" in output and "refused" in output, output
    assert not marker.exists()


def test_cache_entry_with_pickle_payload_is_a_miss(tmp_path: Path) -> None:
    from medrec.data.cache import SampleCache

    marker = tmp_path / "PWNED"
    cache = SampleCache(tmp_path / "cache", plan_hash="0123456789abcdef")
    cache.put("s1", np.zeros((2, 3), dtype=np.float32))
    assert cache.get("s1") is not None
    array_path, record_path = cache.paths("s1")

    # An object array saved with pickle, then the record rewritten to match it exactly.
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    data = buffer.getvalue()
    array_path.write_bytes(data)
    import hashlib

    record = json.loads(record_path.read_text(encoding="utf-8"))
    record.update(shape=[1], dtype="object", nbytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    record_path.write_text(json.dumps(record), encoding="utf-8")
    assert cache.get("s1") is None
    assert not marker.exists()

    # A raw pickle in place of the .npy.
    data = _pickle_bytes(marker)
    array_path.write_bytes(data)
    record.update(nbytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    record_path.write_text(json.dumps(record), encoding="utf-8")
    assert cache.get("s1") is None
    assert not marker.exists()


def test_cache_sample_id_cannot_address_outside_root(tmp_path: Path) -> None:
    from medrec.data.cache import SampleCache

    root = tmp_path / "cache"
    cache = SampleCache(root, plan_hash="0123456789abcdef")
    for sample_id in ("../../escape", "/etc/passwd", "a/../../b", "..", "x\\..\\y"):
        for path in cache.paths(sample_id):
            assert path.resolve().parent == root.resolve(), (sample_id, path)
    cache.put("../../escape", np.ones(3, dtype=np.float32))
    assert all(p.resolve().is_relative_to(root.resolve()) for p in tmp_path.rglob("*") if p.is_file())
    assert os.listdir(tmp_path) == ["cache"]
