"""Pooling a cross-validation: the folds' held-out predictions into one table with one threshold (the
median of the folds'), its report, and the per-fold table of AUC, sensitivity and specificity.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medrec.atomicio import write_csv, write_text
from medrec.errors import OutputError
from medrec.hashing import sha256_file, sha256_json
from medrec.workflow.layout import (
    CV_DIR,
    CV_FOLDS_CSV,
    CV_FOLDS_JSON,
    CV_PREDICTIONS_CSV,
    CV_REPORT_DIR,
    FOLDS_DIR,
    _fold_predictions_path,
)
from medrec.workflow.recipe import WorkflowConfig

CV_ACCEPTANCE_CAVEAT = ("judged on the pooled out-of-fold predictions of {folds} models (cross-validation, a "
                        "development estimate); criteria written for a locked test split are judged there")
FOLD_METRICS: tuple[str, ...] = ("auc", "sensitivity", "specificity")


def _fold_metrics(frame: Any, record: dict[str, Any], fold: int) -> dict[str, Any]:
    """AUC, sensitivity and specificity of one fold's held-out predictions at the fold's own threshold.

    Multi-class folds: macro one-vs-rest AUC and the mean over classes of sensitivity and
    specificity of the argmax decision.
    """
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    usable = frame[(frame["error"].str.strip() == "") & (frame["label"].str.strip() != "")]
    labels = usable["label"].str.strip().to_numpy()
    row: dict[str, Any] = {"fold": fold, "n_samples": len(usable), "n_patients": int(usable["patient_id"].nunique()),
                           "threshold": record.get("threshold")}
    classes = [str(name) for name in record.get("classes") or sorted(set(labels))]
    positive, threshold = record.get("positive_class"), record.get("threshold")
    nan = float("nan")
    if positive is not None and threshold is not None:
        truth = labels == str(positive)
        scores = pd.to_numeric(usable["score"]).to_numpy(dtype=float)
        called = scores >= float(threshold)
        n_positive, n_negative = int(truth.sum()), int((~truth).sum())
        row.update(
            n_positive=n_positive,
            auc=float(roc_auc_score(truth, scores)) if n_positive and n_negative else nan,
            sensitivity=float((called & truth).sum() / n_positive) if n_positive else nan,
            specificity=float((~called & ~truth).sum() / n_negative) if n_negative else nan,
        )
        return row
    probabilities = usable[[f"score_{name}" for name in classes]].apply(pd.to_numeric).to_numpy(dtype=float)
    called = np.asarray(classes)[probabilities.argmax(axis=1)]
    present = [name for name in classes if (labels == name).any()]
    sensitivity = [float(((called == name) & (labels == name)).sum() / (labels == name).sum()) for name in present]
    specificity = [float(((called != name) & (labels != name)).sum() / (labels != name).sum())
                   for name in present if (labels != name).any()]
    try:
        auc = float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro", labels=classes))
    except ValueError:  # a class absent from the fold
        auc = nan
    row.update(n_positive=None, auc=auc, sensitivity=float(np.mean(sensitivity)) if sensitivity else nan,
               specificity=float(np.mean(specificity)) if specificity else nan)
    return row


def fold_spread(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean and sample SD (ddof 1) over folds of each of :data:`FOLD_METRICS` (folds without a value skipped)."""
    import numpy as np

    spread: dict[str, dict[str, float | None]] = {}
    for name in FOLD_METRICS:
        values = np.asarray([row.get(name) for row in rows], dtype=float)
        values = values[np.isfinite(values)]
        spread[name] = {"mean": float(values.mean()) if len(values) else None,
                        "sd": float(values.std(ddof=1)) if len(values) > 1 else None, "n_folds": int(len(values))}
    return spread


def _pooled_record(records: Sequence[dict[str, Any]], predictions: Sequence[Path], columns: Sequence[str]) -> dict:
    """The sidecar of the pooled predictions: the folds' label space and the median of their thresholds."""
    import statistics

    from medrec.score.operating_point import TTA_SOURCE_MARK

    first = records[0]
    thresholds = [record.get("threshold") for record in records]
    if all(value is not None for value in thresholds):
        threshold = float(statistics.median(float(value) for value in thresholds))
        listed = " / ".join(f"{float(value):.4g}" for value in thresholds)
        # 'run: ... chosen on validation' is how medrec.report reads a threshold frozen before scoring
        source = (f"run: median of the {len(records)} folds' thresholds ({listed}) each chosen on validation in its "
                  f"fold{' ' + TTA_SOURCE_MARK if first.get('tta') else ''}")
    else:
        threshold, source = None, "argmax (multi-class)"
    return {
        "medrec_version": first.get("medrec_version"),
        "classes": first.get("classes"),
        "positive_class": first.get("positive_class"),
        "threshold": threshold,
        "threshold_source": source,
        "fold_thresholds": thresholds,
        "fold_model_sha256": [record.get("model_sha256") for record in records],
        "level": first.get("level"),
        "aggregate": first.get("aggregate"),
        "tta": first.get("tta"),
        "input": {"kind": "cross-validation", "folds": len(records), "fold_predictions": [str(p) for p in predictions]},
        "columns": list(columns),
        "status": "complete",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cv_step(config: WorkflowConfig, run_dir: Path) -> tuple[str, Callable[[], str]]:
    """Pool the folds' held-out predictions, tabulate each fold, and report the pooled predictions."""
    folds = int(config.split.folds or 0)
    paths = [_fold_predictions_path(run_dir, fold) for fold in range(folds)]
    manifest = run_dir / "index" / "manifest.csv"

    def threshold_of(path: Path) -> Any:
        from medrec.score import read_sidecar

        return (read_sidecar(path) or {}).get("threshold") if path.is_file() else None

    fingerprint = sha256_json({
        "predictions": [sha256_file(p) if p.is_file() else None for p in paths],
        "thresholds": [threshold_of(p) for p in paths],
        "manifest": sha256_file(manifest) if manifest.is_file() else None,
        "evaluation": config.evaluation.model_dump(mode="json"),
    })

    def run() -> str:
        import pandas as pd

        from medrec.evaluate import RECIPE_ACCEPTANCE
        from medrec.report.build import write_report
        from medrec.score import read_sidecar
        from medrec.score.writer import write_sidecar

        cv_dir = run_dir / CV_DIR
        frames, records, rows = [], [], []
        for fold, path in enumerate(paths):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            record = read_sidecar(path) or {}
            frames.append(frame.assign(fold=str(fold)))
            records.append(record)
            rows.append(_fold_metrics(frame, record, fold))
        pooled = pd.concat(frames, ignore_index=True)
        twice = pooled["sample_id"][pooled["sample_id"].duplicated()]
        if len(twice):
            raise OutputError(f"{run_dir / FOLDS_DIR}: sample {twice.iloc[0]} was held out by two folds; the fold "
                              f"splits are inconsistent: delete {run_dir / FOLDS_DIR} and run again")
        predictions = cv_dir / CV_PREDICTIONS_CSV
        write_csv(predictions, pooled)
        write_sidecar(predictions, _pooled_record(records, paths, pooled.columns))
        options = config.evaluation
        qc = run_dir / "index" / "qc.csv"
        report = write_report(predictions, cv_dir / CV_REPORT_DIR, manifest=manifest, qc=qc if qc.is_file() else None,
                              subgroups=options.subgroups, prevalence=options.prevalence, ci_method=options.ci_method,
                              n_boot=options.bootstrap, seed=options.seed,
                              title=f"Cross-validation report: pooled out-of-fold predictions of {folds} folds",
                              prevalence_source="recipe evaluation.prevalence", context=config.context,
                              acceptance=options.acceptance, acceptance_source=RECIPE_ACCEPTANCE,
                              acceptance_caveat=CV_ACCEPTANCE_CAVEAT.format(folds=folds))
        table = pd.DataFrame(rows, columns=["fold", "n_samples", "n_patients", "n_positive", "threshold",
                                            *FOLD_METRICS])
        spread = fold_spread(rows)
        write_csv(cv_dir / CV_FOLDS_CSV, table)
        write_csv(cv_dir / CV_REPORT_DIR / CV_FOLDS_CSV, table)
        write_text(cv_dir / CV_REPORT_DIR / CV_FOLDS_JSON, json.dumps({
            "folds": json.loads(table.to_json(orient="records", double_precision=15)),
            "spread": spread,
            "pooled_threshold": report.get("threshold"),
            "note": "each fold's metrics are at its own threshold, chosen on validation data carved from the other "
                    "folds; the pooled report uses the median of those thresholds",
        }, indent=2) + "\n")
        auc = report.get("metrics", {}).get("auc", {}).get("value")
        mean, sd = spread["auc"]["mean"], spread["auc"]["sd"]
        per_fold = f"; per fold {mean:.3f} ± {sd:.3f}" if mean is not None and sd is not None else ""
        return f"pooled AUC {auc:.3f}{per_fold}" if auc is not None else "report written"

    return fingerprint, run


def _read_folds_table(run_dir: Path) -> list[dict[str, Any]]:
    import pandas as pd

    table = pd.read_csv(run_dir / CV_DIR / CV_FOLDS_CSV)
    return json.loads(table.to_json(orient="records", double_precision=15))
