"""The split summary: counts per partition of patients, studies, samples and positives (or of each
class, with more than two), in display order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from medrec.errors import LabelsError
from medrec.labels import distinct_labels, positive_labels
from medrec.split.cohort import _without_split
from medrec.split.splits_file import HOLDOUT_NAMES


def split_order(names: Iterable[str]) -> list[str]:
    """Partition names in display order: train, val, test, then fold_0, fold_1, ..."""
    unique = set(names)
    holdout = [n for n in HOLDOUT_NAMES if n in unique]
    rest = sorted(unique - set(holdout), key=lambda n: (len(n), n))
    return holdout + rest


def split_summary(
    manifest: pd.DataFrame,
    splits: pd.DataFrame,
    label_column: str = "label",
    positive_class: str | None = None,
) -> pd.DataFrame:
    """Counts per partition: patients, studies, samples, positives (and a ``total`` row).

    Splitting does not depend on which label is positive: when two labels leave the positive
    class undecided (and no ``positive_class`` names it), the positives columns read ``-``. With
    more than two classes there is no positive class: the columns after ``samples`` count the
    samples of each class instead (one column per class, named by it).
    """
    merged = splits[["sample_id", "split"]].astype(str).merge(_without_split(manifest), on="sample_id", how="left")
    merged[label_column] = merged[label_column].fillna("").astype(str)
    classes = distinct_labels(merged[label_column])
    if len(classes) > 2:
        return _class_counts(merged, label_column, classes)
    try:
        positives: set[str] | None = positive_labels(merged[label_column], positive_class)
    except LabelsError:
        positives = None
    study = merged["study_uid"].astype(str) if "study_uid" in merged.columns else merged["sample_id"]
    merged = merged.assign(_study=study, _positive=merged[label_column].str.strip().isin(positives or set()))
    rows = []
    for name in [*split_order(merged["split"]), "total"]:
        part = merged if name == "total" else merged[merged["split"] == name]
        rows.append({
            "split": name,
            "patients": int(part["patient_id"].nunique()),
            "studies": int(part["_study"].nunique()),
            "samples": len(part),
            "positives": int(part["_positive"].sum()) if positives is not None else "-",
            "positive_fraction": f"{part['_positive'].mean():.3f}" if len(part) and positives is not None else "-",
        })
    return pd.DataFrame(rows)


def _class_counts(merged: pd.DataFrame, label_column: str, classes: Sequence[str]) -> pd.DataFrame:
    """:func:`split_summary` of a multi-class cohort: samples of each class per partition."""
    study = merged["study_uid"].astype(str) if "study_uid" in merged.columns else merged["sample_id"]
    labels = merged[label_column].str.strip()
    rows = []
    for name in [*split_order(merged["split"]), "total"]:
        mask = pd.Series(True, index=merged.index) if name == "total" else merged["split"] == name
        row: dict[str, object] = {"split": name, "patients": int(merged.loc[mask, "patient_id"].nunique()),
                                  "studies": int(study[mask].nunique()), "samples": int(mask.sum())}
        for label in classes:
            row[label if label not in row else f"label {label}"] = int((labels[mask] == label).sum())
        rows.append(row)
    return pd.DataFrame(rows)
