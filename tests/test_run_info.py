"""``model.json`` through its one owner, :mod:`medrec.runinfo`: round trip, runs written before it, refusals,
and the report and the scorer reading the same threshold."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from medrec.errors import ModelError
from medrec.runinfo import (
    MODEL_JSON,
    RUN_FORMAT,
    Architecture,
    Calibration,
    DataFingerprint,
    RunInfo,
    ThresholdEntry,
    TtaThresholdEntry,
    WeightsRecord,
    read_run_info,
    write_run_info,
)

# model.json as medrec train wrote it before RunInfo existed (a tiny cnn_small run on the synthetic MR
# cohort, written by the dict literal of medrec.train.loop): every key, in its order; the plan and its
# fingerprint are cut short, the rest is as written
LEGACY_MODEL_JSON: dict = {
    "format": "medrec-run-1",
    "architecture": {"name": "cnn_small", "spatial_dims": 3, "in_channels": 1, "num_classes": 2,
                     "kwargs": {"channels": [8, 16]}},
    "mode": "3d",
    "input_shape": [1, 32, 32, 16],
    "weights": {"file": "model.safetensors",
                "sha256": "ef43f40ba2bd851689349f90d5036a02095477cf76ad13b77700c79161f80950"},
    "plan": {"version": 2, "preset": "mr", "spatial_dims": 3, "mode": "3d", "spacing": [6.0, 6.0, 10.0],
             "input_size": [32, 32, 16]},
    "plan_hash": "dadc8ea1f3764fea3819ea5f69bba19dea1392f753fb2006ccf43b522fc7ef32",
    "classes": ["0", "1"],
    "positive_class": "1",
    "task": "binary",
    "threshold": {"value": 0.4762077758715904, "method": "youden", "chosen_on": "validation",
                  "val_sensitivity": 0.5, "val_specificity": 0.5, "applies_to": "calibrated probability of '1'",
                  "rule": "positive if score >= value"},
    "calibration": {"method": "temperature", "temperature": 1.0, "val_nll_before": 0.6951616712935054,
                    "val_nll_after": 0.6951616712935054, "applied": False, "n_val": 4, "val_class_counts": [2, 2],
                    "min_samples_per_class": 10,
                    "reason": "validation holds too few samples to fit a temperature (class 0: 2, class 1: 2; at "
                              "least 10 of each class are needed); the probabilities are the network's softmax "
                              "(T = 1); give validation more samples (split.val) or set calibration.method: none"},
    "versions": {"python": "3.11.7", "medrec": "0.1.0", "torch": "2.13.0+cpu", "monai": "1.6.1", "numpy": "2.4.6",
                 "pydicom": "3.0.2", "nibabel": "5.4.2", "safetensors": "0.8.0", "scikit-learn": "1.9.1",
                 "scipy": "1.17.1"},
    "data_fingerprint": {
        "samples_sha256": "368ff9eb706b5e141eef0adae2fb398fa210fb7301a74291b55761e984670630",
        "samples_rule": "sha256 over sorted 'sample_id<TAB>label<TAB>split' lines",
        "manifest_sha256": "eca8b3e16e9fd1a643991aae2180833fb677433ee8ba891d878bd110ed256bf5",
        "n_train": 8, "n_val": 4, "n_test": 0,
        "manifest_rule": "sha256 of manifest.csv with the samples' common folder written as <scans>",
        "planning_fingerprint": {"n_samples": 8, "modalities": {"unknown": 8}, "spacing_median": [5.0, 5.0, 5.0]},
    },
    "seed": 0,
    "best_epoch": 1,
    "epochs_completed": 1,
    "stopped_early": False,
    "val_metrics": {"n": 4, "auc": 0.25, "nll_uncalibrated": 0.6951616712935054,
                    "nll_calibrated": 0.6951616712935054, "accuracy_argmax": 0.5, "sensitivity": 0.5,
                    "specificity": 0.5, "accuracy": 0.5},
    "device": "cpu",
    "world_size": 1,
}
# what the multi-class branch of training wrote in place of a threshold
MULTICLASS_THRESHOLD = {"value": None, "method": "argmax", "chosen_on": None,
                        "note": "multi-class: the predicted class is the argmax of the calibrated probabilities; "
                                "no threshold"}


def _write_json(folder: Path, content: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MODEL_JSON
    # as the training loop wrote it
    path.write_text(json.dumps(content, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def _typed_info() -> RunInfo:
    return RunInfo(
        format=RUN_FORMAT,
        architecture=Architecture(name="resnet10", spatial_dims=3, in_channels=1, num_classes=2,
                                  options={"slice_mode": "2.5d", "context": 1}),
        mode="2.5d",
        input_shape=(1, 64, 64, 32),
        weights=WeightsRecord(sha256="a" * 64),
        plan={"preset": "ct", "spatial_dims": 3, "mode": "2.5d", "spacing": [1.0, 1.0, 2.5]},
        plan_hash="b" * 64,
        classes=("normal", "lesion"),
        positive_class="lesion",
        task="binary",
        threshold=ThresholdEntry(value=0.31, method="sensitivity:0.9", chosen_on="validation",
                                 val_sensitivity=0.92, val_specificity=0.71),
        threshold_tta=TtaThresholdEntry(value=0.44, method="sensitivity:0.9", chosen_on="validation", n_val=40,
                                        weights_sha256="a" * 64),
        calibration=Calibration(method="temperature", temperature=1.7, val_nll_before=0.52, val_nll_after=0.41,
                                temperature_ci95=(1.3, 2.2)),
        versions={"torch": "2.13.0"},
        data_fingerprint=DataFingerprint(samples_sha256="c" * 64, n_train=120, n_val=40, n_test=40),
        seed=7,
        best_epoch=12,
        epochs_completed=20,
        stopped_early=True,
        val_metrics={"n": 40, "auc": 0.91, "ece": math.nan},
        device="cpu",
        world_size=1,
    )


def test_round_trip_gives_an_equal_record(tmp_path: Path) -> None:
    info = _typed_info()
    path = write_run_info(tmp_path, info)
    back = read_run_info(tmp_path)
    # NaN != NaN: compare the metric apart, the rest as a whole
    assert back.val_metrics is not None and math.isnan(back.val_metrics["ece"])
    assert back.model_copy(update={"val_metrics": {}}) == info.model_copy(update={"val_metrics": {}})
    assert back.val_metrics is not None and back.val_metrics["auc"] == 0.91 and back.val_metrics["n"] == 40
    assert back.threshold is not None and back.threshold.value == 0.31 and back.threshold.chosen_on == "validation"
    assert back.architecture.options == {"slice_mode": "2.5d", "context": 1}
    assert back.temperature == 1.7
    # the file says "kwargs" (the key load_run has always read) and names no key that was not set
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["architecture"]["kwargs"] == {"slice_mode": "2.5d", "context": 1}
    assert "note" not in written["threshold"] and "reason" not in written["calibration"]


def test_a_model_json_written_before_run_info_loads_and_writes_back_unchanged(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "run", LEGACY_MODEL_JSON)
    info = read_run_info(tmp_path / "run")
    assert info.threshold is not None and info.threshold.value == pytest.approx(0.4762077758715904)
    assert info.threshold.method == "youden" and info.threshold.val_sensitivity == 0.5
    assert info.calibration is not None and info.calibration.applied is False and info.temperature == 1.0
    assert info.architecture.name == "cnn_small" and info.architecture.options == {"channels": [8, 16]}
    assert info.weights.sha256 == LEGACY_MODEL_JSON["weights"]["sha256"]
    assert info.data_fingerprint is not None and info.data_fingerprint.n_val == 4
    assert info.classes == ("0", "1") and info.positive_class == "1" and info.input_shape == (1, 32, 32, 16)
    assert info.versions is not None and info.versions["torch"] == "2.13.0+cpu"
    before = path.read_bytes()
    write_run_info(tmp_path / "run", info)
    assert path.read_bytes() == before


def test_a_multiclass_run_and_a_hand_written_run_load(tmp_path: Path) -> None:
    multiclass = copy.deepcopy(LEGACY_MODEL_JSON) | {"classes": ["a", "b", "c"], "positive_class": None,
                                                     "task": "multiclass", "threshold": MULTICLASS_THRESHOLD}
    _write_json(tmp_path / "multi", multiclass)
    info = read_run_info(tmp_path / "multi")
    assert info.threshold_value is None and info.threshold is not None and info.threshold.method == "argmax"
    # the fewest keys load_run has ever accepted; keys this model does not name are kept
    minimal = {"format": RUN_FORMAT, "architecture": {"name": "cnn_small", "spatial_dims": 2, "in_channels": 1,
                                                      "num_classes": 2, "pretrained_from": "imagenet"},
               "classes": ["0", "1"], "plan": {}, "weights": {"file": "model.safetensors"},
               "threshold": {"value": 0.5, "source": "validation"}, "written_by": "a later medrec"}
    path = _write_json(tmp_path / "minimal", minimal)
    info = read_run_info(tmp_path / "minimal")
    assert info.threshold_value == 0.5 and info.calibration is None and info.temperature == 1.0
    write_run_info(tmp_path / "minimal", info)
    assert json.loads(path.read_text(encoding="utf-8")) == minimal


@pytest.mark.parametrize(("content", "expected"), [
    (LEGACY_MODEL_JSON | {"format": "medrec-run-0"}, "not a medrec-run-1 model description (format 'medrec-run-0')"),
    ({k: v for k, v in LEGACY_MODEL_JSON.items() if k != "format"}, "not a medrec-run-1 model description"),
    ([LEGACY_MODEL_JSON], "not a medrec-run-1 model description"),
    *[({k: v for k, v in LEGACY_MODEL_JSON.items() if k != key}, f"lacks '{key}'")
      for key in ("architecture", "classes", "plan", "weights")],
    (LEGACY_MODEL_JSON | {"threshold": {"value": "high"}}, "threshold.value"),
    (LEGACY_MODEL_JSON | {"threshold": {"value": 1.5}}, "threshold.value"),
    (LEGACY_MODEL_JSON | {"architecture": {"name": "cnn_small"}}, "architecture.spatial_dims"),
    (LEGACY_MODEL_JSON | {"calibration": {"method": "temperature", "temperature": 0.0}}, "calibration.temperature"),
])
def test_a_wrong_format_or_a_missing_key_fails_naming_the_file(tmp_path: Path, content: object,
                                                                expected: str) -> None:
    path = _write_json(tmp_path / "run", content)
    with pytest.raises(ModelError) as caught:
        read_run_info(tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_missing_and_damaged_files_fail_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model\.json: not found"):
        read_run_info(tmp_path)
    (tmp_path / MODEL_JSON).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match=r"model\.json: not valid JSON"):
        read_run_info(tmp_path)


def _loadable_run(folder: Path, info: dict) -> Path:
    """A run directory load_run accepts: cnn_small weights whose sha256 model.json records."""
    from medrec.checkpoint import save_weights
    from medrec.models import create_model

    folder.mkdir(parents=True)
    digest = save_weights(folder / "model.safetensors", create_model("cnn_small", 3, 1, 2, channels=(8, 16))
                          .state_dict())
    _write_json(folder, info | {"weights": {"file": "model.safetensors", "sha256": digest}})
    return folder


def test_the_report_and_the_scorer_read_the_same_threshold(tmp_path: Path) -> None:
    from medrec.report.inputs import read_run
    from medrec.report.operating_threshold import resolve_threshold, scored_threshold, tta_run_info
    from medrec.rundir import load_run
    from medrec.score.operating_point import source_text
    from medrec.score.options import ScoreOptions
    from medrec.score.scoring_run import _run_threshold

    run_dir = _loadable_run(tmp_path / "run", LEGACY_MODEL_JSON)
    expected = LEGACY_MODEL_JSON["threshold"]["value"]
    run = load_run(run_dir)
    scored, source = _run_threshold(run, ScoreOptions(device="cpu"))
    reported, kind, method, _ = resolve_threshold(read_run(run_dir), run_dir / MODEL_JSON, None, None, False)
    assert scored == reported == run.threshold == expected
    assert kind == "validation" and method == "youden" and source == "run: youden, chosen on validation"
    # the report reads the scorer's sidecar as a threshold chosen on validation, at the same value
    sidecar = scored_threshold({"threshold": scored, "threshold_source": source}, tmp_path / "p.csv.json")
    assert sidecar is not None and sidecar.decision()[:2] == (expected, "validation")

    # with TTA both take threshold_tta, stored for these weights (so the scorer scores nothing to choose it)
    info = read_run_info(run_dir)
    tta_entry = TtaThresholdEntry(value=0.61, method="youden", chosen_on="validation",
                                  weights_sha256=info.weights.sha256)
    write_run_info(run_dir, info.model_copy(update={"threshold_tta": tta_entry}))
    run = load_run(run_dir)
    scored, source = _run_threshold(run, ScoreOptions(device="cpu", tta=True), model_sha256=info.weights.sha256)
    assert scored == 0.61 and source == source_text(tta_entry)
    record = {"tta": True, "threshold": scored, "threshold_source": source}
    view, used_tta = tta_run_info(read_run(run_dir), record, scored_threshold(record, tmp_path / "p.csv.json"),
                                  tmp_path / "p.csv.json", None, None)
    reported, kind, _, _ = resolve_threshold(view, run_dir / MODEL_JSON, None, None, False)
    assert used_tta and reported == scored == 0.61 and kind == "validation"
