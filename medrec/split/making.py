"""Making splits: patients grouped (merged when they share a study), stratified by label and chosen
columns, carved into train / val / test or k folds; and the inner split of one cross-validation fold.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from medrec.errors import ConfigError, LabelsError, ManifestError
from medrec.split.cohort import _labelled
from medrec.split.splits_file import fold_name, splits_kind

MAX_FOLDS_FOR_FRACTION = 10


def _check_columns(manifest: pd.DataFrame, columns: Sequence[str]) -> None:
    for column in columns:
        if column not in manifest.columns:
            close = difflib.get_close_matches(column, list(manifest.columns), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; available: {', '.join(manifest.columns)}"
            raise ConfigError(f"--stratify-by {column!r} is not a manifest column{hint}")


def patient_groups(manifest: pd.DataFrame) -> pd.Series:
    """Group key per row: the patient id, with patients that share a study_uid merged into one group."""
    parent: dict[str, str] = {}

    def find(item: str) -> str:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for patient in manifest["patient_id"]:
        find(patient)
    if "study_uid" in manifest.columns:
        studies = manifest[manifest["study_uid"].fillna("").astype(str) != ""]
        for _, patients in studies.groupby(studies["study_uid"].astype(str))["patient_id"]:
            first, *others = list(dict.fromkeys(patients))
            for other in others:
                parent[find(other)] = find(first)
    return manifest["patient_id"].map(find)


def _strata(manifest: pd.DataFrame, label_column: str, stratify_by: Sequence[str]) -> np.ndarray:
    key = manifest[label_column].astype(str)
    for column in stratify_by:
        key = key + "|" + manifest[column].fillna("").astype(str)
    return key.to_numpy()


def fraction_as_folds(fraction: float, n_groups: int) -> tuple[int, int]:
    """``(m, k)``: take ``m`` of ``k`` group folds to realise ``fraction`` (``k <= min(10, n_groups)``)."""
    best: tuple[float, int, int] | None = None
    for k in range(2, min(MAX_FOLDS_FOR_FRACTION, n_groups) + 1):
        for m in range(1, k):
            error = abs(m / k - fraction)
            if best is None or error < best[0] - 1e-12:
                best = (error, m, k)
    if best is None:
        raise ConfigError(f"need at least 2 patients to carve a partition, got {n_groups}")
    return best[1], best[2]


def _group_folds(strata: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_folds`` stratified group folds (shuffled, seeded).

    scikit-learn refuses more folds than the largest stratum has members; such tiny cohorts are
    split by group alone (stratification cannot help them anyway).
    """
    _, counts = np.unique(strata, return_counts=True)
    labels = strata if counts.max() >= n_folds else np.zeros(len(strata), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        return [rows for _, rows in splitter.split(np.zeros(len(groups)), labels, groups)]


def _carve(strata: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows carved out (about ``fraction`` of the groups, stratified)."""
    m, k = fraction_as_folds(fraction, len(np.unique(groups)))
    mask = np.zeros(len(groups), dtype=bool)
    for fold_rows in _group_folds(strata, groups, k, seed)[:m]:
        mask[fold_rows] = True
    return mask


def make_splits(
    manifest: pd.DataFrame,
    val: float = 0.15,
    test: float = 0.2,
    folds: int | None = None,
    stratify_by: str | Sequence[str] | None = None,
    seed: int = 0,
    label_column: str = "label",
) -> pd.DataFrame:
    """Split labelled samples by patient into train/val/test or k folds, stratified by label.

    Args:
        manifest: the manifest (needs ``sample_id``, ``patient_id``, the label column; ``study_uid``
            is used to merge patients that share a study).
        val: fraction of patients for validation (hold-out only; ignored with ``folds``).
        test: fraction of patients held out for testing (0 for none); with ``folds`` the test
            patients are carved first and the folds are made from the rest.
        folds: k-fold cross-validation (``fold_0`` .. ``fold_{k-1}``) instead of train/val.
        stratify_by: further manifest column(s) to stratify on (e.g. ``manufacturer``).
        seed: seeds the shuffling; the same seed gives the same splits.
        label_column: the manifest column holding labels; rows with an empty label are left out.

    Returns:
        DataFrame ``sample_id, patient_id, split`` in manifest order, with split in
        ``train|val|test``, or ``fold_0..fold_{k-1}`` (plus ``test`` when ``test > 0``).

    Raises:
        ConfigError: invalid fractions / fold count, too few patients, unknown stratify column.
        ManifestError: missing columns, duplicate sample ids, samples without patient_id.
    """
    columns = [stratify_by] if isinstance(stratify_by, str) else list(stratify_by or [])
    _check_columns(manifest, columns)
    labelled = _labelled(manifest, label_column)
    if labelled.empty:
        raise ManifestError(
            f"no sample has a label in column {label_column!r}; pass labels to 'medrec index --labels FILE'"
        )
    groups = patient_groups(labelled).to_numpy()
    strata = _strata(labelled, label_column, columns)
    n_groups = len(np.unique(groups))
    for name, value in (("val", val), ("test", test)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"--{name} must be in [0, 1), got {value}")
    split = np.full(len(labelled), "train", dtype=object)
    remaining = np.ones(len(labelled), dtype=bool)
    if folds is not None:
        if int(folds) != folds or folds < 2:
            raise ConfigError(f"--folds must be an integer >= 2, got {folds}")
        folds = int(folds)
        if n_groups < folds + (test > 0):
            raise ConfigError(
                f"--folds {folds}{f' with --test {test}' if test > 0 else ''} needs at least {folds + (test > 0)} "
                f"patients, the manifest has {n_groups}"
            )
    else:
        if val + test >= 1.0:
            raise ConfigError(f"--val {val} + --test {test} leaves no patients for training; keep the sum below 1")
        needed = 1 + (val > 0) + (test > 0)
        if n_groups < needed:
            raise ConfigError(f"a train/val/test split needs at least {needed} patients, the manifest has {n_groups}")
    if test > 0:
        carved = _carve(strata, groups, test, seed)
        split[carved] = "test"
        remaining &= ~carved
    rest = np.flatnonzero(remaining)
    if folds is not None:
        if len(np.unique(groups[rest])) < folds:
            raise ConfigError(f"too few patients left after the test split for {folds} folds; lower --test or --folds")
        for index, fold_rows in enumerate(_group_folds(strata[rest], groups[rest], folds, seed + 1)):
            split[rest[fold_rows]] = fold_name(index)
    elif val > 0:
        if len(np.unique(groups[rest])) < 2:
            raise ConfigError("too few patients left after the test split to carve a validation split")
        carved = _carve(strata[rest], groups[rest], val / (1.0 - test), seed + 1)
        split[rest[carved]] = "val"
    return pd.DataFrame({
        "sample_id": labelled["sample_id"].to_numpy(),
        "patient_id": labelled["patient_id"].to_numpy(),
        "split": split.astype(str),
    })


def held_out_fold_splits(
    splits: pd.DataFrame,
    manifest: pd.DataFrame,
    fold: int,
    val: float = 0.15,
    stratify_by: str | Sequence[str] | None = None,
    seed: int = 0,
    label_column: str = "label",
) -> pd.DataFrame:
    """The train / val / test splits of one cross-validation fold, with fold ``fold`` held out as ``test``.

    Out-of-fold predictions must come from a model that was neither fitted nor tuned on them, as in
    scikit-learn's ``cross_val_predict``. Training here tunes on its validation split (early stopping,
    operating threshold, calibration), so the held-out fold cannot be that split: it becomes the
    run's ``test``, and ``val`` (a fraction of the patients, stratified) is carved from the other
    folds, which train. A locked ``test`` split of ``splits`` is left out of every partition:
    cross-validation never touches it.

    Args:
        splits: k-fold splits (``fold_0 .. fold_{k-1}``, optionally ``test``) from :func:`make_splits`.
        manifest: the manifest the splits were made from.
        fold: the fold to hold out.
        val: fraction of the training folds' patients for validation.
        stratify_by: further manifest column(s) to stratify the validation carve on.
        seed: seeds the validation carve.
        label_column: the manifest's label column.

    Returns:
        DataFrame ``sample_id, patient_id, split`` (``train|val|test``) without the locked test rows.

    Raises:
        ConfigError: ``splits`` are not k-fold splits or lack ``fold``; too few patients in the
            training folds to carve a validation split.
        LabelsError: a class is missing from the training or the validation split of the fold.
    """
    kind = splits_kind(splits)
    if not kind.startswith("kfold:"):
        raise ConfigError(f"cross-validation needs k-fold splits (fold_0, fold_1, ...), got {kind} splits; "
                          "split with split.folds K")
    held_out = fold_name(fold)
    names = splits["split"].astype(str)
    if held_out not in set(names):
        raise ConfigError(f"fold {fold}: the splits have no {held_out} (they have {kind[len('kfold:'):]} folds)")
    training_ids = set(splits.loc[names.str.startswith("fold_") & (names != held_out), "sample_id"].astype(str))
    training_rows = manifest[manifest["sample_id"].astype(str).isin(training_ids)]
    try:
        inner = make_splits(training_rows, val=val, test=0.0, stratify_by=stratify_by, seed=seed,
                            label_column=label_column)
    except ConfigError as e:
        raise ConfigError(f"fold {fold}: cannot carve a validation split from the other folds ({e}); "
                          "use fewer folds or more patients") from e
    # training needs every class in train and in val; say so now, not after the earlier folds trained
    labels = inner["sample_id"].map(_labelled(training_rows, label_column).set_index("sample_id")[label_column])
    for name in ("train", "val"):
        missing = sorted(set(labels) - set(labels[inner["split"] == name]))
        if missing:
            raise LabelsError(
                f"fold {fold}: the {name} split carved from the other folds has no sample of class(es) {missing} "
                f"({int((inner['split'] == name).sum())} samples); use more patients, fewer folds, a larger split.val "
                "or another split.seed")
    held = splits.loc[names == held_out, ["sample_id", "patient_id"]].assign(split="test")
    return pd.concat([inner, held], ignore_index=True).astype(str)
