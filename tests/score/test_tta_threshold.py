"""Scores made with test-time augmentation are judged at a threshold chosen on validation scored with TTA."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medrec.errors import ModelError

# per label, in order of the manifest: two validation, four training and two test patients of eight
SPLIT_CYCLE = ("val", "train", "train", "test", "val", "train", "train", "test")


@pytest.fixture(scope="module")
def tested_run(tmp_path_factory) -> dict:
    """A tiny run (16 patients, 2 epochs) with train / val / test splits: ``run``, ``manifest``, ``root``."""
    import yaml

    from medrec.config import load_config
    from medrec.index import index_folder
    from medrec.synth import generate_cohort
    from medrec.train import train

    root = tmp_path_factory.mktemp("tta_run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = generate_cohort(root / "cohort", kind="mri-tumor", patients=16, fmt="nifti", seed=5, image_size=48,
                                 lesion_diameter_mm=(40.0, 50.0), contrast=(0.5, 0.6), follow_up_fraction=0.0,
                                 slice_thickness=5.0)
        index = index_folder(root / "cohort", root / "index", labels=cohort.labels_csv, show_progress=False)
    rows = []
    for _, group in index.manifest.groupby("label"):
        for position, (_, sample) in enumerate(group.iterrows()):
            rows.append({"sample_id": sample["sample_id"], "patient_id": sample["patient_id"],
                         "split": SPLIT_CYCLE[position % 8]})
    pd.DataFrame(rows).to_csv(root / "splits.csv", index=False)
    config = {
        "data": {"manifest": str(root / "index" / "manifest.csv"), "splits": str(root / "splits.csv")},
        "split": {"check_pixels": False},
        "preprocessing": {"input_size": [32, 32, 16], "spacing": [6.0, 6.0, 10.0], "mode": "3d", "augment": False},
        "model": {"name": "cnn_small", "kwargs": {"channels": [8, 16]}},
        "training": {"epochs": 2, "batch_size": 4, "device": "cpu", "patience": None, "lr": 0.003},
    }
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    train(load_config(root / "train.yaml"), root / "run")
    return {"run": root / "run", "manifest": root / "index" / "manifest.csv", "root": root}


def _fresh_copy(tested_run: dict, tmp_path: Path) -> Path:
    """A copy of the run (each test starts without a cached TTA threshold)."""
    run = tmp_path / "run"
    shutil.copytree(tested_run["run"], run, ignore=shutil.ignore_patterns("cache", "evaluation"))
    return run


def _tta_threshold_by_hand(run: Path, tmp_path: Path) -> float:
    """Score the run's validation samples with --tta at a fixed threshold and choose by the run's rule (youden)."""
    from medrec.manifest import read_manifest
    from medrec.score import ScoreOptions, load_scoring_run, score_manifest
    from medrec.thresholds import choose_threshold

    loaded, model_hash = load_scoring_run(run)
    validation = pd.read_csv(run / "val_predictions.csv", dtype=str, keep_default_na=False)
    manifest = read_manifest(run / "manifest.csv")
    rows = manifest[manifest["sample_id"].isin(set(validation["sample_id"]))]
    out = tmp_path / "val_tta.csv"
    score_manifest(loaded, rows, out, ScoreOptions(tta=True, threshold=0.5, workers=0, device="cpu"),
                   model_sha256=model_hash, show_progress=False)
    scored = pd.read_csv(out, dtype={"sample_id": str}).set_index("sample_id").loc[validation["sample_id"]]
    positive = (validation["label"] == "1").to_numpy()
    return choose_threshold(positive, scored["score"].to_numpy(dtype=float), "youden").value


def test_validation_scores_without_tta_reproduce_the_trained_threshold(tested_run):
    # the machinery that scores the validation split gives training's own scores and threshold back
    from medrec.rundir import load_run
    from medrec.score.operating_point import validation_scores
    from medrec.thresholds import choose_threshold

    run = load_run(tested_run["run"])
    sample_ids, positive, scores = validation_scores(run, run.device, tta=False)
    trained = pd.read_csv(tested_run["run"] / "val_predictions.csv", dtype={"sample_id": str}).set_index("sample_id")
    np.testing.assert_allclose(scores, trained.loc[sample_ids, "score"].to_numpy(), atol=1e-5)
    assert positive.any() and not positive.all()
    info = json.loads((tested_run["run"] / "model.json").read_text())
    assert choose_threshold(positive, scores, "youden").value == pytest.approx(info["threshold"]["value"], abs=1e-5)


def test_evaluate_with_tta_uses_the_threshold_chosen_with_tta(tested_run, tmp_path):
    from medrec.evaluate import evaluate_run

    run = _fresh_copy(tested_run, tmp_path)
    plain = json.loads((run / "model.json").read_text())["threshold"]["value"]
    expected = _tta_threshold_by_hand(run, tmp_path)
    assert not np.isclose(expected, plain, atol=1e-6)  # flip averaging moved the validation scores
    report = evaluate_run(run, tta=True, n_boot=200, device="cpu")
    assert report["threshold"] == pytest.approx(expected, abs=1e-6)
    info = json.loads((run / "model.json").read_text())
    entry = info["threshold_tta"]
    assert entry["value"] == pytest.approx(expected, abs=1e-6)
    assert entry["chosen_on"] == "validation" and entry["method"] == "youden" and entry["n_val"] == 4
    assert entry["weights_sha256"] == info["weights"]["sha256"]
    assert info["threshold"]["value"] == plain  # the plain threshold is kept for plain scores
    sidecar = json.loads((run / "evaluation" / "predictions.csv.json").read_text())
    assert sidecar["tta"] is True and sidecar["threshold"] == pytest.approx(expected, abs=1e-6)
    assert "test-time flip averaging" in sidecar["threshold_source"]
    assert report["threshold_kind"] == "validation" and "test-time augmentation" in report["threshold_source"]
    # the decisions in the file are those of the TTA threshold
    predictions = pd.read_csv(run / "evaluation" / "predictions.csv", dtype={"prediction": str})
    assert ((predictions["score"] >= expected).map({True: "1", False: "0"}) == predictions["prediction"]).all()


def test_score_with_tta_reuses_the_stored_threshold_and_plain_scoring_keeps_its_own(tested_run, tmp_path):
    from medrec.score import ScoreOptions, score

    run = _fresh_copy(tested_run, tmp_path)
    info = json.loads((run / "model.json").read_text())
    info["threshold_tta"] = {**info["threshold"], "value": 0.123, "weights_sha256": info["weights"]["sha256"]}
    (run / "model.json").write_text(json.dumps(info))
    options = {"workers": 0, "device": "cpu"}
    tta = score(run, tested_run["manifest"], tmp_path / "tta.csv", ScoreOptions(tta=True, **options),
                show_progress=False)
    assert tta.record["threshold"] == 0.123
    plain = score(run, tested_run["manifest"], tmp_path / "plain.csv", ScoreOptions(**options), show_progress=False)
    assert plain.record["threshold"] == info["threshold"]["value"]
    # a stored value made for other weights is not used
    info["threshold_tta"]["weights_sha256"] = "0" * 64
    (run / "model.json").write_text(json.dumps(info))
    again = score(run, tested_run["manifest"], tmp_path / "tta2.csv", ScoreOptions(tta=True, **options),
                  show_progress=False)
    assert again.record["threshold"] != 0.123


def test_report_refuses_tta_predictions_at_a_threshold_chosen_without_tta(tested_run, tmp_path):
    from medrec.report.build import write_report
    from medrec.score import ScoreOptions, score

    run = _fresh_copy(tested_run, tmp_path)
    out = tmp_path / "tta.csv"
    score(run, tested_run["manifest"], out, ScoreOptions(tta=True, workers=0, device="cpu"), show_progress=False)
    # predictions as medrec scored them before: TTA scores at the run's plain threshold
    sidecar = out.with_name(out.name + ".json")
    record = json.loads(sidecar.read_text())
    record["threshold_source"] = "run: youden, chosen on validation"
    sidecar.write_text(json.dumps(record))
    info = json.loads((run / "model.json").read_text())
    legacy_run = tmp_path / "legacy_run"
    shutil.copytree(run, legacy_run)
    info.pop("threshold_tta", None)
    (legacy_run / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="test-time augmentation"):
        write_report(out, tmp_path / "r1", n_boot=200)  # the sidecar's threshold alone
    with pytest.raises(ModelError, match="without it"):
        write_report(out, tmp_path / "r2", run_dir=legacy_run, n_boot=200)
    # a user-given threshold is the user's choice; a run that holds the TTA threshold gives it
    assert write_report(out, tmp_path / "r3", threshold=0.4, n_boot=200)["threshold"] == 0.4
    stored = json.loads((run / "model.json").read_text())["threshold_tta"]["value"]
    assert write_report(out, tmp_path / "r4", run_dir=run, n_boot=200)["threshold"] == pytest.approx(stored)
