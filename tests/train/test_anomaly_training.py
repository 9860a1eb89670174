"""``task: anomaly``: a finding-map model trained on normal studies only finds large, bright tumors.

Easy on purpose (30-45 mm MR tumors with strong rim enhancement, low noise): the test is about the
method working end to end on any machine. On five cohort seeds this set-up scored held-out AUC
0.86-0.99 after 360 steps (20 held-out studies); the test asks 0.75.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medrec.config import parse_config
from medrec.data.cache import SampleCache
from medrec.errors import ConfigError
from medrec.runinfo import read_run_info
from medrec.train import train
from medrec.train.anomaly import AnomalySliceDataset

pytestmark = pytest.mark.slow


def _config(root: Path, **overrides: Any) -> Any:
    recipe: dict[str, Any] = {
        "task": "anomaly",
        "data": {"manifest": str(root / "index" / "manifest.csv")},
        "split": {"val": 0.25, "test": 0.25, "seed": 0, "check_pixels": False},
        "preprocessing": {"preset": "mr", "augment": True},
        "model": {"name": "finding_fcn"},
        "training": {"epochs": 12, "steps_per_epoch": 30, "batch_size": 16, "lr": 0.002, "patience": None,
                     "lesion_weight": "auto", "anomaly_diameter_mm": [24, 48], "device": "cpu", "seed": 0},
    }
    recipe.update(overrides)
    return parse_config(recipe)


@pytest.fixture(scope="module")
def anomaly_run(tmp_path_factory) -> dict[str, Any]:
    """An anomaly run on 40 MR patients (half with a tumor), with the ids its training items read."""
    import torch

    from medrec.index import index_folder
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("anomaly")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = generate_cohort(root / "scans", kind="mri-tumor", patients=40, fmt="nifti", seed=2, image_size=48,
                                 slice_thickness=6.0, follow_up_fraction=0.0, lesion_diameter_mm=(30.0, 45.0),
                                 contrast=(0.8, 1.2), noise=0.6)
        index_folder(root / "scans", root / "index", labels=cohort.labels_csv, show_progress=False)
    read: set[str] = set()
    draw = AnomalySliceDataset._draw

    def recording_draw(self, rng, exclude=None):
        sample_id, slab = draw(self, rng, exclude)
        read.add(sample_id)
        return sample_id, slab

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(AnomalySliceDataset, "_draw", recording_draw)
            train(_config(root), root / "run", show_progress=False)
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "run": root / "run", "read": read}


def test_normal_only_training_never_reads_a_positive(anomaly_run):
    run = anomaly_run["run"]
    splits = pd.read_csv(run / "splits.csv", dtype=str)
    manifest = pd.read_csv(anomaly_run["root"] / "index" / "manifest.csv", dtype=str, keep_default_na=False)
    label = dict(zip(manifest["sample_id"], manifest["label"], strict=True))
    train_ids = set(splits.loc[splits["split"] == "train", "sample_id"])
    positives = {s for s in train_ids if label[s] == "1"}
    normal = train_ids - positives
    assert positives and normal, "the fixture's training split should hold both classes"
    assert anomaly_run["read"] == normal  # every normal training study, nothing else
    cached = set(SampleCache(run / "cache", read_run_info(run).plan_hash).cached_ids())
    assert normal <= cached and not cached & positives, "a positive of the training split was preprocessed"
    log = (run / "train.log").read_text()
    assert f"its {len(positives)} positives are not read" in log and "synthetic anomalies" in log


@pytest.fixture(scope="module")
def held_out_predictions(anomaly_run, tmp_path_factory) -> Path:
    """The run's validation and test studies scored through the CLI."""
    from medrec.cli import main

    run, folder = anomaly_run["run"], tmp_path_factory.mktemp("anomaly_scored")
    splits = pd.read_csv(run / "splits.csv", dtype=str)
    manifest = pd.read_csv(anomaly_run["root"] / "index" / "manifest.csv", dtype=str, keep_default_na=False)
    held_out = manifest[manifest["sample_id"].isin(splits.loc[splits["split"] != "train", "sample_id"])]
    held_out.to_csv(folder / "held_out.csv", index=False)
    with pytest.raises(SystemExit) as done:
        main(["score", str(run), str(folder / "held_out.csv"), "-o", str(folder / "pred.csv"),
              "--workers", "0", "--level", "series"])
    assert done.value.code in (0, None)
    return folder / "pred.csv"


def test_large_bright_tumors_are_found_without_seeing_one(held_out_predictions):
    pred = pd.read_csv(held_out_predictions, dtype={"label": str})
    assert len(pred) == 20 and pred["error"].isna().all()
    assert roc_auc_score((pred["label"] == "1").astype(int), pred["score"]) >= 0.75, "the anomaly model did not learn"


def test_the_report_says_what_an_anomaly_detector_cannot_do(anomaly_run, held_out_predictions, tmp_path, medrec_cli):
    code, _, err = medrec_cli("report", held_out_predictions, "-o", tmp_path / "report", "--run", anomaly_run["run"])
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["provenance"]["training"]["task"] == "anomaly"
    assert any("trained on normal studies only" in note for note in report["limitations"])


def test_anomaly_needs_a_finding_map_model(anomaly_run, tmp_path):
    root = anomaly_run["root"]
    with pytest.raises(ConfigError, match="finding-map model"):
        train(_config(root, model={"name": "cnn_small"}), tmp_path / "cnn", show_progress=False)
