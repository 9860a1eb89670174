from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch

from medrec.checkpoint import load_checkpoint, save_checkpoint, save_weights
from medrec.determinism import capture_rng_state, restore_rng_state
from medrec.errors import ModelError
from medrec.models import create_model
from medrec.rundir import MODEL_JSON, MODEL_WEIGHTS, RUN_FORMAT, load_run


class _Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_round_trip_restores_optimizer_exactly(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    state = {
        "epoch": 3,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
    }
    save_checkpoint(tmp_path / "checkpoint_last", state)
    assert (tmp_path / "checkpoint_last.safetensors").read_bytes()[8:9] == b"{"
    loaded = load_checkpoint(tmp_path / "checkpoint_last")

    clone = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    clone.load_state_dict(loaded["model"])
    clone_optimizer = torch.optim.AdamW(clone.parameters(), lr=0.01)
    clone_optimizer.load_state_dict(loaded["optimizer"])
    inputs = torch.randn(5, 4)
    for net, opt in ((model, optimizer), (clone, clone_optimizer)):
        opt.zero_grad()
        net(inputs).sum().backward()
        opt.step()
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(a, b)
    assert loaded["epoch"] == 3 and loaded["scheduler"]["last_epoch"] == 3


def test_damaged_checkpoint_pair_is_detected(tmp_path):
    save_checkpoint(tmp_path / "ck", {"w": torch.ones(3)})
    save_checkpoint(tmp_path / "other", {"w": torch.zeros(3)})
    (tmp_path / "ck.safetensors").write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(ModelError, match="checksum"):
        load_checkpoint(tmp_path / "ck")


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    tensors, scalars = capture_rng_state()
    json.dumps(scalars)  # json-able, no pickle needed
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(tensors, scalars)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def _fake_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = create_model("cnn_small", 3, 1, 2, channels=(4, 8))
    digest = save_weights(run / MODEL_WEIGHTS, model.state_dict())
    plan = {"preset": "ct", "spatial_dims": 3, "mode": "3d", "spacing": [2.0, 2.0, 2.0], "input_size": [16, 16, 16]}
    info = {
        "format": RUN_FORMAT,
        "architecture": {"name": "cnn_small", "spatial_dims": 3, "in_channels": 1, "num_classes": 2,
                         "kwargs": {"channels": [4, 8]}},
        "weights": {"file": MODEL_WEIGHTS, "sha256": digest},
        "plan": plan,
        "classes": ["abnormal", "normal"],
        "positive_class": "abnormal",
        "threshold": {"value": 0.4, "method": "youden", "chosen_on": "validation"},
        "calibration": {"method": "temperature", "temperature": 2.0},
    }
    (run / MODEL_JSON).write_text(json.dumps(info))
    return run, model


def test_load_run_predicts_calibrated_probabilities(tmp_path):
    run_dir, model = _fake_run(tmp_path)
    run = load_run(run_dir)
    assert run.classes == ("abnormal", "normal") and run.positive_index == 0 and run.threshold == 0.4
    batch = torch.randn(2, 1, 16, 16, 16)
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(batch).double() / 2.0, dim=1).float()
    torch.testing.assert_close(run.predict(batch), expected)
    assert run.decide(np.array([[0.5, 0.5], [0.1, 0.9]])) == ["abnormal", "normal"]


def test_pickle_in_place_of_model_safetensors_is_refused(tmp_path):
    run_dir, _ = _fake_run(tmp_path)
    marker = tmp_path / "pwned"
    (run_dir / MODEL_WEIGHTS).write_bytes(pickle.dumps(_Marker(str(marker))))
    with pytest.raises(ModelError, match="refused.*only safetensors"):
        load_run(run_dir)
    torch.save({"x": _Marker(str(marker))}, run_dir / MODEL_WEIGHTS)  # torch zip format
    with pytest.raises(ModelError, match="refused.*only safetensors"):
        load_run(run_dir)
    assert not marker.exists()


def test_load_run_refuses_pt_file(tmp_path):
    run_dir, model = _fake_run(tmp_path)
    (run_dir / MODEL_WEIGHTS).unlink()
    torch.save(model.state_dict(), run_dir / "model.pt")
    with pytest.raises(ModelError, match=r"model\.pt: refused.*only safetensors"):
        load_run(run_dir)


def test_load_run_detects_replaced_weights(tmp_path):
    run_dir, _ = _fake_run(tmp_path)
    torch.manual_seed(5)
    save_weights(run_dir / MODEL_WEIGHTS, create_model("cnn_small", 3, 1, 2, channels=(4, 8)).state_dict())
    with pytest.raises(ModelError, match="sha256 differs"):
        load_run(run_dir)


def test_load_run_on_incomplete_folder(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_run(tmp_path / "missing")
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ModelError, match="not complete"):
        load_run(tmp_path)
