"""The steps of a run before evaluation: index, split and train (also a fold's training run).

Each step returns the fingerprint of what it consumes and the action that runs it; the runner
skips the action when the fingerprint is unchanged and the outputs exist.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medrec.atomicio import write_csv
from medrec.console import console
from medrec.errors import ConfigError
from medrec.hashing import sha256_file, sha256_json
from medrec.train.setup import label_text
from medrec.workflow.layout import _fold_dir, _fold_splits_path
from medrec.workflow.recipe import TRAIN_DATA_KEYS, WorkflowConfig, train_config_of
from medrec.workflow.state import folder_fingerprint

# data.unlabelled: normal: how the split step names the rows without a label (a stratum of their own).
UNLABELLED_STRATUM = "unlabelled (assumed normal)"


def _index_step(config: WorkflowConfig, run_dir: Path) -> tuple[str, Callable[[], str]]:
    from medrec.index import index_folder

    scans = config.data.scans
    if not scans.exists():
        raise ConfigError(f"data.scans: {scans} does not exist")
    fingerprint = sha256_json({
        "scans": folder_fingerprint(scans, skip=[run_dir]) if scans.is_dir() else sha256_file(scans),
        "labels": sha256_file(config.data.labels) if config.data.labels and config.data.labels.is_file() else None,
        "lesions": sha256_file(config.data.lesions) if config.data.lesions and config.data.lesions.is_file() else None,
        "settings": config.model_dump(mode="json", include={"data", "index"},
                                      exclude={"data": set(TRAIN_DATA_KEYS)}),
    })

    def run() -> str:
        from medrec.index import print_index_summary

        result = index_folder(scans, run_dir / "index", labels=config.data.labels, match_on=config.data.match_on,
                              rules=config.index.rules, workers=config.index.workers,
                              label_column=config.data.label_column, lesions=config.data.lesions)
        print_index_summary(result.summary)
        return f"{len(result.manifest)} samples, {len(result.qc)} excluded"

    return fingerprint, run


def _split_step(config: WorkflowConfig, run_dir: Path) -> tuple[str, Callable[[], str]]:
    manifest_path = run_dir / "index" / "manifest.csv"
    fingerprint = sha256_json({"manifest": sha256_file(manifest_path) if manifest_path.is_file() else None,
                                "split": config.split.model_dump(mode="json"),
                                # only when set: runs made before the setting keep their fingerprint
                                **({"unlabelled": "normal"} if config.data.unlabelled == "normal" else {})})

    def run() -> str:
        from medrec.console import print_summary
        from medrec.manifest import read_manifest
        from medrec.split import audit_leakage, make_splits, split_summary

        manifest = read_manifest(manifest_path)
        if config.data.unlabelled == "normal":  # split with the labelled rows, as a stratum of their own
            labels = label_text(manifest, "label")
            manifest["label"] = labels.where(labels != "", UNLABELLED_STRATUM)
        split = config.split
        splits = make_splits(manifest, val=split.val, test=split.test, folds=split.folds,
                             stratify_by=split.stratify_by, seed=split.seed)
        audit_leakage(manifest, splits, check_pixels=split.check_pixels)
        write_csv(run_dir / "split" / "splits.csv", splits)
        table = split_summary(manifest, splits, positive_class=config.data.positive_class)
        print_summary("patient-level split", table.itertuples(index=False), tuple(table.columns))
        counts = splits["split"].value_counts()
        return ", ".join(f"{name} {counts[name]}" for name in sorted(counts.index))

    return fingerprint, run


def _train_step(config: WorkflowConfig, run_dir: Path, fold: int | None = None) -> tuple[str, Callable[[], str], Any]:
    """The train step into ``run_dir``, or with ``fold`` into ``RUN/folds/fold_i`` on that fold's splits."""
    from medrec.rundir import has_started, is_complete

    train_dir, splits, source = run_dir, run_dir / "split" / "splits.csv", f"{run_dir / 'workflow.yaml'} (train step)"
    if fold is not None:
        train_dir, splits = _fold_dir(run_dir, fold), _fold_splits_path(run_dir, fold)
        source = f"{run_dir / 'workflow.yaml'} (fold {fold})"
    train_config = train_config_of(config, run_dir / "index" / "manifest.csv", splits, source=source)
    if fold is not None:  # recorded in the fold's config.yaml; its splits file already holds fold i out
        train_config = train_config.model_copy(update={"split": train_config.split.model_copy(update={"fold": fold})})
    inputs = [run_dir / "index" / "manifest.csv", splits,
              *(Path(p) for p in (train_config.data.lesions, train_config.data.masks) if p is not None)]
    fingerprint = sha256_json({
        "inputs": [sha256_file(p) if p.is_file() else None for p in inputs],
        "config": train_config.to_yaml_dict(),
    })

    def run() -> str:
        from medrec.train import train

        if fold is not None and _lost_weights(train_dir):
            console.print(f"[yellow]{train_dir.name}: its weights are gone but its checkpoint remains, so it cannot "
                          "resume; training the fold again from the start[/]")
            shutil.rmtree(train_dir)
        resume = has_started(train_dir) and not is_complete(train_dir)
        result = train(train_config, train_dir, resume=resume)
        auc = result.val_metrics.get("auc")
        if auc is None:
            return f"best epoch {result.best_epoch}"
        return f"best epoch {result.best_epoch}, val AUC {auc:.3f}"

    return fingerprint, run, train_config


def _lost_weights(train_dir: Path) -> bool:
    """A run with a checkpoint but no weights: finished, then its model was deleted (it cannot resume)."""
    from medrec.rundir import CHECKPOINT_STEM, MODEL_WEIGHTS

    return (train_dir / f"{CHECKPOINT_STEM}.json").is_file() and not (train_dir / MODEL_WEIGHTS).is_file()
