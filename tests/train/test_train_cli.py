"""``medrec train`` on the command line: multi-class labels, refusal to overwrite, torchrun with 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from medrec.cli import app

pytestmark = pytest.mark.slow


def _recipe(folder, manifest, **training) -> str:
    recipe = {
        "data": {"manifest": os.path.relpath(manifest, folder)},
        "split": {"val": 0.3, "test": 0.2, "check_pixels": False},
        "preprocessing": {"preset": "ct", "voxel_budget": 16 * 16 * 12, "augment": False},
        "model": {"name": "cnn_small", "kwargs": {"channels": [4, 8]}},
        "training": {"epochs": 2, "batch_size": 4, "device": "cpu", **training},
    }
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.fixture(scope="module")
def multiclass_manifest(ct_manifest, tmp_path_factory):
    """The CT manifest relabelled by lesion type: none / hypodense / hyperdense."""
    labels = pd.read_csv(ct_manifest.parent.parent / "scans" / "labels.csv", dtype=str)
    manifest = pd.read_csv(ct_manifest, dtype=str, keep_default_na=False)
    manifest["label"] = manifest["patient_id"].map(dict(zip(labels["patient_id"], labels["lesion_type"], strict=True)))
    path = tmp_path_factory.mktemp("multiclass") / "manifest.csv"
    manifest.to_csv(path, index=False)
    return path


def test_cli_multiclass_run_and_refusal(multiclass_manifest, tmp_path):
    recipe = _recipe(tmp_path, multiclass_manifest)
    run_dir = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["train", recipe, "-o", str(run_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    info = json.loads((run_dir / "model.json").read_text())
    assert info["classes"] == ["hyperdense", "hypodense", "none"]
    assert info["task"] == "multiclass" and info["positive_class"] is None
    assert info["threshold"]["method"] == "argmax" and info["threshold"]["value"] is None
    val = pd.read_csv(run_dir / "val_predictions.csv")
    assert {"score_hyperdense", "score_hypodense", "score_none"} <= set(val.columns)
    assert "multi-class" in (run_dir / "train.log").read_text()

    from medrec.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["train", recipe, "-o", str(run_dir)])
    assert stop.value.code == 1


def test_torchrun_two_processes_write_one_run(ct_manifest, tmp_path):
    recipe = _recipe(tmp_path, ct_manifest, imbalance="balanced_sampler")
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "medrec", "train", recipe, "-o", str(run_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((run_dir / "model.json").read_text())
    assert info["world_size"] == 2
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert (run_dir / "train.log").read_text().count("medrec train: starting") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "train.yaml"]
