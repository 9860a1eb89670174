"""Item 7: 'medrec train' rejects a bad recipe before any work starts, naming the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

BASE = {
    "data": {"manifest": "manifest.csv"},
    "preprocessing": {"preset": "ct", "input_size": [16, 16, 8], "mode": "3d"},
    "model": {"name": "cnn_small"},
    "training": {"epochs": 1, "batch_size": 2, "lr": 0.001},
}


def _recipe(tmp_path: Path, change) -> Path:
    recipe = yaml.safe_load(yaml.safe_dump(BASE))
    change(recipe)
    (tmp_path / "manifest.csv").write_text("sample_id,patient_id\n", encoding="utf-8")
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def _unknown_key(r: dict) -> None:
    r["trainig"] = {"epochs": 3}


def _negative_lr(r: dict) -> None:
    r["training"]["lr"] = -0.01


def _huge_input(r: dict) -> None:
    r["preprocessing"]["input_size"] = [4096, 4096, 4096]
    r["training"]["memory_budget_gb"] = 1.0


@pytest.mark.parametrize(
    ("change", "key"),
    [(_unknown_key, "trainig"), (_negative_lr, "training.lr"), (_huge_input, "memory_budget_gb")],
    ids=["unknown-key", "negative-lr", "input-over-budget"],
)
def test_bad_recipe_fails_before_work(tmp_path: Path, run_cli, change, key: str) -> None:
    config = _recipe(tmp_path, change)
    out = tmp_path / "run"
    code, output = run_cli(["train", config, "-o", out])
    assert code != 0
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert key in lines[0], output
    if key == "memory_budget_gb":
        assert "preprocessing.input_size" in lines[0], output
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
