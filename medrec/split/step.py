"""The whole split step (``medrec split``, and training without a splits file): reuse a matching
``splits.csv`` or make new splits, audit them, then write them once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medrec.errors import ManifestError, OutputError
from medrec.split.audit import LeakageAudit, audit_leakage
from medrec.split.making import make_splits
from medrec.split.splits_file import check_splits_match, read_splits, splits_kind, wanted_kind, write_splits
from medrec.split.summary import split_summary


def _kind_text(kind: str) -> str:
    if kind == "holdout":
        return "train/val/test"
    count, _, test = kind.removeprefix("kfold:").partition("+")
    return f"{count}-fold" + (" + test" if test else "")


@dataclass
class SplitResult:
    """Outcome of :func:`ensure_splits`.

    Attributes:
        splits: ``sample_id, patient_id, split``.
        reused: an existing ``splits.csv`` was validated and kept.
        unlabelled: sample ids left out because they have no label.
        audit: the leakage audit's result.
        summary: counts per partition (see :func:`split_summary`).
    """

    splits: pd.DataFrame
    reused: bool
    unlabelled: list[str]
    audit: LeakageAudit
    summary: pd.DataFrame


def ensure_splits(
    manifest: pd.DataFrame,
    path: str | os.PathLike[str],
    val: float = 0.15,
    test: float = 0.2,
    folds: int | None = None,
    stratify_by: str | Sequence[str] | None = None,
    seed: int = 0,
    label_column: str = "label",
    overwrite: bool = False,
    check_pixels: bool = True,
    workers: int | None = None,
    max_bytes: int | None = None,
    on_hashed: Callable[[str], None] | None = None,
    positive_class: str | None = None,
) -> SplitResult:
    """Reuse ``path`` when it matches the manifest, else make, audit and write the splits.

    An existing file is validated (same labelled samples and patients, same kind of split:
    hold-out vs the requested number of folds) and audited, never rewritten; with ``overwrite``
    new splits replace it. New splits are audited before anything is written. ``positive_class``
    only names the positive class in the summary (see :func:`split_summary`).

    Raises:
        OutputError: an existing file does not match and ``overwrite`` is not set.
        LeakageError: the audit found a leak (nothing is written).
        ConfigError, ManifestError: see :func:`make_splits`.
    """
    target = Path(path)
    labels = manifest[label_column].fillna("").astype(str).str.strip() if label_column in manifest.columns else None
    unlabelled = [] if labels is None else manifest.loc[labels == "", "sample_id"].astype(str).tolist()
    reused = False
    if target.exists() and not overwrite:
        existing = read_splits(target)
        wanted = wanted_kind(folds, test)
        try:
            check_splits_match(existing, manifest, label_column)
            found = splits_kind(existing)
            if found != wanted:
                raise ManifestError(f"it holds a {_kind_text(found)} split, a {_kind_text(wanted)} split was asked for")
        except ManifestError as e:
            raise OutputError(
                f"{target}: existing splits file does not match this manifest ({e}); it is never overwritten "
                f"silently: pass --overwrite to replace it, or choose another -o path"
            ) from e
        splits = existing
        reused = True
    else:
        splits = make_splits(manifest, val=val, test=test, folds=folds, stratify_by=stratify_by, seed=seed,
                             label_column=label_column)
    audit = audit_leakage(manifest, splits, check_pixels=check_pixels, workers=workers, max_bytes=max_bytes,
                          on_hashed=on_hashed)
    if not reused:
        write_splits(splits, target)
    return SplitResult(splits=splits, reused=reused, unlabelled=unlabelled, audit=audit,
                       summary=split_summary(manifest, splits, label_column, positive_class))
