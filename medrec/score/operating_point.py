"""The operating threshold of a scoring setting: chosen on the run's validation split, scored the same way.

Training chooses the threshold on validation scores made without test-time augmentation. Flip
averaging (``--tta``) moves the scores (on the demo, the median negative score went from 0.013 to
0.61), so that threshold does not apply to TTA scores: every negative can end up called positive.
The threshold for TTA scores is therefore chosen the way training chose its own, with the same
rule (``model.json`` ``threshold.method``), on the run's validation samples scored with TTA. It is
computed the first time a run scores with TTA and kept in ``model.json`` as ``threshold_tta``
(tied to the weights by their sha256), so later scorings, the parts of a sharded job and
``medrec report --run`` all use the same value.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TypeGuard

import numpy as np
import pandas as pd
import torch

from medrec.console import console
from medrec.data.dataset import PreprocessDataset
from medrec.errors import ConfigError, MedrecError, ModelError
from medrec.rundir import LoadedRun, ScoringRun
from medrec.runinfo import MODEL_JSON, RunInfo, ThresholdEntry, TtaThresholdEntry, read_run_info, write_run_info
from medrec.score.inference import Predictor
from medrec.score.pipeline import iterate_batches
from medrec.thresholds import (
    ThresholdRule,
    choose_threshold,
    parse_rule,
    sensitivity_specificity,
    specificity_threshold,
)

TTA_THRESHOLD_KEY = "threshold_tta"  # the RunInfo field
TTA_SOURCE_MARK = "with test-time flip averaging"


def needs_own_threshold(run: ScoringRun) -> TypeGuard[LoadedRun]:
    """Whether the run's threshold was chosen on data (validation), so that it belongs to one scoring setting.

    Only a run read from its directory records that (``info.threshold.chosen_on``); a stand-in
    without ``info`` (or a threshold fixed by hand) applies to any setting as given.
    """
    info = getattr(run, "info", None)
    entry = info.threshold if isinstance(info, RunInfo) else None
    return entry is not None and entry.value is not None and bool(entry.chosen_on)


def _rule(entry: ThresholdEntry) -> ThresholdRule:
    """The rule a recorded threshold was chosen by (model.json ``threshold.method``)."""
    try:
        return parse_rule(entry.method or "youden", f"{MODEL_JSON} threshold.method")
    except ConfigError as e:
        raise ModelError(str(e)) from e


def validation_scores(run: LoadedRun, device: torch.device, *, tta: bool, batch_size: int = 8, workers: int = 0,
                      amp: bool = True) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The run's validation samples scored as ``medrec score`` scores (positive-class probability).

    The samples and their labels (the run's class names) come from ``RUN/val_predictions.csv``
    (what training fitted its threshold and temperature on), the scans from ``RUN/manifest.csv``.

    Returns:
        ``(sample ids, is positive, scores)``.

    Raises:
        ModelError: the run lacks those files, or a validation sample cannot be loaded.
    """
    folder = Path(run.run_dir)
    val_csv, manifest_csv = folder / "val_predictions.csv", folder / "manifest.csv"
    for path in (val_csv, manifest_csv):
        if not path.is_file():
            raise ModelError(f"{path}: missing, so the validation split cannot be scored to choose the threshold "
                             "for these scores; pass --threshold T, or score without --tta")
    from medrec.manifest import read_manifest

    validation = pd.read_csv(val_csv, dtype=str, keep_default_na=False)
    manifest = read_manifest(manifest_csv).drop_duplicates("sample_id").set_index("sample_id", drop=False)
    missing = sorted(set(validation["sample_id"]) - set(manifest.index))
    if missing:
        raise ModelError(f"{val_csv}: validation sample {missing[0]} is not in {manifest_csv.name}; the run directory "
                         "is inconsistent; pass --threshold T, or score without --tta")
    classes = [str(name) for name in run.classes]
    positive_index = classes.index(str(run.positive_class)) if getattr(run, "positive_class", None) in classes else 1
    records = [manifest.loc[sample_id].to_dict() for sample_id in validation["sample_id"]]
    predictor = Predictor(run, device, amp=amp, tta=tta, uncertainty_class=positive_index)
    scores = np.full(len(records), np.nan)
    for batch in iterate_batches(PreprocessDataset(records, run.deterministic_transforms()), batch_size, workers):
        if batch.failed:
            index, reason = batch.failed[0]
            raise ModelError(
                f"validation sample {records[index]['sample_id']} of the run could not be loaded ({reason}); the "
                "threshold for these scores is chosen on the validation split scored the same way: make its scans "
                "readable, pass --threshold T, or score without --tta"
            )
        for positions, stacked in batch.stacks():
            probabilities, _ = predictor(stacked)
            for offset, position in enumerate(positions):
                scores[batch.indices[position]] = float(probabilities[offset][positive_index])
    positive = (validation["label"].astype(str) == classes[positive_index]).to_numpy()
    return validation["sample_id"].tolist(), positive, scores


def tta_threshold(run: LoadedRun, device: torch.device, *, batch_size: int = 8, workers: int = 0,
                  amp: bool = True, model_sha256: str | None = None) -> TtaThresholdEntry:
    """The operating threshold for flip-TTA scores of ``run`` (``model.json`` ``threshold_tta``).

    Taken from ``model.json`` when it is there for these weights; else chosen now on the
    validation split scored with TTA, by the rule of the run's own threshold, and written into
    ``model.json`` (when the run folder is writable; it is kept in ``run.info`` either way).

    Args:
        run: a loaded run (:func:`medrec.rundir.load_run`) whose threshold was chosen on validation.
        device: where to score.
        batch_size: validation scoring batch size.
        workers: loader processes.
        amp: float16 autocast on CUDA.
        model_sha256: sha256 of the weights (default: as ``model.json`` records it).

    Returns:
        The entry (``value``, ``method``, ``chosen_on``, ``tta``, ``val_sensitivity``,
        ``val_specificity``, ``n_val``, ``weights_sha256``).

    Raises:
        ModelError: the validation split cannot be scored, or holds one class only.
    """
    info = run.info
    weights = model_sha256 or info.weights.sha256
    cached = info.threshold_tta
    if cached is not None and cached.value is not None and cached.weights_sha256 == weights:
        return cached
    entry = info.threshold
    if entry is None:
        raise ModelError(f"{Path(run.run_dir) / MODEL_JSON}: records no threshold chosen on validation, so none can "
                         "be chosen the same way for TTA scores; pass --threshold T, or score without --tta")
    rule = _rule(entry)
    console.print("Choosing the operating threshold for test-time augmented scores on the run's validation split "
                  f"({entry.method}, as training chose its own) ...")
    _, positive, scores = validation_scores(run, device, tta=True, batch_size=batch_size, workers=workers, amp=amp)
    sensitivity: float | None
    try:
        if not positive.any() and rule.kind == "specificity":  # an anomaly run with normal validation studies only
            value, specificity = specificity_threshold(scores, rule)
            sensitivity = None
        else:
            value = choose_threshold(positive, scores, rule).value
            sensitivity, specificity = sensitivity_specificity(positive, scores, value)
    except ValueError as e:
        raise ModelError(f"{Path(run.run_dir) / 'val_predictions.csv'}: cannot choose a threshold for TTA scores "
                         f"({e}); pass --threshold T, or score without --tta") from e
    result = TtaThresholdEntry(
        value=value,
        method=rule.text,
        chosen_on="validation",
        tta="mean over every flip of the input's spatial axes (as medrec score --tta)",
        val_sensitivity=sensitivity,
        val_specificity=specificity,
        n_val=int(len(scores)),
        applies_to=f"TTA-averaged calibrated probability of {run.positive_class!r}",
        rule="positive if score >= value",
        weights_sha256=weights,
        note="chosen when the run first scored with --tta; the threshold without TTA is 'threshold'",
    )
    _store(Path(run.run_dir), result)
    # kept in memory too: a read-only run folder still chooses it once per process
    run.info = info.model_copy(update={"threshold_tta": result})
    return result


def _store(run_dir: Path, entry: TtaThresholdEntry) -> None:
    """Add ``entry`` to the run's ``model.json`` (atomically), as read now (another scorer may have written it);
    a run folder that cannot be written is left as it is."""
    with contextlib.suppress(OSError, MedrecError):
        info = read_run_info(run_dir)
        write_run_info(run_dir, info.model_copy(update={"threshold_tta": entry}))


def source_text(entry: TtaThresholdEntry) -> str:
    """The sidecar's ``threshold_source`` for a TTA threshold (``medrec report`` reads it back)."""
    return f"run: {entry.method}, chosen on validation {TTA_SOURCE_MARK} (model.json {TTA_THRESHOLD_KEY})"
