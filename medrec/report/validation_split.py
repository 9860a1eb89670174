"""The run's validation split beside the test set: the figures the model was tuned on, next to the result.

Training chose the best epoch, the calibration temperature and the operating threshold on the
validation split (``RUN/val_predictions.csv``: sample, label, calibrated positive-class score).
Its AUC, sensitivity and specificity at the report's operating threshold are therefore
optimistic; printed beside the test set's, a large gap shows how much of the validation result
was tuning. Intervals use the report's own methods (Wilson or Clopper-Pearson for proportions,
:func:`medrec.report.stats.auc_ci` for the AUC), with samples as units: the validation file holds
no patient ids.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrec.report import stats
from medrec.thresholds import is_positive

VAL_PREDICTIONS_CSV = "val_predictions.csv"


def _proportion(successes: int, total: int, ci_method: str) -> dict[str, Any]:
    lower, upper = stats.proportion_ci(successes, total, ci_method)
    value = successes / total if total else math.nan
    return {"value": value, "ci95": [lower, upper], "count": f"{successes}/{total}"}


def validation_results(run_dir: Path | None, threshold: float | None, positive_class: str | None,
                       ci_method: str = "wilson") -> dict[str, Any] | None:
    """AUC, sensitivity and specificity of the run's validation split at ``threshold``.

    Args:
        run_dir: the run directory (None: no run, no result).
        threshold: the report's operating threshold (None: multi-class, no result).
        positive_class: the run's positive class, as its validation file writes labels.
        ci_method: ``wilson`` or ``clopper-pearson`` for sensitivity and specificity.

    Returns:
        ``{"n", "n_positive", "n_negative", "threshold", "metrics": {auc, sensitivity,
        specificity}}`` (each ``{value, ci95, ...}``), or None when there is no validation file, no
        threshold or not both classes in it.
    """
    if run_dir is None or threshold is None or positive_class is None:
        return None
    path = Path(run_dir) / VAL_PREDICTIONS_CSV
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"sample_id": str, "label": str}, keep_default_na=False)
    if not {"label", "score"} <= set(frame.columns):
        return None
    scores = pd.to_numeric(frame["score"], errors="coerce").to_numpy(dtype=np.float64)
    keep = np.isfinite(scores)
    truth = (frame["label"].astype(str).str.strip() == str(positive_class)).to_numpy()[keep]
    scores = scores[keep]
    n_positive, n_negative = int(truth.sum()), int((~truth).sum())
    if n_positive == 0 or n_negative == 0:
        return None
    called = is_positive(scores, float(threshold))
    auc = stats.auc_ci(truth.astype(np.int8), scores)
    return {
        "n": int(truth.size),
        "n_positive": n_positive,
        "n_negative": n_negative,
        "threshold": float(threshold),
        "metrics": {
            "auc": {"value": auc.value, "ci95": [auc.ci[0], auc.ci[1]], "method": auc.method},
            "sensitivity": _proportion(int((called & truth).sum()), n_positive, ci_method),
            "specificity": _proportion(int((~called & ~truth).sum()), n_negative, ci_method),
        },
    }
