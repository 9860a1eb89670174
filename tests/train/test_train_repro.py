"""Same seed -> same weights; a run stopped after epoch 1 and resumed ends where an uninterrupted one does."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from medrec.checkpoint import load_checkpoint
from medrec.errors import ConfigError, OutputError
from medrec.train import train

pytestmark = pytest.mark.slow

TINY = {
    "preprocessing": {"voxel_budget": 16 * 16 * 12, "augment": True},
    "model": {"kwargs": {"channels": [4, 8], "dropout": 0.2}},
    "training": {"epochs": 3, "batch_size": 6, "patience": None},
}


def _tiny(make_config, manifest, cache_dir, **training):
    sections = {key: dict(value) for key, value in TINY.items()}
    sections["training"].update(cache_dir=str(cache_dir), **training)
    return make_config(manifest, **sections)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _last_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint_last")["model"]


@pytest.fixture(scope="module")
def reference(ct_manifest, train_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    torch.set_num_threads(1)
    config = _tiny(train_config, ct_manifest, root / "cache")
    train(config, root / "a", show_progress=False)
    return {
        "root": root,
        "config": config,
        "run": root / "a",
        "make": lambda **training: _tiny(train_config, ct_manifest, root / "cache", **training),
    }


def test_same_seed_gives_identical_weights(reference):
    root, config = reference["root"], reference["config"]
    train(config, root / "b", show_progress=False)
    assert _digest(root / "a" / "model.safetensors") == _digest(root / "b" / "model.safetensors")
    for key, value in _last_weights(root / "a").items():
        assert torch.equal(value, _last_weights(root / "b")[key]), key
    other_seed = reference["make"](seed=1)
    train(other_seed, root / "seed1", show_progress=False)
    assert _digest(root / "a" / "model.safetensors") != _digest(root / "seed1" / "model.safetensors")
    a = [json.loads(x) for x in (root / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (root / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["train_loss"] for x in a] == [x["train_loss"] for x in b]


def test_resume_after_epoch_one_matches_uninterrupted(reference):
    root, config = reference["root"], reference["config"]
    partial = train(config, root / "c", interrupt_after_epoch=1, show_progress=False)
    assert not partial.complete and partial.epochs_completed == 1
    assert not (root / "c" / "model.json").exists()
    with pytest.raises(OutputError, match="--resume"):
        train(config, root / "c", show_progress=False)
    resumed = train(config, root / "c", resume=True, show_progress=False)
    assert resumed.complete and resumed.epochs_completed == 3
    assert _digest(root / "a" / "model.safetensors") == _digest(root / "c" / "model.safetensors")
    for key, value in _last_weights(root / "a").items():
        assert torch.equal(value, _last_weights(root / "c")[key]), key
    lines = [json.loads(x)["epoch"] for x in (root / "c" / "metrics.jsonl").read_text().splitlines()]
    assert lines == [1, 2, 3]
    a = json.loads((root / "a" / "model.json").read_text())
    c = json.loads((root / "c" / "model.json").read_text())
    assert a["threshold"] == c["threshold"] and a["calibration"] == c["calibration"]


def test_resume_with_changed_config_is_refused(reference):
    root = reference["root"]
    train(reference["config"], root / "d", interrupt_after_epoch=1, show_progress=False)
    changed = reference["make"](lr=0.01)
    with pytest.raises(ConfigError, match="training.lr"):
        train(changed, root / "d", resume=True, show_progress=False)
