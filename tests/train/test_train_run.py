"""End-to-end training on a synthetic CT cohort: quality, run directory, load_run, test-split isolation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from medrec.config import load_config
from medrec.data.cache import SampleCache
from medrec.errors import OutputError
from medrec.manifest import read_manifest
from medrec.rundir import load_run
from medrec.train import train

pytestmark = pytest.mark.slow

RUN_FILES = ("config.yaml", "plan.json", "splits.csv", "manifest.csv", "qc.csv", "model.safetensors", "model.json",
             "metrics.jsonl", "train.log", "val_predictions.csv", "checkpoint_last.safetensors", "checkpoint_last.json")


@pytest.fixture(scope="module")
def trained(ct_manifest, train_config, tmp_path_factory):
    """One trained run shared by the tests below, with every sample that reached a dataset recorded."""
    import medrec.data.dataset as dataset_module

    seen: set[str] = set()
    preprocessed: set[str] = set()
    original_get = dataset_module.CachedImageDataset.__getitem__
    original_pre = dataset_module.PreprocessDataset.__getitem__

    def spy_get(self, index):
        seen.add(self.sample_ids[index])
        return original_get(self, index)

    def spy_pre(self, index):
        preprocessed.add(self.rows[index]["sample_id"])
        return original_pre(self, index)

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dataset_module.CachedImageDataset, "__getitem__", spy_get)
        patch.setattr(dataset_module.PreprocessDataset, "__getitem__", spy_pre)
        torch.set_num_threads(1)
        result = train(train_config(ct_manifest), run_dir, show_progress=False)
    return {"result": result, "run_dir": run_dir, "seen": seen, "preprocessed": preprocessed}


def test_reaches_validation_auc(trained):
    result = trained["result"]
    assert result.complete
    assert result.val_metrics["auc"] >= 0.85, result.val_metrics


def test_run_directory_is_complete(trained):
    run_dir, result = trained["run_dir"], trained["result"]
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob("*.pt")) and not list(run_dir.glob("*.pkl")) and not list(run_dir.glob("*.tmp"))
    info = json.loads((run_dir / "model.json").read_text())
    assert info["architecture"]["name"] == "cnn_small" and info["architecture"]["num_classes"] == 2
    assert info["classes"] == ["0", "1"] and info["positive_class"] == "1"
    threshold = info["threshold"]
    assert threshold["chosen_on"] == "validation" and threshold["method"] == "youden"
    assert 0.0 <= threshold["value"] <= 1.0
    assert {"val_sensitivity", "val_specificity"} <= set(threshold)
    calibration = info["calibration"]
    assert calibration["method"] == "temperature" and calibration["temperature"] > 0
    assert calibration["val_nll_after"] <= calibration["val_nll_before"] + 1e-12
    assert {"medrec", "torch", "monai", "numpy", "pydicom"} <= set(info["versions"])
    assert info["data_fingerprint"]["n_test"] > 0 and len(info["data_fingerprint"]["samples_sha256"]) == 64
    assert info["plan"]["input_size"] and info["seed"] == 0
    assert info["best_epoch"] == result.best_epoch
    # metrics: one line per epoch with the promised keys
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == list(range(1, result.epochs_completed + 1))
    assert {"epoch", "train_loss", "val_loss", "val_auc", "lr", "seconds", "data_wait_fraction"} <= set(lines[0])
    # resolved config: absolute paths, loadable again
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["data"]["splits"] == str(run_dir / "splits.csv")
    assert load_config(run_dir / "config.yaml").training.seed == 0
    # the log holds no patient ids
    log = (run_dir / "train.log").read_text()
    patients = pd.read_csv(run_dir / "manifest.csv", dtype=str)["patient_id"]
    assert not any(patient in log for patient in patients)


def test_test_split_never_reaches_training(trained):
    run_dir = trained["run_dir"]
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str)
    test_ids = set(splits.loc[splits["split"] == "test", "sample_id"])
    used_ids = set(splits.loc[splits["split"] != "test", "sample_id"])
    assert test_ids
    assert trained["seen"] and not trained["seen"] & test_ids
    assert trained["preprocessed"] == used_ids
    plan_hash = json.loads((run_dir / "plan.json").read_text())["plan_hash"]
    assert not set(SampleCache(run_dir / "cache", plan_hash).cached_ids()) & test_ids
    val = pd.read_csv(run_dir / "val_predictions.csv", dtype={"sample_id": str})
    assert set(val["sample_id"]) == set(splits.loc[splits["split"] == "val", "sample_id"])


def test_load_run_reproduces_in_memory_predictions(trained):
    run_dir = trained["run_dir"]
    run = load_run(run_dir)
    info = run.info
    assert run.classes == ("0", "1") and run.threshold == info.threshold_value
    val = pd.read_csv(run_dir / "val_predictions.csv", dtype={"sample_id": str})
    cache = SampleCache(run_dir / "cache", info.plan_hash)
    batch = torch.from_numpy(np.stack([cache.get(s).array for s in val["sample_id"]]))
    probabilities = run.predict(batch).numpy()
    np.testing.assert_allclose(probabilities[:, run.positive_index], val["score"].to_numpy(), rtol=1e-5, atol=1e-6)
    # the run's own deterministic transforms rebuild the cached tensor from the manifest row
    manifest = read_manifest(run_dir / "manifest.csv")
    row = manifest[manifest["sample_id"] == val["sample_id"].iloc[0]].iloc[0].to_dict()
    rebuilt = run.deterministic_transforms()(row)["image"]
    np.testing.assert_allclose(np.asarray(rebuilt), batch[0].numpy(), atol=1e-6)
    decisions = run.decide(probabilities)
    assert set(decisions) <= {"0", "1"}


def test_rerun_into_complete_run_is_refused(trained, ct_manifest, train_config):
    with pytest.raises(OutputError, match="already holds a complete run"):
        train(train_config(ct_manifest), trained["run_dir"], show_progress=False)
    again = train(train_config(ct_manifest), trained["run_dir"], resume=True, show_progress=False)
    assert again.complete and again.best_epoch == trained["result"].best_epoch
    assert not math.isnan(again.val_metrics["auc"])
