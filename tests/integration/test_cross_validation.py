"""``medrec run RECIPE --folds K``: every fold trained and scored on data it never saw, pooled into one report.

One 3-fold cross-validation on a 12-patient NIfTI cohort (one epoch per fold) is shared by the
tests of this module; they run in file order (the last two delete files of a fold).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

FOLDS = 3
RECIPE = {
    "name": "tiny_cv",
    "data": {"scans": "scans", "labels": "scans/labels.csv"},
    "split": {"val": 0.34, "test": 0.0, "seed": 0, "check_pixels": False},
    "preprocessing": {"input_size": [16, 16, 8], "spacing": [20.0, 20.0, 20.0], "mode": "3d", "augment": False},
    "model": {"name": "cnn_small", "kwargs": {"channels": [4, 8]}},
    "training": {"epochs": 1, "batch_size": 2, "device": "cpu", "patience": None},
    "calibration": "none",  # 2-3 validation patients per fold: too few to fit a temperature
    "evaluation": {"bootstrap": 200, "acceptance": {"auc": {"lower_ci": 0.99}, "specificity": {"value": 0.0}}},
}
# index, split, then train + score per fold, then the pooling step
N_STEPS = 2 + 2 * FOLDS + 1


def _medrec(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medrec", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


def _manifest(patient_labels: list[str]) -> pd.DataFrame:
    """Two samples per patient, each with its patient's label."""
    return pd.DataFrame({
        "sample_id": [f"s{i:02d}" for i in range(2 * len(patient_labels))],
        "patient_id": [f"p{i // 2:02d}" for i in range(2 * len(patient_labels))],
        "label": [label for label in patient_labels for _ in range(2)],
    })


def test_held_out_fold_is_test_and_validation_comes_from_the_other_folds() -> None:
    """Fold i is the run's test split; val is carved from the other folds; a locked test split is in no partition."""
    from medrec.split import held_out_fold_splits, make_splits

    manifest = _manifest(["lesion", "normal"] * 10)  # 20 patients, 40 samples
    splits = make_splits(manifest, test=0.2, folds=4, seed=3)
    locked = set(splits.loc[splits["split"] == "test", "sample_id"])
    assert locked
    held_out_once: list[str] = []
    for fold in range(4):
        plan = held_out_fold_splits(splits, manifest, fold, val=0.25, seed=3)
        assert set(plan["split"]) == {"train", "val", "test"}
        parts = {name: set(plan.loc[plan["split"] == name, "sample_id"]) for name in ("train", "val", "test")}
        assert parts["test"] == set(splits.loc[splits["split"] == f"fold_{fold}", "sample_id"])
        assert not locked & set(plan["sample_id"])  # cross-validation never touches the locked test split
        others = set(splits.loc[splits["split"].str.startswith("fold_") & (splits["split"] != f"fold_{fold}"),
                                "sample_id"])
        assert parts["train"] | parts["val"] == others and not parts["train"] & parts["val"]
        patients = plan.groupby("patient_id")["split"].nunique()
        assert patients.max() == 1  # no patient in two partitions of a fold
        for name in ("train", "val"):  # stratified: both classes in training and in validation
            assert set(manifest.set_index("sample_id").loc[sorted(parts[name]), "label"]) == {"lesion", "normal"}
        held_out_once += sorted(parts["test"])
    assert sorted(held_out_once) == sorted(set(splits["sample_id"]) - locked)


def test_held_out_fold_splits_refuse_hold_out_splits() -> None:
    from medrec.errors import ConfigError
    from medrec.split import held_out_fold_splits, make_splits

    manifest = _manifest(["a", "b"] * 5)
    with pytest.raises(ConfigError, match="k-fold splits"):
        held_out_fold_splits(make_splits(manifest, seed=0), manifest, 0)


def test_a_fold_without_a_class_in_validation_is_refused_before_training() -> None:
    from medrec.errors import LabelsError
    from medrec.split import held_out_fold_splits, make_splits

    manifest = _manifest(["a"] * 8 + ["b"] * 2)  # two 'b' patients: some fold's validation has none
    splits = make_splits(manifest, test=0.0, folds=2, seed=0)
    with pytest.raises(LabelsError, match=r"fold \d: the (train|val) split .* no sample of class\(es\) \['b'\]"):
        for fold in range(2):
            held_out_fold_splits(splits, manifest, fold, val=0.2, seed=0)


@pytest.fixture(scope="module")
def cross_validated(tmp_path_factory):
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("cv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate_cohort(root / "scans", kind="ct-lesion", patients=12, fmt="nifti", seed=2, image_size=32,
                        slice_thickness=10.0, follow_up_fraction=0.0)
    (root / "recipe.yaml").write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    first = _medrec("run", "recipe.yaml", "--folds", str(FOLDS), "-o", "run", cwd=root)
    assert first.returncode == 0, first.stderr[-3000:]
    return root, root / "run", first


@pytest.mark.slow
def test_every_sample_is_held_out_exactly_once_by_a_model_that_never_saw_it(cross_validated) -> None:
    root, run, first = cross_validated
    manifest = pd.read_csv(run / "index" / "manifest.csv", dtype=str, keep_default_na=False)
    splits = pd.read_csv(run / "split" / "splits.csv", dtype=str)
    assert set(splits["split"]) == {f"fold_{i}" for i in range(FOLDS)}  # split.test 0: pure cross-validation
    pooled = pd.read_csv(run / "cv" / "predictions.csv", dtype=str, keep_default_na=False)
    assert pooled["sample_id"].is_unique
    assert sorted(pooled["sample_id"]) == sorted(manifest.loc[manifest["label"] != "", "sample_id"])
    assert (pooled["error"] == "").all()
    fold_of = splits.set_index("sample_id")["split"]
    assert (pooled["fold"].radd("fold_") == pooled["sample_id"].map(fold_of)).all()
    for fold in range(FOLDS):
        fold_run = run / "folds" / f"fold_{fold}"
        for name in ("config.yaml", "model.safetensors", "model.json", "splits.csv", "train.log"):
            assert (fold_run / name).is_file(), (fold, name)
        fold_splits = pd.read_csv(fold_run / "splits.csv", dtype=str)
        held_out = set(fold_splits.loc[fold_splits["split"] == "test", "sample_id"])
        fitted = set(fold_splits.loc[fold_splits["split"] != "test", "sample_id"])
        assert held_out == set(pooled.loc[pooled["fold"] == str(fold), "sample_id"])
        assert not held_out & fitted  # neither trained nor tuned (val) on its held-out fold
        assert set(fold_splits["split"]) == {"train", "val", "test"}
        assert yaml.safe_load((fold_run / "config.yaml").read_text())["split"]["fold"] == fold


@pytest.mark.slow
def test_folds_table_and_pooled_report(cross_validated) -> None:
    root, run, first = cross_validated
    pooled = pd.read_csv(run / "cv" / "predictions.csv", dtype=str, keep_default_na=False)
    table = pd.read_csv(run / "cv" / "folds.csv")
    assert list(table["fold"]) == list(range(FOLDS))
    for row in table.itertuples():
        rows = pooled[pooled["fold"] == str(row.fold)]
        truth = (rows["label"] == "1").to_numpy()
        scores = rows["score"].astype(float).to_numpy()
        called = scores >= row.threshold
        assert row.n_samples == len(rows)
        assert row.sensitivity == pytest.approx((called & truth).sum() / truth.sum())
        assert row.specificity == pytest.approx((~called & ~truth).sum() / (~truth).sum())
        assert row.auc == pytest.approx(roc_auc_score(truth, scores))
        model = json.loads((run / "folds" / f"fold_{row.fold}" / "model.json").read_text())
        assert row.threshold == pytest.approx(model["threshold"]["value"])

    report_dir = run / "cv" / "report"
    report = json.loads((report_dir / "report.json").read_text())
    assert report["n_samples"] == len(pooled)
    assert report["threshold"] == pytest.approx(float(np.median(table["threshold"])))
    assert report["threshold_kind"] == "validation"
    assert {"value", "ci95", "method"} <= set(report["metrics"]["auc"])
    assert (report_dir / "report.html").stat().st_size > 1000
    pd.testing.assert_frame_equal(pd.read_csv(report_dir / "folds.csv"), table)
    spread = json.loads((report_dir / "folds.json").read_text())["spread"]
    assert spread["auc"]["mean"] == pytest.approx(table["auc"].mean())
    assert spread["auc"]["sd"] == pytest.approx(table["auc"].std(ddof=1))
    said = " ".join(first.stderr.split())
    assert "no locked test split" in said
    assert "mean ± SD" in said and "pooled out-of-fold predictions" in said

    # the recipe's acceptance criteria are judged on the pooled predictions, and say so
    acceptance = report["acceptance"]
    verdicts = {c["metric"]: c["verdict"] for c in acceptance["criteria"]}
    auc_lower = report["metrics"]["auc"]["ci95"][0]
    assert verdicts == {"auc": "PASS" if auc_lower >= 0.99 else "FAIL", "specificity": "PASS"}
    assert acceptance["source"] == "recipe evaluation.acceptance"
    assert "pooled out-of-fold predictions of 3 models" in acceptance["caveat"]
    assert f"Acceptance criteria (recipe evaluation.acceptance): {acceptance['overall']}" in said
    assert "pooled out-of-fold predictions of 3 models" in said
    assert "pooled out-of-fold predictions of 3 models" in " ".join((report_dir / "report.html").read_text().split())


@pytest.mark.slow
def test_rerun_skips_every_fold(cross_validated) -> None:
    root, run, _ = cross_validated
    weights = {fold: (run / "folds" / f"fold_{fold}" / "model.safetensors").read_bytes() for fold in range(FOLDS)}
    report_before = (run / "cv" / "report" / "report.json").read_bytes()
    again = _medrec("run", "recipe.yaml", "--folds", str(FOLDS), "-o", "run", cwd=root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("unchanged, skipped") == N_STEPS
    for fold in range(FOLDS):
        assert (run / "folds" / f"fold_{fold}" / "model.safetensors").read_bytes() == weights[fold]
    assert (run / "cv" / "report" / "report.json").read_bytes() == report_before

    without = _medrec("run", "recipe.yaml", "-o", "run", cwd=root)  # forgot --folds: never one model over the folds
    assert without.returncode != 0 and "--folds" in without.stderr and "Traceback" not in without.stderr


@pytest.mark.slow
def test_deleting_a_folds_model_trains_only_that_fold(cross_validated) -> None:
    from medrec.workflow import load_workflow, run_workflow

    root, run, _ = cross_validated
    config = load_workflow(root / "recipe.yaml", {"split.folds": FOLDS})
    weights = run / "folds" / "fold_1" / "model.safetensors"
    before = weights.read_bytes()
    weights.unlink()
    result = run_workflow(config, run)
    status = {outcome.step: outcome.status for outcome in result.steps}
    assert status["fold_1/train"] == "ran" and status["fold_1/score"] == "ran"
    assert {status[f"fold_{fold}/{part}"] for fold in (0, 2) for part in ("train", "score")} == {"skipped (unchanged)"}
    assert weights.read_bytes() == before  # trained again from the start: same seed, same weights
    assert result.folds is not None and len(result.folds) == FOLDS
    pooled = pd.read_csv(run / "cv" / "predictions.csv", dtype=str, keep_default_na=False)
    assert pooled["sample_id"].is_unique


@pytest.mark.slow
def test_an_interrupted_fold_resumes(cross_validated) -> None:
    """A fold killed after its last epoch but before model.json (which marks a finished run) resumes there."""
    from medrec.workflow import load_workflow, run_workflow

    root, run, _ = cross_validated
    fold_run = run / "folds" / "fold_2"
    weights = (fold_run / "model.safetensors").read_bytes()
    (fold_run / "model.json").unlink()
    result = run_workflow(load_workflow(root / "recipe.yaml", {"split.folds": FOLDS}), run)
    status = {outcome.step: outcome.status for outcome in result.steps}
    assert status["fold_2/train"] == "ran"
    assert {status[f"fold_{fold}/train"] for fold in (0, 1)} == {"skipped (unchanged)"}
    assert "resumed after epoch 1" in (fold_run / "train.log").read_text()
    assert (fold_run / "model.safetensors").read_bytes() == weights and (fold_run / "model.json").is_file()
