"""The reference standard of a report: the predictions' own labels, or a labels file matched when the report is made.

``medrec report --labels FILE`` replaces the predictions' ``label`` column with the labels of FILE,
matched the way ``medrec index`` and ``medrec score --labels`` match them
(:mod:`medrec.index.labels`: by ``study_uid``, ``accession``, ``path`` or ``patient_id``, the key
detected or given with ``--match-on``). The labels are matched to the scored *samples*:

* series-level predictions: one row per sample, matched directly;
* study- or patient-level predictions (``sample_ids`` lists each row's samples): the samples come from
  the samples file that scoring kept beside the predictions, and each row gets the label of its
  samples (:func:`medrec.labels.group_label`, the rule scoring applies).

Prediction rows carry ``patient_id`` and ``study_uid`` only; ``path`` and ``accession`` are taken from
the manifest the predictions were scored from (the predictions sidecar records it, or ``--manifest``).
Rows no label matches keep an empty label (counted as "no label" by the analysis).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from medrec.errors import LabelsError
from medrec.index.labels import match_samples, read_labels
from medrec.labels import distinct_labels, group_label, map_to_classes, resolve_positive

IDENTITY_COLUMNS: tuple[str, ...] = ("sample_id", "patient_id", "study_uid")
MANIFEST_KEY_COLUMNS: tuple[str, ...] = ("series_uid", "accession", "path", "format", "files")
PREDICTIONS_REFERENCE = ("the label column of the predictions (from the labels file given to 'medrec index' or "
                         "'medrec score')")


@dataclass(frozen=True)
class ReferenceStandard:
    """Where a report's labels came from when a labels file was given to ``medrec report``.

    Attributes:
        file: the labels file's name (never its folder: folders can be named after patients).
        match_on: the key the labels were matched by.
        rows_labelled: prediction rows that received a label.
        rows_unlabelled: prediction rows left without one.
        samples_conflicting: scored samples whose label rows disagree (left without a label).
        label_rows_unmatched: label rows that match no scored sample.
        label_rows_empty: label rows with an empty label.
    """

    file: str
    match_on: str
    rows_labelled: int
    rows_unlabelled: int
    samples_conflicting: int
    label_rows_unmatched: int
    label_rows_empty: int

    def summary(self) -> str:
        """One line for the provenance table and the console."""
        return (f"{self.file}, matched by {self.match_on} when the report was made: {self.rows_labelled} of "
                f"{self.rows_labelled + self.rows_unlabelled} prediction rows labelled, {self.samples_conflicting} "
                f"samples with conflicting labels, {self.label_rows_unmatched} label rows matching no scored sample")

    def method(self) -> str:
        """The reference-standard sentence of the methods section."""
        return (f"the labels file {self.file}, matched to the scored samples by {self.match_on} when the report was "
                "made (it replaces the predictions' own label column); samples whose label rows disagree and rows "
                "it does not label are counted as 'no label'")

    def as_dict(self) -> dict:
        return asdict(self) | {"summary": self.summary(), "method": self.method()}


def scored_samples(
    predictions: pd.DataFrame,
    samples_file: Path | None,
    manifest: pd.DataFrame | None,
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The scored samples to match labels to, and the samples behind each prediction row.

    Args:
        predictions: the predictions table.
        samples_file: the sample-level rows that scoring keeps beside study / patient-level predictions.
        manifest: the manifest the predictions were scored from (adds ``accession``, ``path``, ``files``).

    Returns:
        ``(samples, members)``: one row per sample (``sample_id``, ``patient_id``, ``study_uid`` and the
        manifest's key columns where known) and ``{prediction sample_id: [sample ids]}``.
    """
    ids = predictions["sample_id"].astype(str)
    grouped = "sample_ids" in predictions.columns and predictions["sample_ids"].astype(str).str.strip().ne("").any()
    members = {sample: [sample] for sample in ids}
    samples = predictions[[c for c in IDENTITY_COLUMNS if c in predictions.columns]].astype(str)
    if grouped:
        listed = {sample: [m for m in str(cell).split(";") if m] or [sample]
                  for sample, cell in zip(ids, predictions["sample_ids"], strict=True)}
        wanted = {m for group in listed.values() for m in group}
        found = None
        if samples_file is not None and samples_file.is_file():
            found = pd.read_csv(samples_file, dtype=str, keep_default_na=False)
        elif manifest is not None:
            found = manifest
        if found is not None and wanted <= set(found["sample_id"].astype(str)):
            members = listed
            found = found[found["sample_id"].astype(str).isin(wanted)]
            samples = found[[c for c in IDENTITY_COLUMNS if c in found.columns]].astype(str)
    if manifest is not None and "sample_id" in manifest.columns:
        extra = [c for c in MANIFEST_KEY_COLUMNS if c in manifest.columns and c not in samples.columns]
        right = manifest[["sample_id", *extra]].astype(str).drop_duplicates("sample_id")
        samples = samples.merge(right, on="sample_id", how="left").fillna("")
    return samples.drop_duplicates("sample_id").reset_index(drop=True), members


def _site_positive(values: list[str], space: tuple[list[str], str] | None) -> str | None:
    """The label text of the positive class among the site's labels, when it can be told."""
    try:
        if space is not None:
            classes, run_positive = space
            mapping = map_to_classes(values, classes, run_positive)
            return next((label for label, name in mapping.items() if name == run_positive), None)
        return resolve_positive(values) if len(values) == 2 else None
    except LabelsError:
        return None  # the analysis reports ambiguous labels with its own message


def attach_labels(
    predictions: pd.DataFrame,
    labels: Path,
    *,
    match_on: str | None = None,
    label_column: str = "label",
    samples_file: Path | None = None,
    manifest: pd.DataFrame | None = None,
    scans_root: Path | None = None,
    space: tuple[list[str], str] | None = None,
) -> tuple[pd.DataFrame, ReferenceStandard]:
    """The predictions with their ``label`` column replaced by the labels of ``labels``.

    Args:
        predictions: the predictions table (as :func:`medrec.report.build.read_predictions` reads it).
        labels: the labels file (CSV / TSV with a label column and a key column).
        match_on: ``patient_id``, ``study_uid``, ``accession`` or ``path``; None: the key that matches
            most samples.
        label_column: the labels file's label column.
        samples_file: the samples file of study / patient-level predictions.
        manifest: the manifest the predictions were scored from.
        scans_root: the scanned folder (relative ``path`` cells are resolved against it).
        space: the run's ``(classes, positive class)``: which site label is positive when a study's
            samples disagree.

    Returns:
        ``(predictions, reference)``.

    Raises:
        LabelsError: the labels file is unusable, cannot be matched by the key (``path`` and
            ``accession`` need the manifest), or matches none of the predictions.
    """
    table = read_labels(labels, label_column)
    samples, members = scored_samples(predictions, samples_file, manifest)
    try:
        match = match_samples(table, samples, match_on, scans_root)
    except LabelsError as e:
        if manifest is None and ({"accession", "path"} & set(table.key_columns)):
            raise LabelsError(f"{e}; pass --manifest MANIFEST (the manifest the predictions were scored from) to "
                              "match by accession or path") from e
        raise
    sample_labels = match.labels
    positive = _site_positive(distinct_labels(sample_labels.values()), space)
    classes = [name for name in distinct_labels(sample_labels.values()) if name != positive] + (
        [positive] if positive is not None else [])
    row_labels = [group_label([sample_labels.get(m, "") for m in members[str(sample)]],
                              classes if positive is not None else (), positive)
                  for sample in predictions["sample_id"].astype(str)]
    labelled = sum(1 for label in row_labels if label)
    if not labelled:
        key = match.match_on
        raise LabelsError(
            f"{table.path}: matches none of the {len(predictions)} prediction rows by {key} "
            f"({len(match.unmatched_rows)} label rows match no scored sample); check the key column or pass "
            "--match-on patient_id|study_uid|accession|path"
        )
    reference = ReferenceStandard(
        file=table.path.name, match_on=match.match_on, rows_labelled=labelled,
        rows_unlabelled=len(row_labels) - labelled, samples_conflicting=len(match.conflicts),
        label_rows_unmatched=int(len(match.unmatched_rows)), label_rows_empty=match.empty_label_rows,
    )
    return predictions.assign(label=row_labels), reference
