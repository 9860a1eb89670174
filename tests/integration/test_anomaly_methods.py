"""The other two anomaly methods end to end: ``features`` (a Gaussian of the finding network's
features) and ``reconstruction`` (the autoencoder baseline) train, fit their normal reference,
record it with the weights, and score again exactly as validation scored. Tiny and short: the
pipeline is under test; what each method finds is measured in datasets/synthetic_phantoms.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medrec.config import parse_config
from medrec.errors import ConfigError

RECIPE = {
    "task": "anomaly",
    "data": {"scans": "scans", "labels": "labels.csv"},
    "split": {"val": 0.3, "test": 0.2, "seed": 0, "check_pixels": False},
    "preprocessing": {"preset": "mr", "augment": True},
    "training": {"epochs": 2, "steps_per_epoch": 4, "batch_size": 8, "anomaly_diameter_mm": [24, 48],
                 "device": "cpu"},
    "evaluation": {"bootstrap": 200},
}
METHODS = {
    "features": {"model": {"name": "finding_fcn"}},
    "reconstruction": {"model": {"name": "anomaly_autoencoder"}},
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("methods")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = generate_cohort(root / "scans", kind="mri-tumor", patients=24, fmt="nifti", seed=3, image_size=48,
                               slice_thickness=6.0, follow_up_fraction=0.0)
    labels = pd.read_csv(made.labels_csv, dtype=str)
    # class names whose positive sorts first: the finding's logit must follow it
    labels["label"] = labels["label"].map({"0": "normal", "1": "anomaly"})
    labels.to_csv(root / "labels.csv", index=False)
    return root


def _run(root: Path, method: str) -> Path:
    recipe = {**RECIPE, "name": method, **METHODS[method],
              "training": {**RECIPE["training"], "anomaly_method": method}}
    (root / f"{method}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "medrec", "run", f"{method}.yaml", "-o", method], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / method


@pytest.mark.parametrize("method", list(METHODS))
def test_a_method_fits_its_reference_and_scores_again_as_validation_did(cohort, method):
    run = _run(cohort, method)
    log = (run / "train.log").read_text(encoding="utf-8")
    assert f"normal reference ({method})" in log
    info = json.loads((run / "model.json").read_text())
    kwargs = info["architecture"]["kwargs"]
    assert info["classes"] == ["anomaly", "normal"] and kwargs["positive_output"] == 0
    if method == "features":
        assert kwargs["distance_layers"] == [3, 5]
    else:
        assert info["architecture"]["name"] == "anomaly_autoencoder"
    # the weights carry the fitted reference: scoring the validation studies again gives their validation scores
    validation = pd.read_csv(run / "val_predictions.csv", dtype={"sample_id": str})
    manifest = pd.read_csv(run / "manifest.csv", dtype=str, keep_default_na=False)
    manifest[manifest["sample_id"].isin(validation["sample_id"])].to_csv(cohort / f"{method}-val.csv", index=False)
    done = subprocess.run([sys.executable, "-m", "medrec", "score", method, f"{method}-val.csv", "-o",
                           f"{method}-scores.csv", "--workers", "0"], cwd=cohort, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    scored = pd.read_csv(cohort / f"{method}-scores.csv", dtype={"sample_id": str}).set_index("sample_id")
    again = scored.loc[validation["sample_id"], "score"].to_numpy()
    assert again == pytest.approx(validation["score"].to_numpy(), abs=1e-5)
    report = json.loads((run / "evaluation" / "report.json").read_text())
    assert report["metrics"]["auc"]["value"] is not None


def test_the_method_and_the_network_must_agree(tmp_path):
    manifest = str(tmp_path / "m.csv")
    with pytest.raises(ConfigError, match="anomaly_method reconstruction goes with model.name anomaly_autoencoder"):
        parse_config({"task": "anomaly", "data": {"manifest": manifest}, "model": {"name": "finding_fcn"},
                      "training": {"anomaly_method": "reconstruction"}})
    with pytest.raises(ConfigError, match="anomaly_method reconstruction goes with model.name anomaly_autoencoder"):
        parse_config({"task": "anomaly", "data": {"manifest": manifest}, "model": {"name": "anomaly_autoencoder"}})
    with pytest.raises(ConfigError, match="anomaly_autoencoder learns normal studies for task: anomaly only"):
        parse_config({"data": {"manifest": manifest}, "model": {"name": "anomaly_autoencoder"},
                      "training": {"anomaly_method": "reconstruction"}})
