"""From a manifest and a splits table to labelled train / val / test sample lists."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from medrec.errors import ConfigError, LabelsError, ManifestError
from medrec.labels import resolve_positive

SPLIT_COLUMNS: tuple[str, ...] = ("sample_id", "patient_id", "split")


@dataclass(frozen=True)
class LabelSpace:
    """The classes in model-output order and the positive class (binary tasks only)."""

    classes: tuple[str, ...]
    positive_class: str | None

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @property
    def positive_index(self) -> int | None:
        return None if self.positive_class is None else self.classes.index(self.positive_class)

    def index_of(self, label: str) -> int:
        return self.classes.index(label)


def label_text(manifest: pd.DataFrame, label_column: str) -> pd.Series:
    """The labels as stripped text, ``""`` where a row has none (or the column is missing)."""
    if label_column not in manifest.columns:
        return pd.Series("", index=manifest.index, dtype=object)
    return manifest[label_column].fillna("").astype(str).str.strip()


def labelled_rows(manifest: pd.DataFrame, label_column: str) -> pd.DataFrame:
    """Rows with a non-empty label, with the label (as text) also under ``label``.

    Raises:
        ManifestError: the label column is missing or no row is labelled.
    """
    if label_column not in manifest.columns:
        raise ManifestError(
            f"manifest has no column {label_column!r} (data.label_column); columns: {', '.join(manifest.columns)}"
        )
    labels = label_text(manifest, label_column)
    frame = manifest.loc[labels != ""].copy()
    frame["label"] = labels[labels != ""]
    if frame.empty:
        raise ManifestError(
            f"no row of the manifest has a label in column {label_column!r}; index with --labels FILE"
        )
    return frame.reset_index(drop=True)


def label_space(labels: pd.Series, classes: tuple[str, ...] | None, positive_class: str | None) -> LabelSpace:
    """Decide the classes and the positive class.

    A binary task's positive class is ``positive_class`` when given, else the one that
    :func:`medrec.labels.resolve_positive` recognises (``tumor`` of ``normal`` / ``tumor``,
    ``lesion`` of ``lesion`` / ``none``).

    Raises:
        LabelsError: fewer than 2 classes, labels outside the configured classes, or two classes
            whose positive class the vocabulary cannot tell (and no positive_class).
        ConfigError: positive_class is not a class.
    """
    found = sorted(set(labels.astype(str)))
    if classes is None:
        classes = tuple(found)
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise LabelsError(
                f"labels {unknown} are not among data.classes {list(classes)}; add them or fix the labels file"
            )
    if len(classes) < 2:
        raise LabelsError(f"training needs at least 2 classes; the labelled rows only have {list(classes)}")
    if len(classes) > 2:
        return LabelSpace(tuple(classes), None)
    if positive_class is not None and positive_class not in classes:
        raise ConfigError(f"data.positive_class {positive_class!r} is not one of the classes {list(classes)}")
    positive_class = resolve_positive(
        classes, positive_class, source="training labels",
        fix="set data.positive_class in the recipe to the class whose probability the score should be")
    return LabelSpace(tuple(classes), positive_class)


def check_splits_table(splits: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate a splits table's columns and values.

    Raises:
        ManifestError: missing columns, duplicate sample ids or unknown split names.
    """
    missing = [c for c in SPLIT_COLUMNS if c not in splits.columns]
    if missing:
        raise ManifestError(f"{source}: splits table lacks column(s) {', '.join(missing)}")
    frame = splits.copy()
    frame["sample_id"] = frame["sample_id"].astype(str)
    frame["split"] = frame["split"].astype(str).str.strip()
    duplicated = frame.loc[frame["sample_id"].duplicated(), "sample_id"].tolist()
    if duplicated:
        raise ManifestError(f"{source}: sample ids listed twice: {duplicated[:5]}")
    bad = sorted({s for s in frame["split"] if s not in ("train", "val", "test") and not s.startswith("fold_")})
    if bad:
        raise ManifestError(f"{source}: unknown split names {bad}; expected train, val, test or fold_<k>")
    return frame


def partition(splits: pd.DataFrame, fold: int = 0) -> dict[str, list[str]]:
    """Sample ids of ``train``, ``val`` and ``test``.

    With fold columns (``fold_<k>``), ``fold_<fold>`` is validation and the other folds (plus any
    ``train`` rows) are training; ``test`` rows are held out either way.

    Raises:
        ConfigError: the requested fold is absent.
    """
    names = splits["split"]
    folds = sorted({s for s in names if s.startswith("fold_")})
    if folds:
        val_name = f"fold_{fold}"
        if val_name not in folds:
            raise ConfigError(f"split.fold {fold}: the splits have only {', '.join(folds)}")
        train_mask = names.isin([f for f in folds if f != val_name]) | (names == "train")
        val_mask = names == val_name
    else:
        train_mask, val_mask = names == "train", names == "val"
    ids = splits["sample_id"]
    return {
        "train": ids[train_mask].tolist(),
        "val": ids[val_mask].tolist(),
        "test": ids[names == "test"].tolist(),
    }


def check_partition(parts: dict[str, list[str]], labels: dict[str, str], space: LabelSpace,
                    splits: tuple[str, ...] = ("train", "val")) -> None:
    """Training and validation must hold every class (AUC, threshold and calibration need them).

    Args:
        splits: the splits to check (an anomaly detector trains on negatives: validation only).

    Raises:
        LabelsError: a class is missing from one of ``splits``.
    """
    for name in splits:
        present = {labels[s] for s in parts[name]}
        absent = [c for c in space.classes if c not in present]
        if absent:
            raise LabelsError(
                f"the {name} split has no sample of class(es) {absent} ({len(parts[name])} samples); "
                "use more patients, a larger split.val, or another split.seed"
            )
