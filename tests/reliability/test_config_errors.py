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


def _workflow(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


WORKFLOW = """\
name: typo
data:
  scans: scans
preprocessing:
  preset: ct
  ct_window: {window}
model:
  name: cnn_small
  kwargs:
    {kwarg}: [8, 16]
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (WORKFLOW.format(window="abdomn", kwarg="channels"),
         "'preprocessing.ct_window': unknown CT window 'abdomn'; allowed: auto, abdomen, liver, lung, mediastinum, "
         "brain, bone or [lower, upper] in HU"),
        (WORKFLOW.format(window="abdomen", kwarg="chanels"),
         "unknown key 'model.kwargs.chanels' (did you mean 'channels'?); cnn_small accepts: channels, "
         "convs_per_block, dropout, norm"),
        (WORKFLOW.format(window="abdomen", kwarg="channels").replace("  preset: ct", "  preset: [ct"),
         "not valid YAML at line 6, column 12:"),
    ],
    ids=["markup-in-message", "model-kwarg-typo", "yaml-syntax"],
)
def test_bad_workflow_is_one_plain_line_naming_the_problem(tmp_path: Path, run_cli, text: str, expected: str) -> None:
    (tmp_path / "scans").mkdir()
    recipe = _workflow(tmp_path, text)
    code, output = run_cli(["run", recipe, "-o", tmp_path / "run"])
    assert code != 0
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith(f"error: {recipe}"), output
    assert expected in lines[0], output
    assert "<unicode string>" not in output
    assert not (tmp_path / "run").exists()
