"""Cross-validation's fold steps: each fold's splits, a train and a score step per fold, then the
pooling step (see :mod:`medrec.workflow`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medrec.atomicio import write_text
from medrec.console import console
from medrec.errors import OutputError
from medrec.workflow.layout import (
    CV_DIR,
    CV_FOLDS_CSV,
    CV_PREDICTIONS_CSV,
    CV_REPORT_DIR,
    _fold_dir,
    _fold_predictions_path,
    _fold_splits_path,
)
from medrec.workflow.pooling import _cv_step
from medrec.workflow.recipe import WorkflowConfig
from medrec.workflow.state import WorkflowState
from medrec.workflow.steps import _train_step


def _write_fold_splits(config: WorkflowConfig, run_dir: Path) -> None:
    """``RUN/folds/fold_i.splits.csv`` for every fold (:func:`medrec.split.held_out_fold_splits`).

    Rewritten only when the content changed, so a rerun leaves them untouched.
    """
    from medrec.manifest import read_manifest
    from medrec.split import held_out_fold_splits, read_splits

    manifest = read_manifest(run_dir / "index" / "manifest.csv")
    splits = read_splits(run_dir / "split" / "splits.csv")
    split = config.split
    for fold in range(int(split.folds or 0)):
        plan = held_out_fold_splits(splits, manifest, fold, val=split.val, stratify_by=split.stratify_by,
                                    seed=split.seed)
        text = plan.to_csv(index=False, lineterminator="\n")
        path = _fold_splits_path(run_dir, fold)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text(path, text)


def _scored_completely(predictions: Path) -> bool:
    from medrec.score import read_sidecar

    try:
        record = read_sidecar(predictions)
    except OutputError:
        return False
    return predictions.is_file() and record is not None and record.get("status") == "complete"


def _fold_score_step(config: WorkflowConfig, run_dir: Path, fold: int) -> tuple[str, Callable[[], str]]:
    """Score fold ``fold``'s held-out samples (its run's ``test`` split) with its model; resumable."""
    from medrec.evaluate import evaluation_fingerprint

    fold_dir = _fold_dir(run_dir, fold)
    predictions = _fold_predictions_path(run_dir, fold)
    options = config.evaluation
    fingerprint = evaluation_fingerprint(fold_dir, options.model_dump(mode="json",
                                                                      include={"batch_size", "workers", "tta"}))

    def run() -> str:
        from medrec.evaluate import test_manifest
        from medrec.score import ScoreOptions, load_scoring_run, read_sidecar, score_manifest
        from medrec.score.operating_point import TTA_SOURCE_MARK

        held_out = test_manifest(fold_dir)
        run, model_hash = load_scoring_run(fold_dir)
        # as medrec.evaluate: rows of other weights or another TTA setting are replaced, not mixed in
        previous = read_sidecar(predictions)
        stale = previous is not None and (
            previous.get("model_sha256") != model_hash or bool(previous.get("tta")) != options.tta
            or (options.tta and TTA_SOURCE_MARK not in str(previous.get("threshold_source"))))
        score_options = ScoreOptions(batch_size=options.batch_size, workers=options.workers, tta=options.tta,
                                     overwrite=stale)
        # the same description as 'medrec evaluate', which can add the fold's own report later
        score_manifest(run, held_out, predictions, score_options, model_sha256=model_hash,
                       input_description={"kind": "test split", "run_dir": str(fold_dir.resolve()),
                                          "samples": len(held_out)})
        return f"{len(held_out)} held-out samples scored"

    return fingerprint, run


def _cross_validate(config: WorkflowConfig, folder: Path, state: WorkflowState,
                    step: Callable[[str, str, Callable[[], str], bool], None]) -> None:
    """The fold steps and the pooling step of a cross-validated recipe (see the :mod:`medrec.workflow` docstring)."""
    from medrec.rundir import is_complete
    from medrec.split import read_splits

    locked = int((read_splits(folder / "split" / "splits.csv")["split"] == "test").sum())
    if locked:
        console.print(f"cross-validation over {config.split.folds} folds; the locked test split ({locked} samples, "
                      "split.test) is held out and never used by it")
    else:
        console.print(f"cross-validation over {config.split.folds} folds of every labelled sample (split.test: 0, "
                      "no locked test split)")
    _write_fold_splits(config, folder)
    for fold in range(int(config.split.folds or 0)):
        fold_dir = _fold_dir(folder, fold)
        fingerprint, action, _ = _train_step(config, folder, fold=fold)
        name = f"{fold_dir.name}/train"
        complete = is_complete(fold_dir)
        if complete and not state.is_current(name, fingerprint):
            raise OutputError(
                f"{fold_dir}: holds a finished training run of fold {fold} made from a different recipe or data; "
                "choose another output folder (-o) or delete this one"
            )
        step(name, fingerprint, action, complete)
        fingerprint, action = _fold_score_step(config, folder, fold)
        step(f"{fold_dir.name}/score", fingerprint, action, _scored_completely(_fold_predictions_path(folder, fold)))
    fingerprint, action = _cv_step(config, folder)
    outputs = [folder / CV_DIR / CV_PREDICTIONS_CSV, folder / CV_DIR / CV_FOLDS_CSV,
               folder / CV_DIR / CV_REPORT_DIR / "report.json"]
    step("cv", fingerprint, action, all(path.is_file() for path in outputs))
