"""Where a cross-validated run keeps its parts: one full run per fold under ``RUN/folds/``, the pooled
predictions, per-fold table and report under ``RUN/cv/``.
"""

from __future__ import annotations

from pathlib import Path

FOLDS_DIR = "folds"  # RUN/folds/fold_i/: one full run per cross-validation fold
CV_DIR = "cv"  # RUN/cv/: pooled out-of-fold predictions, per-fold table, report
CV_REPORT_DIR = "report"
CV_PREDICTIONS_CSV = "predictions.csv"
CV_FOLDS_CSV = "folds.csv"
CV_FOLDS_JSON = "folds.json"


def _fold_dir(run_dir: Path, fold: int) -> Path:
    from medrec.split import fold_name

    return run_dir / FOLDS_DIR / fold_name(fold)


def _fold_splits_path(run_dir: Path, fold: int) -> Path:
    from medrec.split import fold_name

    return run_dir / FOLDS_DIR / f"{fold_name(fold)}.splits.csv"


def _fold_predictions_path(run_dir: Path, fold: int) -> Path:
    from medrec.evaluate import EVALUATION_DIR

    return _fold_dir(run_dir, fold) / EVALUATION_DIR / CV_PREDICTIONS_CSV
