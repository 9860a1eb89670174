"""The run's label space in the report: its two classes and positive class, and how the predictions'
labels (in the vocabulary of the site that labelled the studies) map onto them.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from medrec.labels import map_to_classes


def run_label_space(record: Mapping | None) -> tuple[list[str], str] | None:
    """A binary run's ``(classes, positive class)`` as ``model.json`` or a predictions sidecar records
    them, or None when the record names no two classes and a positive class among them."""
    if not isinstance(record, Mapping):
        return None
    classes, positive = record.get("classes"), record.get("positive_class")
    if not isinstance(classes, list | tuple) or len(classes) != 2 or positive is None:
        return None
    names = [str(name) for name in classes]
    return (names, str(positive)) if str(positive) in names else None


def label_mapping(
    predictions: pd.DataFrame,
    space: tuple[list[str], str] | None,
    positive_label: str | None,
    source: str,
) -> tuple[dict[str, str], str | None]:
    """How the predictions' labels match the run's classes, and the positive label to analyse with.

    Args:
        predictions: the predictions table (its ``label`` column holds the reference standard, in
            the vocabulary of the site that labelled the studies).
        space: the run's ``(classes, positive class)`` (:func:`run_label_space`), or None.
        positive_label: an explicit positive class among the predictions' labels, or None.
        source: the predictions file's name, for error messages.

    Returns:
        ``(mapping, positive_label)``: ``mapping`` is ``{label: run class}`` when the labels are not
        the run's class names (matched by polarity, :func:`medrec.labels.map_to_classes`), else
        empty; ``positive_label`` is the label text of the positive class (None: let the analysis
        recognise it).

    Raises:
        LabelsError: the labels cannot be matched to the run's classes (names both vocabularies).
    """
    if space is None:
        return {}, positive_label
    classes, run_positive = space
    labels = predictions["label"].astype(str).str.strip()
    labels = labels[(labels != "") & ~labels.str.lower().isin({"nan", "null"})]
    mapping = map_to_classes(
        labels, classes, run_positive, positive=positive_label, source=source,
        fix="relabel the predictions with the run's classes, or use labels whose meaning is recognised "
            "(0 / 1, normal / tumor, negative / positive, ...)")
    if all(label == name for label, name in mapping.items()):
        return {}, positive_label if positive_label is not None else run_positive
    site_positive = next((label for label, name in mapping.items() if name == run_positive), None)
    return mapping, site_positive or positive_label or run_positive
