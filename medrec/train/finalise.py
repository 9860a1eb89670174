"""After the last epoch: calibrate the kept weights, choose the operating threshold, write ``model.json``.

Both decisions are made on the validation split: the temperature on the best weights' validation
logits, the binary threshold on the *calibrated* validation probabilities, so that it applies to
the probabilities scoring returns. ``model.json`` (:class:`medrec.runinfo.RunInfo`) is written last:
its presence marks a complete run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrec.atomicio import write_csv
from medrec.config import TrainConfig
from medrec.hashing import sha256_file
from medrec.manifest import MANIFEST_HASH_RULE, manifest_sha256
from medrec.planning import Plan
from medrec.rundir import MODEL_WEIGHTS, RUN_FORMAT, VAL_PREDICTIONS_CSV, library_versions
from medrec.runinfo import (
    Architecture,
    Calibration,
    DataFingerprint,
    RunInfo,
    ThresholdEntry,
    WeightsRecord,
    write_run_info,
)
from medrec.thresholds import choose_threshold, parse_rule, sensitivity_specificity, specificity_threshold
from medrec.train.calibration import TemperatureFit, calibrated_probabilities, fit_temperature, negative_log_likelihood
from medrec.train.early_stopping import EarlyStopping
from medrec.train.evaluation import classification_auc
from medrec.train.inputs import TrainingData
from medrec.train.result import RunResult

# The threshold rule of an anomaly run whose validation holds no positive, unless the recipe gives a
# specificity rule: a 5 % false-positive rate on the normal validation studies.
NORMALS_ONLY_RULE = "specificity:0.95"


def json_number(value: float | None) -> float | None:
    """``value``, or None where JSON has no number for it (NaN, infinity)."""
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


@dataclass(frozen=True)
class TrainedModel:
    """What training decided, for the run record.

    Attributes:
        architecture: the architecture record (with its ``mode``).
        plan: the preprocessing plan and its hash.
        input_shape: the network's input shape ``(C, *spatial)``.
        stopping: the early-stopping state (best epoch).
        epochs_completed: epochs trained in total.
        device: the device type trained on.
        world_size: the number of training processes.
    """

    architecture: dict[str, Any]
    plan: Plan
    plan_hash: str
    input_shape: tuple[int, ...]
    stopping: EarlyStopping
    epochs_completed: int
    device: str
    world_size: int


def _threshold(config: TrainConfig, data: TrainingData, probabilities: np.ndarray, val_labels: np.ndarray,
               val_metrics: dict[str, Any], log: Callable[[str], None]) -> ThresholdEntry:
    space = data.space
    if not space.binary:
        log("multi-class task: predictions are the argmax of the calibrated probabilities (no threshold)")
        return ThresholdEntry(
            value=None,
            method="argmax",
            chosen_on=None,
            note="multi-class: the predicted class is the argmax of the calibrated probabilities; no threshold",
        )
    positive = val_labels == space.positive_index
    scores = probabilities[:, space.positive_index]
    if not positive.any():
        return _threshold_on_normals(config, scores, val_metrics, log)
    choice = choose_threshold(positive, scores, config.threshold.rule)
    sensitivity, specificity = sensitivity_specificity(positive, scores, choice.value)
    val_metrics.update(sensitivity=sensitivity, specificity=specificity,
                       accuracy=float(((scores >= choice.value) == positive).mean()))
    log(f"threshold {choice.value:.4f} ({choice.method}, chosen on validation, calibrated probabilities): "
        f"sensitivity {sensitivity:.3f}, specificity {specificity:.3f}")
    return ThresholdEntry(
        value=choice.value,
        method=choice.method,
        chosen_on="validation",
        val_sensitivity=sensitivity,
        val_specificity=specificity,
        applies_to=f"calibrated probability of {space.positive_class!r}",
        rule="positive if score >= value",
    )


def _threshold_on_normals(config: TrainConfig, scores: np.ndarray, val_metrics: dict[str, Any],
                          log: Callable[[str], None]) -> ThresholdEntry:
    """An anomaly run whose validation holds no positive: the threshold at a false-positive rate on
    the normal validation studies (the recipe's ``specificity:<x>`` rule, else
    :data:`NORMALS_ONLY_RULE`)."""
    rule = config.threshold.rule
    why = "threshold.method"
    if rule.kind != "specificity":
        rule = parse_rule(NORMALS_ONLY_RULE)
        why = f"as threshold.method {config.threshold.rule.text} needs positives"
    value, specificity = specificity_threshold(scores, rule)
    val_metrics.update(specificity=specificity)
    log(f"threshold {value:.4f} ({rule.text}: {why}; chosen on the {len(scores)} normal validation studies, "
        f"validation holds no labelled positive): specificity {specificity:.3f}, sensitivity unknown")
    return ThresholdEntry(
        value=value,
        method=rule.text,
        chosen_on="validation",
        val_specificity=specificity,
        applies_to="probability of an anomaly (uncalibrated: validation holds no labelled positive)",
        rule="positive if score >= value",
        note=(f"validation held no labelled positive: the threshold gives a false-positive rate of "
              f"{1 - specificity:.1%} on the {len(scores)} normal validation studies; its sensitivity is unknown"),
    )


def finalise(config: TrainConfig, data: TrainingData, run_dir: Path, logits: np.ndarray, val_labels: np.ndarray,
             trained: TrainedModel, log: Callable[[str], None]) -> RunResult:
    """Calibrate, choose the threshold, write ``val_predictions.csv`` and then ``model.json``.

    Args:
        logits: the kept weights' validation logits, in ``data.parts["val"]`` order.
        val_labels: the validation class indices, same order.
    """
    space = data.space
    normals_only = space.positive_index is not None and not (val_labels == space.positive_index).any()
    if normals_only and config.calibration.method == "temperature":
        log("calibration: none (validation holds no labelled positive to fit a temperature on)")
    if config.calibration.method == "temperature" and not normals_only:
        fit = fit_temperature(logits, val_labels)
    else:
        nll = negative_log_likelihood(logits, val_labels)
        fit = TemperatureFit(1.0, nll, nll, method="none")
    probabilities = calibrated_probabilities(logits, fit.temperature)
    val_metrics: dict[str, Any] = {
        "n": int(len(val_labels)),
        "auc": json_number(classification_auc(val_labels, probabilities, space.positive_index)),
        "nll_uncalibrated": fit.nll_before,
        "nll_calibrated": fit.nll_after,
        "accuracy_argmax": float((probabilities.argmax(axis=1) == val_labels).mean()),
    }
    threshold = _threshold(config, data, probabilities, val_labels, val_metrics, log)
    log(fit.summary())
    write_val_predictions(run_dir, data, probabilities, val_labels)
    stopping = trained.stopping
    info = RunInfo(
        format=RUN_FORMAT,
        architecture=Architecture.model_validate({k: v for k, v in trained.architecture.items() if k != "mode"}),
        mode=trained.architecture["mode"],
        input_shape=trained.input_shape,
        weights=WeightsRecord(file=MODEL_WEIGHTS, sha256=sha256_file(run_dir / MODEL_WEIGHTS)),
        plan=trained.plan.model_dump(mode="json"),
        plan_hash=trained.plan_hash,
        classes=tuple(space.classes),
        positive_class=space.positive_class,
        task="binary" if space.binary else "multiclass",
        threshold=threshold,
        calibration=Calibration.model_validate(fit.to_dict()),
        versions=library_versions(),
        data_fingerprint=data_fingerprint(data, trained.plan),
        seed=config.training.seed,
        best_epoch=stopping.best_epoch,
        epochs_completed=trained.epochs_completed,
        stopped_early=stopping.stopped_early,
        val_metrics=val_metrics,
        device=trained.device,
        world_size=trained.world_size,
    )
    write_run_info(run_dir, info)
    log(f"done: best epoch {stopping.best_epoch} of {trained.epochs_completed}; run written to {run_dir}")
    return RunResult(
        run_dir, True, stopping.best_epoch, trained.epochs_completed, stopping.stopped_early,
        val_metrics, info.threshold, info.calibration, space.classes, space.positive_class,
    )


def write_val_predictions(run_dir: Path, data: TrainingData, probabilities: np.ndarray,
                          val_labels: np.ndarray) -> None:
    """Calibrated validation probabilities of the kept weights (what threshold and T were fitted on)."""
    space = data.space
    frame = pd.DataFrame({"sample_id": data.parts["val"], "label": [space.classes[i] for i in val_labels]})
    if space.binary:
        frame["score"] = probabilities[:, space.positive_index]
    else:
        for index, name in enumerate(space.classes):
            frame[f"score_{name}"] = probabilities[:, index]
    write_csv(run_dir / VAL_PREDICTIONS_CSV, frame)


def data_fingerprint(data: TrainingData, plan: Plan) -> DataFingerprint:
    """What the run was trained on: a hash of every sample's id, label and split, and the manifest's."""
    digest = hashlib.sha256()
    split_of = dict(zip(data.splits["sample_id"], data.splits["split"], strict=True))
    for sample_id in sorted(split_of):
        digest.update(f"{sample_id}\t{data.labels[sample_id]}\t{split_of[sample_id]}\n".encode())
    return DataFingerprint(
        samples_sha256=digest.hexdigest(),
        samples_rule="sha256 over sorted 'sample_id<TAB>label<TAB>split' lines",
        manifest_sha256=manifest_sha256(data.manifest_path),
        n_train=len(data.parts["train"]),
        n_val=len(data.parts["val"]),
        n_test=len(data.parts["test"]),
        manifest_rule=MANIFEST_HASH_RULE,
        planning_fingerprint=plan.fingerprint,
    )
