"""Build the clinical validation report: read the inputs, analyse, draw, render, write.

:func:`write_report` is the one entry point (the ``medrec report`` command and ``medrec evaluate``
call it). It writes, inside ``out_dir``::

    report.html      self-contained (inline CSS, images as data URIs)
    report.pdf       the same content, A4, paginated
    report.json      the analysis dict plus ``cohort``, ``limitations``, ``provenance``, ``figures``
    figures/*.png    every figure (file names never come from identifiers or header values)

Identifiers are pseudonymised before the analysis sees them (see :mod:`medrec.report.pseudonym`),
so nothing downstream can leak them; a final check refuses to write any output that still
contains a raw patient, study or sample identifier.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import yaml

from medrec import __version__
from medrec.annotations import Annotations
from medrec.atomicio import write_bytes, write_text
from medrec.errors import ConfigError, InputError, MedrecError, ModelError, OutputError
from medrec.hashing import sha256_file, sha256_json
from medrec.labels import map_to_classes, mapping_text
from medrec.manifest import read_manifest
from medrec.report import document as doc_model
from medrec.report import failures
from medrec.report import figures as figs
from medrec.report.acceptance import judge_acceptance
from medrec.report.pseudonym import (
    Pseudonymiser,
    check_no_identifiers,
    is_safe_file_token,
    key_from_file,
    raw_identifiers,
)
from medrec.report.reference import PREDICTIONS_REFERENCE, attach_labels
from medrec.report.render_html import render_html
from medrec.report.render_pdf import render_pdf
from medrec.report.validation_split import validation_results
from medrec.runinfo import MODEL_JSON, MODEL_WEIGHTS, RunInfo, read_run_info
from medrec.thresholds import parse_rule

if TYPE_CHECKING:  # medrec.config imports medrec.transforms, which imports torch: not at report start-up
    from medrec.config import AcceptanceCriteria, StudyContext

LIBRARIES: tuple[str, ...] = ("medrec", "torch", "monai", "numpy", "pydicom", "scikit-learn", "scipy", "pandas",
                              "matplotlib", "reportlab")
PREDICTION_ID_COLUMNS: tuple[str, ...] = ("sample_id", "patient_id", "study_uid")
MAX_THUMBNAILS = 6  # per kind (false negatives, false positives)
THUMBNAIL_MAX_BYTES = 512 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------


def read_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a predictions CSV with identifiers, labels and errors kept as strings.

    Raises:
        InputError: the file is missing, unreadable, or lacks the identifier / score / label columns.
    """
    source = Path(path)
    if not source.is_file():
        raise InputError(f"{source}: predictions file not found; create one with 'medrec score RUN INPUT -o FILE'")
    try:
        frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{source}: not a readable predictions CSV ({e})") from e
    score_columns = [c for c in frame.columns if c == "score" or c.startswith("score_")]
    missing = [c for c in ("sample_id", "patient_id", "label") if c not in frame.columns]
    if not score_columns:
        missing.append("score (or score_<class>)")
    if missing:
        raise InputError(
            f"{source}: predictions lack column(s) {', '.join(missing)}; expected sample_id, patient_id, "
            "study_uid, score, prediction, label, error (as written by 'medrec score')"
        )
    for column in score_columns:
        frame[column] = _parse_scores(frame, column, source)
    for column in ("study_uid", "prediction", "error"):
        if column not in frame.columns:
            frame[column] = ""
    if frame["sample_id"].duplicated().any():
        raise InputError(f"{source}: sample_id values repeat; each sample must be scored once")
    return frame


def _parse_scores(frame: pd.DataFrame, column: str, source: Path) -> pd.Series:
    """A score column as floats: an empty cell is no score (the row is excluded as such, or by its error);
    anything else that is not a finite number (``abc``, ``0,73``, ``nan``) is refused, naming the row.

    Raises:
        InputError: a cell that is not empty and not a finite number.
    """
    text = frame[column].astype(str).str.strip()
    values = pd.to_numeric(text.where(text != "", np.nan), errors="coerce")
    bad = (text != "") & ~np.isfinite(values.to_numpy(dtype=float))
    if bad.any():
        index = int(np.flatnonzero(bad.to_numpy())[0])
        more = int(bad.sum()) - 1
        raise InputError(
            f"{source}: line {index + 2} (sample_id {frame['sample_id'].iloc[index]!r}): {column} "
            f"{frame[column].iloc[index]!r} is not a number"
            + (f" (and {more} more row{'s' if more != 1 else ''})" if more else "")
            + "; scores use a decimal point (0.73) and an empty cell with the reason in 'error' when a sample "
              "could not be scored; fix the file or score again with 'medrec score'"
        )
    return values


def is_multiclass(predictions: pd.DataFrame) -> bool:
    return "score" not in predictions.columns and any(c.startswith("score_") for c in predictions.columns)


def read_run(run_dir: Path) -> RunInfo:
    """The run's ``model.json`` (:func:`medrec.runinfo.read_run_info`).

    Raises:
        ModelError: the file is missing (the report's threshold is then unknown), not JSON, or not
            a valid run description.
    """
    path = run_dir / MODEL_JSON
    if not path.is_file():
        raise ModelError(
            f"{path}: not found, so the run's operating threshold is unknown; pass the run directory written by "
            "'medrec train', or give --threshold T or --exploratory-threshold youden"
        )
    return read_run_info(run_dir)


@dataclass(frozen=True)
class ScoredThreshold:
    """The operating threshold the predictions were made at, as ``medrec score`` recorded it in their sidecar.

    Attributes:
        value: the threshold.
        kind: ``validation`` (scoring took it from the run, chosen there on validation) or
            ``user-given`` (``medrec score --threshold``, the 0.5 default, or a run that does not say).
        method: how it was chosen, in a few words.
        source_text: the sentence for ``threshold_source`` when the report uses it.
        origin: a short phrase for the note when the report uses another threshold.
    """

    value: float
    kind: str
    method: str
    source_text: str
    origin: str

    def decision(self) -> tuple[float, str, str, str]:
        """As :func:`resolve_threshold` returns a threshold."""
        return self.value, self.kind, self.method, self.source_text


def scored_threshold(record: Mapping | None, sidecar: Path) -> ScoredThreshold | None:
    """The operating threshold the predictions were made at, from their sidecar.

    Args:
        record: the sidecar written by ``medrec score`` (None when there is none).
        sidecar: its path, named in the source text and in errors.

    Returns:
        The :class:`ScoredThreshold`, or None when the sidecar records no threshold (multi-class
        runs, hand-made predictions).

    Raises:
        InputError: the recorded threshold is not a number in [0, 1].
    """
    if record is None or record.get("threshold") is None:
        return None
    try:
        number = float(record["threshold"])
    except (TypeError, ValueError) as e:
        raise InputError(f"{sidecar}: threshold {record['threshold']!r} is not a number; score again or pass "
                         "--threshold T") from e
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise InputError(f"{sidecar}: threshold {number} lies outside [0, 1]; score again or pass --threshold T")
    source = str(record.get("threshold_source") or "").strip()
    where = f"recorded in {sidecar.name} by 'medrec score'"
    if source.startswith("run:"):
        detail = source[len("run:"):].strip()
        if "chosen on validation" in detail:
            method = detail.split(",", 1)[0].strip()
            how = f" by {method}" if method and method != "chosen on validation" else ""
            return ScoredThreshold(
                number, "validation", method,
                f"validation: chosen on the validation split{how} and frozen before these predictions were made "
                f"(the run's model.json, {where})",
                f"the run's threshold chosen on validation, per {sidecar.name}")
        return ScoredThreshold(number, "user-given", detail,
                               f"the run's operating threshold ({detail or 'model.json'}), {where}",
                               f"the run's threshold, per {sidecar.name}")
    if source.startswith("command line"):
        return ScoredThreshold(number, "user-given", "given on the command line of 'medrec score'",
                               f"user-given when scoring (medrec score --threshold), {where}; not chosen by medrec",
                               f"medrec score --threshold, per {sidecar.name}")
    return ScoredThreshold(number, "user-given", source, f"{source or 'source not recorded'}, {where}",
                           f"{source or 'source not recorded'}, per {sidecar.name}")


def resolve_threshold(
    run_info: RunInfo | None,
    model_json_path: Path | None,
    threshold: float | None,
    exploratory_threshold: str | None,
    multiclass: bool,
    scored: ScoredThreshold | None = None,
) -> tuple[float | None, str, str, str]:
    """Decide the operating threshold and how to describe where it came from.

    The order: ``threshold`` (--threshold), ``exploratory_threshold``, the run's ``model.json``
    (--run), then ``scored``, the threshold the predictions were made at (their sidecar). An
    explicit choice that differs from the scored threshold is used, and its source text says that
    the predictions were made at the other threshold and their decisions recomputed.

    Args:
        run_info: the run's model.json (None without --run).
        model_json_path: its path, for errors.
        threshold: the --threshold value.
        exploratory_threshold: the --exploratory-threshold rule.
        multiclass: the predictions are multi-class (argmax, no threshold).
        scored: :func:`scored_threshold` of the predictions' sidecar.

    Returns:
        ``(threshold, kind, method, source_text)``: ``kind`` is ``validation`` (from the run,
        frozen), ``user-given``, ``exploratory`` or ``argmax``; ``source_text`` is the sentence
        written to ``threshold_source`` (the analysis replaces it for exploratory thresholds).

    Raises:
        ConfigError: both a fixed and an exploratory threshold, a threshold outside [0, 1], an
            unknown exploratory rule, or no threshold source at all.
        ModelError: the run's model.json lacks a usable ``threshold``.
    """
    value, kind, method, text = _chosen_threshold(run_info, model_json_path, threshold, exploratory_threshold,
                                                  multiclass, scored)
    if scored is not None and value is not None and kind != "exploratory" \
            and not math.isclose(value, scored.value, rel_tol=0.0, abs_tol=1e-12):
        text = (f"{text}; the predictions were made at {scored.value:g} ({scored.origin}) and their decisions "
                f"were recomputed at {value:g}")
    return value, kind, method, text


def _chosen_threshold(
    run_info: RunInfo | None,
    model_json_path: Path | None,
    threshold: float | None,
    exploratory_threshold: str | None,
    multiclass: bool,
    scored: ScoredThreshold | None,
) -> tuple[float | None, str, str, str]:
    """:func:`resolve_threshold` without the note on the scored threshold."""
    if threshold is not None and exploratory_threshold:
        raise ConfigError("give either --threshold or --exploratory-threshold, not both")
    if threshold is not None:
        if not (isinstance(threshold, int | float) and 0.0 <= float(threshold) <= 1.0):
            raise ConfigError(f"--threshold must lie in [0, 1], got {threshold}")
        return float(threshold), "user-given", "given on the command line", \
            "user-given (--threshold); not chosen by medrec"
    if exploratory_threshold:
        rule = parse_rule(exploratory_threshold, "--exploratory-threshold").text
        return None, "exploratory", rule, f"EXPLORATORY: chosen on the test data ({rule})"
    if run_info is not None:
        entry = run_info.threshold
        if entry is None or entry.value is None:
            if multiclass:
                return None, "argmax", "argmax", "argmax (multi-class)"
            raise ModelError(
                f"{model_json_path}: has no 'threshold' with a 'value'; re-run 'medrec train' to store one, or "
                "give --threshold T or --exploratory-threshold youden"
            )
        value, method, chosen_on = entry.value, entry.method or "", entry.chosen_on or "validation"
        how = f" by {method}" if method else ""
        if chosen_on in ("validation", "val"):
            return value, "validation", method, \
                f"validation: chosen on the validation split{how} and frozen before the test data were scored " \
                "(run's model.json)"
        return value, "user-given", method, f"run's model.json, chosen on {chosen_on}{how}"
    if scored is not None:
        return scored.decision()
    if multiclass:
        return None, "argmax", "argmax", "argmax (multi-class)"
    raise ConfigError(
        "no operating threshold: pass --run RUN (its model.json holds the threshold chosen on validation), "
        "--threshold T (user-given) or --exploratory-threshold youden|sensitivity:0.95 (exploratory); "
        "predictions written by 'medrec score' record theirs in their sidecar (PREDICTIONS.json)"
    )


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


def sidecar_of(predictions_csv: Path) -> Path:
    """``pred.csv`` -> ``pred.csv.json``: :func:`medrec.score.writer.sidecar_path`, without importing torch."""
    return predictions_csv.with_name(predictions_csv.name + ".json")


def read_scoring_record(predictions_csv: Path) -> dict | None:
    """The sidecar ``medrec score`` wrote beside the predictions, or None when there is none.

    Raises:
        InputError: the sidecar exists but is not a JSON object.
    """
    if not sidecar_of(predictions_csv).is_file():
        return None
    # deferred: the sidecar's reader lives in medrec.score, which imports torch
    from medrec.score.writer import read_sidecar

    try:
        return read_sidecar(predictions_csv)
    except OutputError as e:
        raise InputError(f"{e}; or move it away and pass --run RUN or --threshold T") from e


def _recorded_path(value: object) -> Path | None:
    return Path(value) if isinstance(value, str) and value.strip() else None


def scoring_manifest(predictions_csv: Path, record: Mapping | None) -> Path | None:
    """The manifest the predictions were scored from, as their sidecar records it (None when unknown or gone).

    A scan folder was indexed into ``<predictions stem>.index/`` (looked for beside the predictions
    first, so a moved folder of outputs still finds it); a manifest CSV is used where it was.
    """
    scored_input = (record or {}).get("input")
    if not isinstance(scored_input, Mapping):
        return None
    candidates: list[Path | None] = []
    if scored_input.get("kind") == "folder":
        candidates.append(predictions_csv.with_name(f"{predictions_csv.stem}.index") / "manifest.csv")
        recorded = _recorded_path(scored_input.get("index_dir"))
        candidates.append(recorded / "manifest.csv" if recorded is not None else None)
    elif scored_input.get("kind") == "manifest":
        candidates.append(_recorded_path(scored_input.get("path")))
    return next((path for path in candidates if path is not None and path.is_file()), None)


def scoring_samples_file(predictions_csv: Path, record: Mapping | None) -> Path | None:
    """The sample-level rows scoring kept beside study / patient-level predictions (None at series level)."""
    name = (record or {}).get("samples_file")
    if isinstance(name, str) and name and Path(name).name == name:
        return predictions_csv.with_name(name)
    default = predictions_csv.with_name(f"{predictions_csv.stem}.samples.csv")
    return default if default.is_file() else None


def scanned_folder(record: Mapping | None) -> Path | None:
    """The scan folder the predictions were scored from (relative label paths are resolved against it)."""
    scored_input = (record or {}).get("input")
    if isinstance(scored_input, Mapping) and scored_input.get("kind") == "folder":
        folder = _recorded_path(scored_input.get("path"))
        return folder if folder is not None and folder.is_dir() else None
    return None


def _read_optional_csv(path: Path | None) -> pd.DataFrame | None:
    if path is None or not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV ({e})") from e


def _run_weights_sha256(run_dir: Path, run_info: RunInfo | None) -> str | None:
    """The sha256 of a run's weights: as its model.json records it, else computed from model.safetensors."""
    if run_info is None and (run_dir / MODEL_JSON).is_file():
        try:
            run_info = read_run_info(run_dir)
        except ModelError:
            run_info = None  # not a readable run description: the weights file alone names the model
    return _model_sha256(run_dir, run_info)


def check_same_model(record: Mapping | None, sidecar: Path, run_dir: Path | None, run_info: RunInfo | None) -> None:
    """Refuse predictions that another model made than the ``--run`` named for them.

    The run gives the report its threshold, its training / validation split (left out of the
    analysis) and its provenance; all three would describe a model that did not make these scores.

    Raises:
        InputError: the sidecar's ``model_sha256`` and the run's weights differ.
    """
    scored_by = str((record or {}).get("model_sha256") or "")
    if run_dir is None or not scored_by:
        return
    run_hash = _run_weights_sha256(run_dir, run_info)
    if run_hash and run_hash != scored_by:
        raise InputError(
            f"{sidecar.name}: the predictions were made by the model with weights sha256 {scored_by[:12]}..., but "
            f"--run {run_dir.name} holds weights sha256 {run_hash[:12]}...; report them with the run that scored "
            "them, or score again with this run"
        )


def tta_run_info(
    run_info: RunInfo | None, record: Mapping | None, scored: ScoredThreshold | None, sidecar: Path,
    threshold: float | None, exploratory_threshold: str | None,
) -> tuple[RunInfo | None, bool]:
    """The run description whose ``threshold`` belongs to the predictions' scoring setting.

    Predictions scored with test-time augmentation (``tta`` in their sidecar) are compared with
    the threshold chosen on validation scored with TTA (``model.json`` ``threshold_tta``, written
    by ``medrec score --tta``), never with the one chosen without it: flip averaging moves the
    scores (on the demo every negative ended above the plain threshold).

    Returns:
        ``(run description, used the TTA threshold)``; the description is None when the sidecar's
        threshold (chosen with TTA) is the one to use.

    Raises:
        ModelError: TTA predictions and no threshold chosen with TTA (a run or a sidecar from
            before such thresholds existed).
    """
    if not (record or {}).get("tta") or threshold is not None or exploratory_threshold:
        return run_info, False
    from medrec.score.operating_point import TTA_SOURCE_MARK  # deferred: imports torch

    scored_with_tta = scored is not None and TTA_SOURCE_MARK in str((record or {}).get("threshold_source") or "")
    fix = ("score them again with 'medrec score --tta' or 'medrec evaluate RUN --tta' (it chooses the threshold on "
           "validation scored with TTA and keeps it in model.json), or pass --threshold T")
    if run_info is not None:
        entry = run_info.threshold_tta
        if entry is not None and entry.value is not None:
            return run_info.model_copy(update={"threshold": entry}), True
        if scored_with_tta:
            return None, True
        if run_info.threshold is not None and run_info.threshold.value is None:
            return run_info, False  # multi-class: argmax, no threshold
        raise ModelError(f"{sidecar.name}: the predictions were scored with test-time augmentation, but the run's "
                         f"model.json holds only the threshold chosen on validation without it, which does not "
                         f"apply to TTA scores; {fix}")
    if scored is not None and scored.kind == "validation" and not scored_with_tta:
        raise ModelError(f"{sidecar.name}: the predictions were scored with test-time augmentation at the run's "
                         f"threshold chosen without it ({scored.value:g}), which does not apply to TTA scores; {fix}")
    return run_info, scored_with_tta


# Why rows from the run's own training / validation split leave a validation report.
TRAINING_SPLIT_REASON = "in the run's training / validation split"


@dataclass(frozen=True)
class FittedOn:
    """What a run was fitted and tuned on: split (``train`` / ``val``) by sample, study and patient."""

    run_dir: Path
    samples: Mapping[str, str]
    studies: Mapping[str, str]
    patients: Mapping[str, str]


def fitted_on(run_dir: Path) -> FittedOn | None:
    """The training and validation samples of a run (``RUN/splits.csv``; studies from ``RUN/manifest.csv``).

    Returns None when the run has no splits.csv.
    """
    splits = _read_optional_csv(run_dir / "splits.csv")
    if splits is None or not {"sample_id", "split"} <= set(splits.columns):
        return None
    used = splits[splits["split"].astype(str).str.strip().isin(["train", "val"])]
    samples = dict(zip(used["sample_id"].astype(str), used["split"].astype(str).str.strip(), strict=True))
    patients: dict[str, str] = {}
    if "patient_id" in used.columns:
        for patient, split in zip(used["patient_id"].astype(str), used["split"].astype(str).str.strip(), strict=True):
            patients[patient] = "train" if "train" in (split, patients.get(patient)) else split
    studies: dict[str, str] = {}
    manifest = _read_optional_csv(run_dir / "manifest.csv")
    if manifest is not None and {"sample_id", "study_uid"} <= set(manifest.columns):
        for sample, study in zip(manifest["sample_id"].astype(str), manifest["study_uid"].astype(str), strict=True):
            if sample in samples and study:
                studies[study] = "train" if "train" in (samples[sample], studies.get(study)) else samples[sample]
    return FittedOn(run_dir, samples, studies, patients)


def run_of_predictions(run_dir: Path | None, record: Mapping | None) -> Path | None:
    """The run the predictions belong to: ``--run``, else the run their sidecar names when it still holds the
    weights that made them."""
    if run_dir is not None:
        return run_dir
    scored_input = (record or {}).get("input")
    named = _recorded_path(scored_input.get("run_dir")) if isinstance(scored_input, Mapping) else None
    if named is None or not named.is_dir():
        return None
    scored_by = (record or {}).get("model_sha256")
    return named if scored_by and _run_weights_sha256(named, None) == scored_by else None


def training_split_of_rows(predictions: pd.DataFrame, fitted: FittedOn, level: str | None) -> pd.Series:
    """Per predictions row: ``train`` / ``val`` when it holds data the run was fitted or tuned on, else ''.

    Matched at the predictions' level: a series row by its sample id; a study row by its member
    samples (``sample_ids``) or its study UID; a patient row by its members or its patient id.
    """
    def split_of(row: Mapping) -> str:
        found = [fitted.samples.get(str(row.get("sample_id", "")), "")]
        found += [fitted.samples.get(member, "") for member in str(row.get("sample_ids") or "").split(";") if member]
        if level == "study":
            found += [fitted.studies.get(uid, "") for uid in str(row.get("study_uid") or "").split(";") if uid]
        elif level == "patient":
            found += [fitted.patients.get(pid, "") for pid in str(row.get("patient_id") or "").split(";") if pid]
        return "train" if "train" in found else ("val" if "val" in found else "")

    return pd.Series([split_of(row) for row in predictions.to_dict("records")], index=predictions.index, dtype=str)


def predictions_level(record: Mapping | None, predictions: pd.DataFrame) -> str:
    """``series``, ``study`` or ``patient``: the level the rows describe (sidecar, else the group columns)."""
    level = (record or {}).get("level")
    if level in ("series", "study", "patient"):
        return str(level)
    return "study" if "sample_ids" in predictions.columns else "series"


def manifest_for_flow(
    predictions_csv: Path, record: Mapping | None, manifest: Path | None, run_dir: Path | None
) -> tuple[Path | None, str | None]:
    """The manifest whose samples the cohort flow describes, and a warning when it cannot be found.

    ``--manifest`` first; else the manifest the predictions were scored from, per their sidecar.
    The run's own manifest stands in only when the sidecar says the run's data were scored (its
    test split) or there is no sidecar: a new cohort's flow is never the training manifest's.
    """
    if manifest is not None:
        return manifest, None
    found = scoring_manifest(predictions_csv, record)
    if found is not None:
        return found, None
    scored_input = (record or {}).get("input")
    kind = scored_input.get("kind") if isinstance(scored_input, Mapping) else None
    if kind in ("folder", "manifest"):
        where = scored_input.get("index_dir") if kind == "folder" else scored_input.get("path")
        name = Path(str(where)).name if where else "the input"
        return None, (f"the manifest the predictions were scored from ({name}, per {sidecar_of(predictions_csv).name}) "
                      "was not found, so the flow starts at the predictions; pass --manifest MANIFEST")
    if run_dir is not None and (run_dir / "manifest.csv").is_file():
        return run_dir / "manifest.csv", None
    return None, None


def flow_splits(manifest_path: Path | None, manifest: pd.DataFrame | None, predictions: pd.DataFrame,
                run_dir: Path | None) -> pd.DataFrame | None:
    """The splits.csv for the per-split table of the flow: the one beside the scored manifest, else the run's,
    and only one that names the scored samples (a new cohort has no place in the training splits)."""
    candidates = ([manifest_path.parent / "splits.csv"] if manifest is not None and manifest_path is not None else [])
    candidates += [run_dir / "splits.csv"] if run_dir is not None else []
    scored = set((manifest if manifest is not None else predictions)["sample_id"].astype(str))
    for path in dict.fromkeys(candidates):
        splits = _read_optional_csv(path)
        if splits is not None and "sample_id" in splits.columns and scored & set(splits["sample_id"].astype(str)):
            return splits
    return None


def _representative_members(predictions: pd.DataFrame, samples_file: Path | None,
                            manifest_rows: Mapping[str, Mapping]) -> dict[str, str]:
    """Study / patient row id -> the member sample to picture: the highest-scoring member in the manifest."""
    if "sample_ids" not in predictions.columns:
        return {}
    member_scores: dict[str, float] = {}
    members_frame = _read_optional_csv(samples_file)
    if members_frame is not None and {"sample_id", "score"} <= set(members_frame.columns):
        values = pd.to_numeric(members_frame["score"], errors="coerce")
        member_scores = {s: float(v) for s, v in zip(members_frame["sample_id"].astype(str), values, strict=True)
                         if np.isfinite(v)}
    chosen: dict[str, str] = {}
    for group, cell in zip(predictions["sample_id"].astype(str), predictions["sample_ids"].astype(str), strict=True):
        members = [m for m in cell.split(";") if m in manifest_rows]
        if members:
            chosen[group] = max(members, key=lambda m: member_scores.get(m, -np.inf))
    return chosen


# ------------------------------------------------------------------------------------------------
# Cohort, provenance
# ------------------------------------------------------------------------------------------------

# qc.csv reason codes (medrec index) as the cohort-flow table names them.
QC_CODE_TEXT: dict[str, str] = {
    "dicomweb_series_gone": "listed by the PACS but gone when fetched",
    "dicomweb_fetch_failed": "could not be fetched from the PACS",
    "dicomweb_incomplete": "arrived incomplete from the PACS",
    "localizer": "localizer / scout series",
    "not_best_series": "another series of the same study was chosen",
    "derived": "derived / secondary series",
    "below_min_slices": "fewer slices than the recipe requires",
    "too_few_slices": "too few slices for a volume",
    "missing_slices": "missing slices (gap in the stack)",
    "inconsistent_size": "slices of different sizes in one series",
    "invalid_orientation": "inconsistent or invalid orientation",
    "missing_geometry": "pixel data without Rows / Columns (image size unknown)",
    "no_geometry": "no slice position / orientation",
    "duplicate_position": "two slices at one position",
    "inconsistent_orientation": "slices of different orientations in one series",
    "inconsistent_spacing": "uneven slice spacing",
    "duplicate_sop": "duplicate SOP instance",
    "truncated": "truncated file",
    "corrupt_pixel_data": "corrupt pixel data",
    "bits_inconsistent": "BitsStored / HighBit inconsistent",
    "no_pixel_data": "no pixel data (not an image object)",
    "non_image_object": "non-image object (SEG, RTSTRUCT, SR, ...)",
    "modality_not_allowed": "modality not in the recipe",
    "over_budget": "larger than the memory budget",
    "dicom_unreadable": "unreadable DICOM",
    "unreadable": "unreadable file",
    "empty_file": "zero-byte file",
    "not_dicom": "not a DICOM or NIfTI file",
    "executable_preamble": "executable code in the DICOM preamble",
    "nifti_unreadable": "unreadable NIfTI",
    "nifti_pixdim": "NIfTI with invalid voxel size",
    "nifti_scaling": "NIfTI with invalid scaling / values",
    "nifti_geometry": "NIfTI with invalid geometry",
    "nifti_values": "NIfTI with non-finite values",
    "label_conflict": "conflicting labels",
    "excluded_by_pattern": "excluded by a file pattern",
    "not_included": "not matched by the include patterns",
}

# DICOM UIDs (dotted digit strings) are identifiers: never copied from a reason into a report.
_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")


def _scrub_reason(value: object) -> str:
    return _UID.sub("<uid>", doc_model.scrub_paths(value) or "") or "unspecified"


def _count_reasons(values: pd.Series) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        reason = _scrub_reason(value)
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _count_qc_reasons(qc: pd.DataFrame) -> dict[str, int]:
    """Exclusions by reason: by the index's reason code when qc.csv has one, else by scrubbed text."""
    if "code" in qc.columns:
        codes = qc["code"].astype(str).str.strip()
        texts = pd.Series([QC_CODE_TEXT.get(code, code.replace("_", " ")) if code else "" for code in codes],
                          index=qc.index)
        fallback = qc["reason"] if "reason" in qc.columns else pd.Series([""] * len(qc), index=qc.index)
        return _count_reasons(texts.where(codes != "", fallback))
    return _count_reasons(qc["reason"] if "reason" in qc.columns else pd.Series([""] * len(qc)))


# qc.csv codes of files left out before they joined a series: unreadable, not an image, excluded by pattern, a
# duplicate copy; every other code excludes a whole series (one qc row per file of it).
FILE_LEVEL_CODES = frozenset({
    "unreadable", "empty_file", "not_dicom", "executable_preamble", "dicom_unreadable", "truncated",
    "corrupt_pixel_data", "bits_inconsistent", "duplicate_sop", "excluded_by_pattern", "not_included", "lesion_mask",
    "nifti_unreadable", "nifti_pixdim", "nifti_scaling", "nifti_geometry", "nifti_values",
})
# series that were eligible and passed quality control but another series of their study was chosen
NOT_SELECTED_CODES = frozenset({"not_best_series"})
# selected series dropped when the labels were matched
AFTER_SELECTION_CODES = frozenset({"label_conflict"})
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _manifest_files(manifest: pd.DataFrame) -> tuple[int, int] | None:
    """``(DICOM files, NIfTI files)`` behind the manifest's samples, or None when a DICOM row lists no files."""
    dicom = nifti = 0
    formats = manifest["format"].astype(str).str.strip().str.lower() if "format" in manifest.columns \
        else pd.Series("", index=manifest.index)
    files = manifest["files"] if "files" in manifest.columns else pd.Series("", index=manifest.index)
    for fmt, cell in zip(formats, files.astype(str), strict=True):
        if fmt != "dicom":
            nifti += 1
            continue
        try:
            listed = json.loads(cell) if cell.strip() else None
        except json.JSONDecodeError:
            listed = None
        if not isinstance(listed, list) or not listed:
            return None
        dicom += len(listed)
    return dicom, nifti


def index_flow(manifest: pd.DataFrame | None, qc: pd.DataFrame | None) -> dict | None:
    """Files and series through indexing, each counted in its own unit, from manifest.csv and qc.csv.

    qc.csv holds one row per file left out. A row whose code is a file-level one
    (:data:`FILE_LEVEL_CODES`; without codes: a row without ``series_uid``) excludes that file; any
    other row belongs to a series (a NIfTI volume is a series of one file) excluded as a whole, counted
    once per series: by quality control or the eligibility rules, as not chosen for its study
    (``not_best_series``: no QC failure), or after selection (conflicting labels).

    Returns:
        ``{n_files, n_files_dicom, n_files_nifti (readable), n_readable, n_series, n_series_passing,
        n_selected, n_manifest, n_studies, n_patients, file_exclusions, series_exclusions,
        not_selected, after_selection}``; each exclusion list holds ``{reason, n_series, n_files}``
        (file exclusions: ``n_files`` only). File counts are None when the manifest does not list
        its DICOM files. None without a manifest and a qc table.
    """
    if manifest is None or qc is None:
        return None
    behind = _manifest_files(manifest)
    paths = qc["path"].astype(str) if "path" in qc.columns else pd.Series("", index=qc.index)
    series = qc["series_uid"].astype(str).str.strip() if "series_uid" in qc.columns \
        else pd.Series("", index=qc.index)
    codes = qc["code"].astype(str).str.strip() if "code" in qc.columns else pd.Series("", index=qc.index)
    nifti_row = paths.str.lower().str.endswith(NIFTI_SUFFIXES)
    # a series is its UID; a NIfTI volume is its file (NIfTI "series" UIDs are the study's placeholder)
    key = series.where(~nifti_row, "nifti:" + paths)
    kept_keys = _manifest_series_keys(manifest)
    # files that never joined a series, and files left out of a series that was kept
    file_level = codes.isin(FILE_LEVEL_CODES) | (series == "") | key.isin(kept_keys)
    texts = pd.Series([QC_CODE_TEXT.get(c, c.replace("_", " ")) if c else _scrub_reason(r)
                       for c, r in zip(codes, qc["reason"] if "reason" in qc.columns else [""] * len(qc),
                                       strict=True)], index=qc.index, dtype=str)

    # a series leaves at its earliest exclusion: quality control / eligibility, then selection, then labels
    stages = ("series_exclusions", "not_selected", "after_selection")

    def stage_of(code: str) -> int:
        return 1 if code in NOT_SELECTED_CODES else (2 if code in AFTER_SELECTION_CODES else 0)

    series_rows = qc.index[~file_level]
    exclusion: dict[str, tuple[int, str]] = {}  # series key -> (stage, reason) of its earliest exclusion
    for index in series_rows:
        found = (stage_of(codes[index]), texts[index])
        exclusion[key[index]] = min(found, exclusion.get(key[index], found))
    series_of: dict[tuple[int, str], set[str]] = {}
    files_of: dict[tuple[int, str], int] = {}
    for index in series_rows:
        where = exclusion[key[index]]
        series_of.setdefault(where, set()).add(key[index])
        files_of[where] = files_of.get(where, 0) + 1

    def listing(stage: str) -> list[dict]:
        rows = [{"reason": reason, "n_series": len(series_of[(number, reason)]), "n_files": files_of[(number, reason)]}
                for number, reason in series_of if stages[number] == stage]
        return sorted(rows, key=lambda row: (-row["n_series"], row["reason"]))

    file_exclusions = [{"reason": reason, "n_files": n} for reason, n in _count_reasons(texts[file_level]).items()]
    n_excluded_series = {stage: sum(row["n_series"] for row in listing(stage)) for stage in stages}
    n_manifest = int(len(manifest))
    n_series = n_manifest + sum(n_excluded_series.values())
    n_files = n_readable = n_dicom = n_nifti = None
    if behind is not None:
        n_files = behind[0] + behind[1] + int(len(qc))
        n_readable = n_files - int(file_level.sum())
        series_level = ~file_level
        n_dicom = behind[0] + int((series_level & ~nifti_row).sum())
        n_nifti = behind[1] + int((series_level & nifti_row).sum())
    return {
        "n_files": n_files,
        "n_readable": n_readable,
        "n_files_dicom": n_dicom,
        "n_files_nifti": n_nifti,
        "file_exclusions": file_exclusions,
        "n_files_excluded": int(file_level.sum()),
        "n_series": n_series,
        "series_exclusions": listing("series_exclusions"),
        "n_series_passing": n_series - n_excluded_series["series_exclusions"],
        "not_selected": listing("not_selected"),
        "n_selected": n_series - n_excluded_series["series_exclusions"] - n_excluded_series["not_selected"],
        "after_selection": listing("after_selection"),
        "n_manifest": n_manifest,
        "n_studies": int(manifest["study_uid"].astype(str).nunique()) if "study_uid" in manifest.columns else None,
        "n_patients": int(manifest["patient_id"].astype(str).nunique()) if "patient_id" in manifest.columns else None,
        "n_selected_per_study": _series_per_study(manifest),
    }


def _manifest_series_keys(manifest: pd.DataFrame) -> set[str]:
    """The manifest's samples as :func:`index_flow` keys its series: the series UID, ``nifti:<path>`` for NIfTI."""
    if "series_uid" not in manifest.columns:
        return set()
    formats = manifest["format"].astype(str).str.strip().str.lower() if "format" in manifest.columns \
        else pd.Series("", index=manifest.index)
    paths = manifest["path"].astype(str) if "path" in manifest.columns else pd.Series("", index=manifest.index)
    return {f"nifti:{path}" if fmt == "nifti" else str(uid)
            for fmt, path, uid in zip(formats, paths, manifest["series_uid"].astype(str), strict=True)}


def _series_per_study(manifest: pd.DataFrame) -> int | None:
    """The most series any study has in the manifest (1: one series per study)."""
    if "study_uid" not in manifest.columns or manifest.empty:
        return None
    return int(manifest.groupby(manifest["study_uid"].astype(str)).size().max())


def cohort_flow(
    predictions: pd.DataFrame,
    manifest: pd.DataFrame | None,
    qc: pd.DataFrame | None,
    splits: pd.DataFrame | None,
    positive_label: str | None,
    classes: Sequence[str] = (),
    positive_aliases: Sequence[str] = (),
    also_scored: pd.DataFrame | None = None,
    level: str = "series",
) -> dict:
    """Counts for the participant flow (STARD 2015): found, excluded with reasons, scored, analysed.

    ``positive_aliases`` are other label texts of the positive class: the run's class name when the
    predictions' labels were matched to the run's classes by polarity (the run's manifest and
    splits use the run's names). ``also_scored`` are prediction rows taken out before the analysis
    (the run's own training / validation data): scored, so not counted as missing from the
    predictions. ``level`` is the predictions' level: a manifest sample counts as scored when a row
    names it, or (hand-made study / patient rows without ``sample_ids``) its study / patient. Only
    counts and path-scrubbed reasons leave this function, never identifiers.

    With a manifest and its qc.csv, ``index`` holds the flow through indexing in files and series
    (:func:`index_flow`); with splits, ``not_scored_by_split`` counts the manifest's unscored
    samples by their split (the run's training and validation data, for ``medrec evaluate``).
    """
    errors = predictions["error"].astype(str).str.strip()
    failed = errors != ""
    labels = predictions["label"].astype(str).str.strip()
    labelled = labels.isin(list(classes)) if classes else labels != ""
    score_columns = [c for c in predictions.columns if c == "score" or c.startswith("score_")]
    scored = predictions[score_columns].notna().all(axis=1)
    analysed = predictions[~failed & labelled & scored]
    cohort: dict = {
        "n_predictions": int(len(predictions)) + (len(also_scored) if also_scored is not None else 0),
        "n_errors": int(failed.sum()),
        "error_reasons": _count_reasons(errors[failed]),
        "n_studies": int(analysed["study_uid"].replace("", np.nan).nunique()),
        "level": level,
    }
    if manifest is not None:
        cohort["n_manifest"] = int(len(manifest))
        cohort["n_manifest_studies"] = (int(manifest["study_uid"].astype(str).nunique())
                                        if "study_uid" in manifest.columns else None)
        cohort["n_manifest_patients"] = int(manifest["patient_id"].astype(str).nunique())
        rows = pd.concat([predictions, also_scored]) if also_scored is not None and len(also_scored) else predictions
        in_predictions = set(rows["sample_id"].astype(str))
        if "sample_ids" in rows.columns:  # study / patient rows list their samples
            in_predictions |= {member for cell in rows["sample_ids"] for member in str(cell).split(";")
                               if member}
        scored_samples = manifest["sample_id"].astype(str).isin(in_predictions)
        key = {"study": "study_uid", "patient": "patient_id"}.get(level)
        if key is not None and key in manifest.columns and key in rows.columns:
            groups = {part for cell in rows[key].astype(str) for part in cell.split(";") if part}
            scored_samples |= manifest[key].astype(str).isin(groups)
        cohort["n_not_scored"] = int((~scored_samples).sum())
        if splits is not None and {"sample_id", "split"} <= set(splits.columns) and (~scored_samples).any():
            split_of = dict(zip(splits["sample_id"].astype(str), splits["split"].astype(str).str.strip(), strict=False))
            missing = manifest.loc[~scored_samples, "sample_id"].astype(str).map(lambda s: split_of.get(s, ""))
            cohort["not_scored_by_split"] = {str(name): int(n) for name, n in sorted(
                missing.value_counts().items(), key=lambda item: _split_order(str(item[0]) or "~"))}
    if qc is not None:
        cohort["n_excluded_qc"] = int(len(qc))
        cohort["qc_reasons"] = _count_qc_reasons(qc)
    if manifest is not None and qc is not None:
        cohort["n_eligible"] = cohort["n_manifest"] + cohort["n_excluded_qc"]
        cohort["index"] = index_flow(manifest, qc)
    if splits is not None and {"sample_id", "split"} <= set(splits.columns):
        source = manifest if manifest is not None else predictions
        merged = source.merge(splits[["sample_id", "split"]], on="sample_id", how="inner")
        rows = []
        for split, part in sorted(merged.groupby("split"), key=lambda item: _split_order(str(item[0]))):
            labels = part["label"].astype(str).str.strip()
            known = labels[labels != ""]
            positives = (int(known.isin([positive_label, *positive_aliases]).sum())
                         if positive_label is not None else None)
            rows.append({
                "split": str(split),
                "n_samples": int(len(part)),
                "n_patients": int(part["patient_id"].nunique()),
                "n_studies": int(part["study_uid"].nunique()) if "study_uid" in part.columns else None,
                "n_positive": positives,
                "prevalence": positives / len(known) if positives is not None and len(known) else None,
            })
        cohort["splits"] = rows
    return cohort


def _split_counts_text(in_training: pd.Series) -> str:
    counts = in_training[in_training != ""].value_counts()
    return ", ".join(f"{int(counts[name])} from {'training' if name == 'train' else 'validation'}"
                     for name in ("train", "val") if name in counts)


def _record_training_rows(report: dict, in_training: pd.Series) -> None:
    """Count the rows left out as the run's own training / validation data in the flow, the exclusions,
    the warnings (first) and ``held_out_check``."""
    n = int((in_training != "").sum())
    counts = in_training[in_training != ""].value_counts()
    text = _split_counts_text(in_training)
    report["n_rows"] = int(report.get("n_rows") or 0) + n
    report["n_excluded"] = int(report.get("n_excluded") or 0) + n
    report["excluded_reasons"] = {TRAINING_SPLIT_REASON: n, **dict(report.get("excluded_reasons") or {})}
    cohort = report.setdefault("cohort", {})
    cohort["n_in_run_splits"] = {name: int(counts[name]) for name in ("train", "val") if name in counts}
    report["held_out_check"] = {"n_excluded": n, "by_split": cohort["n_in_run_splits"], "splits_text": text,
                                "rule": "rows whose sample (study / patient rows: a member sample, or the study / "
                                        "patient) is in the run's splits.csv as train or val"}
    report.setdefault("warnings", []).insert(
        0, f"{n} of {report['n_rows']} prediction rows ({text}) hold data the model was trained or tuned on, per the "
           "run's splits.csv; they were excluded from this analysis, which covers the other "
           f"{report['n_rows'] - n} rows")


def _split_order(name: str) -> tuple[int, str]:
    order = {"train": 0, "val": 1, "test": 2}
    return order.get(name, 3), name


SYNTH_RECORD = "synth.json"  # what 'medrec synth' writes beside the cohort it generates
SYNTH_SEARCH_DEPTH = 3  # folders above the scans' common folder searched for it


def _synth_record(folder: Path) -> dict | None:
    """The ``synth.json`` in ``folder`` when 'medrec synth' wrote it (its settings name the generator)."""
    path = folder / SYNTH_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    settings = record.get("settings") if isinstance(record, dict) else None
    if not isinstance(settings, dict) or not str(settings.get("generator") or "").startswith("medrec"):
        return None
    return settings


def synthetic_origin(manifest: pd.DataFrame | None, folders: Sequence[Path | None] = ()) -> dict | None:
    """Whether the scans came from ``medrec synth``: its ``synth.json`` in the scans' folder or a folder above.

    Looked for in ``folders`` (the scan folder the predictions were scored from) and in the
    common folder of the manifest's sample paths, each with up to :data:`SYNTH_SEARCH_DEPTH`
    folders above it.

    Returns:
        ``{"synthetic": True, "evidence": str, "generator", "kind", "patients", "seed"}`` (no path),
        or None when no such record was found.
    """
    starts = [Path(folder) for folder in folders if folder is not None]
    if manifest is not None and "path" in manifest.columns:
        paths = [path for path in manifest["path"].astype(str) if path and os.path.isabs(path)]
        if paths:
            try:
                common = Path(os.path.commonpath(paths))
            except ValueError:  # paths on different drives
                common = None
            if common is not None:
                starts.append(common if common.is_dir() else common.parent)
    seen: set[Path] = set()
    for start in starts:
        for folder in [start, *list(start.parents)[:SYNTH_SEARCH_DEPTH]]:
            if folder in seen:
                continue
            seen.add(folder)
            settings = _synth_record(folder)
            if settings is None:
                continue
            details = ", ".join(text for key, text in (("kind", f"kind {settings.get('kind')}"),
                                                       ("patients", f"{settings.get('patients')} patients"),
                                                       ("seed", f"seed {settings.get('seed')}"))
                                if settings.get(key) is not None)
            return {"synthetic": True,
                    "evidence": f"{details}; {SYNTH_RECORD} of {settings.get('generator')} beside the scans",
                    "generator": settings.get("generator"), "kind": settings.get("kind"),
                    "patients": settings.get("patients"), "seed": settings.get("seed")}
    return None


def _versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def report_date() -> str:
    """Today (UTC) as ISO date, or the date of ``SOURCE_DATE_EPOCH`` for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC).date().isoformat()
    return dt.datetime.now(tz=dt.UTC).date().isoformat()


def _fingerprint_text(value: object) -> str:
    if value in (None, "", {}):
        return ""
    if isinstance(value, str):
        return value
    digest = sha256_json(value)[:16]
    details = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, int | float | str) and not isinstance(item, bool) and len(details) < 6:
                if isinstance(item, str) and ("/" in item or "\\" in item):
                    continue
                details.append(f"{key}={item}")
    return f"sha256:{digest}" + (f" ({', '.join(details)})" if details else "")


PATH_WORDS: tuple[str, ...] = ("path", "dir", "root", "file", "scans", "labels", "manifest", "splits", "lesions",
                               "masks", "pretrained")


def _flatten_settings(node: object, prefix: str, settings: dict[str, str], left_out: list[str]) -> None:
    """Every setting under ``node`` as ``{dotted key: text}``; paths go to ``left_out`` (they name local folders)."""
    if isinstance(node, Mapping):
        if not node and prefix:
            settings[prefix] = "{}"
        for key, value in node.items():
            _flatten_settings(value, f"{prefix}.{key}" if prefix else str(key), settings, left_out)
        return
    if isinstance(node, list | tuple):
        if any(isinstance(item, Mapping | list | tuple) for item in node):
            for index, item in enumerate(node):
                _flatten_settings(item, f"{prefix}[{index}]", settings, left_out)
            return
        node = ", ".join(str(item) for item in node) if node else "[]"
    text = "none" if node is None else str(node)
    last = prefix.rsplit(".", 1)[-1].lower()
    if node is not None and (any(word in last for word in PATH_WORDS) or "/" in text or "\\" in text):
        left_out.append(prefix)
        return
    settings[prefix] = text


def _training_summary(run_dir: Path | None) -> tuple[dict[str, str], list[str]]:
    """Every setting of the run's resolved config.yaml as dotted keys, and the path settings left out.

    Nothing is cut: the report prints the whole resolved configuration (``auto`` values are
    resolved in the preprocessing plan, :func:`_plan_summary`); paths are named, not printed.
    """
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return {}, []
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return {"config.yaml": "unreadable"}, []
    settings: dict[str, str] = {}
    left_out: list[str] = []
    _flatten_settings(config if isinstance(config, Mapping) else {}, "", settings, left_out)
    return settings, left_out


def _plan_summary(run_info: RunInfo | None) -> tuple[dict[str, str], list[str]]:
    """The run's preprocessing plan as model.json records it (resolved spacing, input size, ...), and the
    reason for each choice; the data fingerprint the plan was made from is given separately."""
    plan = run_info.plan if run_info is not None else {}
    settings: dict[str, str] = {}
    left_out: list[str] = []
    _flatten_settings({k: v for k, v in plan.items() if k not in ("reasons", "fingerprint")}, "", settings, left_out)
    reasons = [doc_model.scrub_paths(str(reason), limit=300) for reason in plan.get("reasons") or []]
    return settings, reasons


def _model_sha256(run_dir: Path | None, run_info: RunInfo | None) -> str | None:
    """The sha256 of the run's weights (as model.json records it, else computed from model.safetensors)."""
    if run_info is not None and run_info.weights.sha256:
        return run_info.weights.sha256
    if run_dir is not None and (run_dir / MODEL_WEIGHTS).is_file():
        return sha256_file(run_dir / MODEL_WEIGHTS)
    return None


def provenance_block(
    predictions_csv: Path,
    run_dir: Path | None,
    run_info: RunInfo | None,
    report: Mapping,
    keep_identifiers: bool,
    analysis_kw: Mapping,
    date: str,
    compare_path: Path | None = None,
    manifest_path: Path | None = None,
) -> dict:
    """Everything a reader needs to trace the report back to its inputs and software.

    File and folder *names* only are recorded, never full paths (folders can be named after patients).
    The run is named by the sha256 of its weights, not by its folder: the same run reported from two
    folders (or copied elsewhere) gives the same report.json, and the hash names the model exactly.
    """
    architecture = run_info.architecture.to_json() if run_info is not None else {}
    calibration = run_info.calibration if run_info is not None else None
    fingerprint = run_info.data_fingerprint if run_info is not None else None
    training, training_paths = _training_summary(run_dir)
    plan, plan_reasons = _plan_summary(run_info)
    return {
        "report_date": date,
        "medrec_version": __version__,
        "predictions_file": predictions_csv.name,
        "predictions_sha256": sha256_file(predictions_csv),
        "compare_file": compare_path.name if compare_path is not None else None,
        "compare_sha256": sha256_file(compare_path) if compare_path is not None else None,
        "manifest": manifest_path.name if manifest_path is not None else None,
        "model_sha256": _model_sha256(run_dir, run_info),
        "model_name": architecture.get("name"),
        "architecture": doc_model.plain_text({k: v for k, v in architecture.items()
                                              if isinstance(v, int | float | str | bool)}) or None,
        "classes": (list(run_info.classes) if run_info is not None else None) or report.get("classes"),
        "positive_class": (run_info.positive_class if run_info is not None else None) or report.get("positive_label"),
        "label_mapping": (f"{mapping_text(report['label_mapping'])} (the predictions' labels matched to the run's "
                          "classes by polarity)") if report.get("label_mapping") else None,
        "reference_standard": (report.get("reference_standard") or {}).get("summary") or PREDICTIONS_REFERENCE,
        "threshold": report.get("threshold"),
        "threshold_source": report.get("threshold_source"),
        "threshold_method": report.get("threshold_method"),
        "calibration": doc_model.plain_text(calibration.to_json()) if calibration is not None else None,
        "data_fingerprint": _fingerprint_text(fingerprint.to_json() if fingerprint is not None else None),
        "ci_method": analysis_kw.get("ci_method"),
        "n_boot": analysis_kw.get("n_boot"),
        "seed": analysis_kw.get("seed"),
        "identifiers": "kept (--keep-identifiers)" if keep_identifiers else
        "pseudonymised: keyed SHA-256 HMAC, key derived from the predictions file (medrec.report.pseudonym)",
        "library_versions": _versions(),
        "training_library_versions": dict(run_info.versions or {}) if run_info is not None else {},
        "training": training,
        "training_paths_left_out": training_paths,
        "plan": plan,
        "plan_reasons": plan_reasons,
        "plan_hash": run_info.plan_hash if run_info is not None else None,
    }


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------


def compare_curves(compare: pd.DataFrame | None, report: Mapping) -> dict | None:
    """ROC / PR curves of the comparison model on the analysed samples (for the overlay in the ROC figure)."""
    if compare is None or report.get("task") != "binary" or "score" not in compare.columns:
        return None
    from sklearn.metrics import precision_recall_curve, roc_curve

    positive = report.get("positive_label")
    usable = compare[(compare["error"].astype(str).str.strip() == "") & compare["score"].notna()]
    usable = usable[usable["label"].astype(str).str.strip().isin(report.get("classes") or [])]
    y = (usable["label"].astype(str).str.strip() == positive).to_numpy()
    if y.all() or not y.any():
        return None
    scores = usable["score"].to_numpy(dtype=float)
    fpr, tpr, _ = roc_curve(y, scores)
    precision, recall, _ = precision_recall_curve(y, scores)
    return {"roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
            "pr": {"recall": recall.tolist(), "precision": precision.tolist()}}


def draw_figures(report: Mapping, other_curves: Mapping | None = None) -> dict[str, bytes]:
    """All plots of the report as ``{file name: PNG bytes}`` (names are fixed, never data-derived)."""
    figures: dict[str, bytes] = {}
    curves = report.get("curves") or {}
    metrics = report.get("metrics") or {}
    threshold = report.get("threshold")
    binary = report.get("task", "binary") == "binary"
    operating = None
    if binary and metrics.get("sensitivity") and metrics.get("specificity"):
        operating = {
            "sensitivity": metrics["sensitivity"], "specificity": metrics["specificity"], "ppv": metrics.get("ppv"),
            "label": f"operating point (threshold {doc_model.fmt_threshold(threshold)})",
        }
    comparison = report.get("comparison") or {}
    other_curves = other_curves or {}
    first = "this model" if other_curves else "model"
    roc = curves.get("roc")
    if binary and isinstance(roc, Mapping) and roc.get("fpr"):
        series = [{"fpr": roc["fpr"], "tpr": roc["tpr"], "label": f"{first}, AUC {_auc_text(metrics.get('auc'))}"}]
        if other_curves.get("roc"):
            auc_b = (comparison.get("auc") or {}).get("auc_b")
            series.append({"fpr": other_curves["roc"]["fpr"], "tpr": other_curves["roc"]["tpr"],
                           "label": f"comparison model, AUC {doc_model.fmt_value(auc_b)}"})
        figures["roc.png"] = figs.roc_figure(series, operating)
    elif not binary and isinstance(roc, Mapping) and roc:
        series = [{"fpr": c["fpr"], "tpr": c["tpr"], "label": f"{name} vs rest"} for name, c in roc.items()
                  if isinstance(c, Mapping) and c.get("fpr")]
        if series:
            figures["roc_multiclass.png"] = figs.roc_figure(series)
    pr = curves.get("pr")
    if binary and isinstance(pr, Mapping) and pr.get("recall"):
        series = [{"recall": pr["recall"], "precision": pr["precision"],
                   "label": f"{first}, AP {_auc_text(metrics.get('pr_auc'))}"}]
        if other_curves.get("pr"):
            series.append({"recall": other_curves["pr"]["recall"], "precision": other_curves["pr"]["precision"],
                           "label": "comparison model"})
        prevalence = report.get("prevalence")
        figures["pr.png"] = figs.pr_figure(series, prevalence if doc_model.is_number(prevalence) else None,
                                           operating)
    histogram = curves.get("histogram") or {}
    counts_by_class = {}
    if histogram.get("bin_edges"):
        classes = report.get("classes") or ["negative", "positive"]
        counts_by_class = {
            f"reference negative '{classes[0]}' (n={doc_model.fmt_count(report.get('n_negative'))})":
                histogram.get("negative") or [],
            f"reference positive '{classes[-1]}' (n={doc_model.fmt_count(report.get('n_positive'))})":
                histogram.get("positive") or [],
        }
    calibration = curves.get("calibration")
    if binary and isinstance(calibration, Mapping) and calibration.get("mean_predicted") is not None:
        figures["calibration.png"] = figs.calibration_figure(
            calibration["mean_predicted"], calibration.get("observed_fraction") or [], calibration.get("count") or [],
            report.get("calibration"),
        )
    decision = curves.get("decision")
    if binary and isinstance(decision, Mapping) and decision.get("thresholds"):
        figures["decision.png"] = figs.decision_curve_figure(decision)
    if binary and counts_by_class:
        figures["scores.png"] = figs.score_distribution_figure(
            histogram["bin_edges"], counts_by_class, threshold if doc_model.is_number(threshold) else None)
    rows = _forest_rows(report)
    if binary and len(rows) > 1:
        figures["subgroups.png"] = figs.forest_figure(rows)
    multiclass = report.get("multiclass") or {}
    if multiclass.get("confusion_matrix") and multiclass.get("classes"):
        figures["confusion_multiclass.png"] = figs.confusion_heatmap(multiclass["confusion_matrix"],
                                                                    multiclass["classes"])
    stages, outcomes = doc_model.flow_figure_input(report)
    if stages:
        figures["flow.png"] = figs.flow_diagram(stages, outcomes)
    froc = (report.get("lesion_level") or {}).get("froc") or {}
    curve = froc.get("curve") or {}
    if curve.get("fp_per_study") and all(doc_model.is_number(v) for v in curve.get("sensitivity") or [None]):
        figures["froc.png"] = figs.froc_figure(curve["fp_per_study"], curve["sensitivity"], froc.get("points") or [],
                                               froc.get("cpm"))
    return figures


def _auc_text(metric: Mapping | None) -> str:
    if not metric:
        return "n/a"
    return f"{doc_model.fmt_value(metric.get('value'))} ({doc_model.fmt_ci(metric.get('ci95'))})"


def _forest_rows(report: Mapping) -> list[dict]:
    metrics = report.get("metrics") or {}
    rows = [{"label": f"all (n={doc_model.fmt_count(report.get('n_samples'))})", "overall": True,
             "sensitivity": metrics.get("sensitivity"), "specificity": metrics.get("specificity")}]
    for column, groups in (report.get("subgroups") or {}).items():
        for group in doc_model.subgroup_rows(groups):
            values = group.get("metrics") or {}
            rows.append({
                "label": f"{column} = {group.get('group')} (n={doc_model.fmt_count(group.get('n'))})",
                "small": bool(group.get("small")),
                "sensitivity": values.get("sensitivity"), "specificity": values.get("specificity"),
            })
    return rows


def _explain_folders(predictions_path: Path, record: Mapping | None) -> list[Path]:
    """Where the maps of ``medrec score --explain`` may lie: the folder its sidecar names (as given,
    or beside the predictions), then ``explain/`` beside the predictions."""
    folders = []
    named = (record or {}).get("explain_dir")
    if named:
        folders += [Path(named)] if Path(named).is_absolute() else [predictions_path.parent / named, Path(named)]
    folders.append(predictions_path.parent / "explain")
    return folders


def _case_picture(
    raw_sample_id: str | None,
    manifest_rows: Mapping[str, Mapping],
    explain_dirs: Sequence[Path],
    member: str | None = None,
    *,
    annotations: Annotations | None = None,
    finding: failures.Point | None = None,
) -> tuple[np.ndarray | None, str]:
    """The picture of one flagged case and a note on where it came from (never a path).

    In this order (:mod:`medrec.report.failures`): the slice of the sample's annotated lesion, the
    slice of the model's top finding (``finding``, LPS mm), both marked; the saliency overlay
    ``<sample id>.png`` of an explain folder; the middle slice. A study or patient row
    (``raw_sample_id`` a study / patient id) is shown by the scan and the map of ``member``, its
    highest-scoring sample, when the row itself has none.
    """
    row = manifest_rows.get(raw_sample_id or "")
    scan, reason = None, ""  # reason: why the scan could not be loaded, once it was tried
    pictured = str(row.get("sample_id", "")) if row is not None else ""
    lesions = failures.case_lesions(annotations, pictured)
    masked = failures.has_mask(annotations, pictured)
    if row is not None and (lesions or masked or finding is not None):
        scan, reason = failures.load_scan(row, THUMBNAIL_MAX_BYTES)
        if scan is not None:
            mask = failures.case_mask(annotations, pictured, scan) if masked else None
            choice = failures.review_slice(scan.array.shape, scan.affine_ras, lesions, mask, finding)
            if choice.kind != "middle":
                return failures.review_picture(scan, choice), choice.note
    names = [name for name in (raw_sample_id, member) if name and is_safe_file_token(name)]
    for overlay in (folder / f"{name}.png" for name in names for folder in explain_dirs):
        if overlay.is_file():
            try:
                if overlay.read_bytes()[:8] == PNG_SIGNATURE:
                    import matplotlib.image as mpimg

                    return np.asarray(mpimg.imread(overlay)), "saliency overlay"
            except (OSError, ValueError, SyntaxError):
                pass
    if row is None:
        return None, "not in the manifest"
    if scan is None and not reason:
        scan, reason = failures.load_scan(row, THUMBNAIL_MAX_BYTES)
    if scan is None:
        return None, reason
    choice = failures.review_slice(scan.array.shape, scan.affine_ras)
    return failures.review_picture(scan, choice), choice.note


def draw_thumbnails(
    report: Mapping,
    shown_to_raw: Mapping[str, str],
    manifest_rows: Mapping[str, Mapping],
    explain_dirs: Path | Sequence[Path],
    representatives: Mapping[str, str] | None = None,
    *,
    lesions: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | None = None,
    findings: Mapping[str, failures.Point] | None = None,
    analysed: pd.DataFrame | None = None,
) -> dict[str, list[doc_model.Case]]:
    """The flagged cases, each with its picture when one can be made and the patient's other studies.

    Args:
        report: the report dict (``flagged``, ``classes``).
        shown_to_raw: sample id as shown in the report (pseudonym) -> raw sample id.
        manifest_rows: raw sample id -> manifest row (for :func:`medrec.loader.load_volume`).
        explain_dirs: the folder(s) of saliency / finding-map overlays ``<raw sample id>.png``.
        representatives: study / patient id -> its highest-scoring sample (whose overlay stands for it).
        lesions: the lesion table (``--lesions``): a false negative is shown on its lesion's slice.
        masks: a labels file with a ``mask`` column: lesion masks, used as the lesion table is.
        findings: raw row id -> the model's top finding (LPS mm), shown when no lesion is.
        analysed: the predictions as the report shows them (pseudonymised): the patient's other rows
            are listed from them; None leaves them unlisted.

    Returns:
        ``{"false_negatives": [Case, ...], "false_positives": [...]}`` in the order of ``flagged``;
        a case's ``figure`` (``fn_01.png`` ...) is None when no picture could be made.
    """
    flagged = report.get("flagged") or {}
    classes = report.get("classes") or ["", ""]
    truth = {"false_negatives": classes[-1], "false_positives": classes[0]}
    folders = [explain_dirs] if isinstance(explain_dirs, Path) else list(explain_dirs)
    entries = {key: list(flagged.get(key) or [])[:MAX_THUMBNAILS] for key in truth}
    references: dict[str, str] = {}  # pictured sample -> reference label: only a positive may carry a lesion
    for key, items in entries.items():
        for entry in items:
            row = manifest_rows.get(shown_to_raw.get(str(entry.get("sample_id", ""))) or "")
            if row is not None:
                references[str(row["sample_id"])] = truth[key]
    annotations = None
    if references and (lesions is not None or masks is not None):
        try:
            annotations = failures.case_annotations(
                (row for sample_id, row in manifest_rows.items() if str(row.get("sample_id")) == sample_id),
                references, truth["false_negatives"], lesions=lesions, masks=masks)
        except MedrecError:
            annotations = None  # the lesion-level results report a bad lesion table; pictures fall back
    result: dict[str, list[doc_model.Case]] = {}
    for key, prefix in (("false_negatives", "fn"), ("false_positives", "fp")):
        cases = []
        for index, entry in enumerate(entries[key], start=1):
            shown_id = str(entry.get("sample_id", ""))
            patient = str(entry.get("patient_id") or "")
            raw = shown_to_raw.get(shown_id)
            picture, note = _case_picture(raw, manifest_rows, folders, (representatives or {}).get(raw or ""),
                                          annotations=annotations, finding=(findings or {}).get(raw or ""))
            score = entry.get("score")
            label = f"{prefix.upper()} {index}"
            figure = None
            if picture is not None:
                png = figs.thumbnail_figure(picture, f"{label} \u00b7 score {doc_model.fmt_value(score)}", note)
                caption = f"{label}: sample {shown_id}, score {doc_model.fmt_value(score)} ({note})"
                figure = doc_model.Figure(f"{prefix}_{index:02d}.png", png, caption, width=0.24)
            others = failures.other_studies(analysed, shown_id, patient) if analysed is not None else None
            cases.append(doc_model.Case(label, shown_id, patient, score, str(entry.get("label", truth[key])), note,
                                        figure, others))
        result[key] = cases
    return result


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def to_json_ready(value: object) -> object:
    """Plain JSON types: numpy scalars / arrays to Python, NaN / inf to None, tuples to lists."""
    if isinstance(value, Mapping):
        return {str(k): to_json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_json_ready(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return to_json_ready(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, pd.Timestamp | dt.date):
        return value.isoformat()
    return value


def write_report(
    predictions_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    qc: str | os.PathLike[str] | None = None,
    *,
    threshold: float | None = None,
    exploratory_threshold: str | None = None,
    subgroups: Sequence[str] = (),
    prevalence: float | None = None,
    ci_method: str = "wilson",
    n_boot: int = 2000,
    seed: int = 0,
    compare: str | os.PathLike[str] | None = None,
    keep_identifiers: bool = False,
    title: str | None = None,
    lesions: str | os.PathLike[str] | None = None,
    lesion_tolerance_mm: float | None = None,
    labels: str | os.PathLike[str] | None = None,
    match_on: str | None = None,
    label_column: str = "label",
    prevalence_source: str | None = None,
    acceptance: AcceptanceCriteria | None = None,
    acceptance_source: str = "",
    acceptance_caveat: str = "",
    context: StudyContext | None = None,
    **analysis_kw,
) -> dict:
    """Analyse a predictions file and write report.html, report.pdf, report.json and figures/.

    Args:
        predictions_csv: the ``medrec score`` output.
        out_dir: the report folder (created).
        run_dir: the run directory; its ``model.json`` gives the frozen operating threshold, its
            ``manifest.csv`` / ``splits.csv`` / ``config.yaml`` are used when present.
        manifest: manifest.csv for subgroup columns and thumbnails (default: the manifest the
            predictions were scored from, as their sidecar records it, else ``RUN/manifest.csv``).
        qc: qc.csv for the exclusions in the cohort flow (default: beside the manifest).
        threshold: a user-given operating threshold (overrides the run's and the sidecar's).
        exploratory_threshold: ``youden`` or ``sensitivity:0.95``: choose the threshold on these
            data (labelled EXPLORATORY everywhere).
        subgroups: manifest (or predictions) columns to break the metrics down by.
        prevalence: the clinical prevalence for adjusted PPV / NPV.
        ci_method: ``wilson`` or ``clopper-pearson`` for proportions.
        n_boot: bootstrap replicates (AUC-free metrics, patient-clustered).
        seed: bootstrap seed.
        compare: a second predictions CSV to compare against (paired on sample_id).
        keep_identifiers: write raw identifiers instead of pseudonyms (internal use only).
        title: the report title.
        lesions: a lesion table (``study_uid`` / ``series_uid``, ``center_x/y/z`` LPS mm, ``diameter_mm``,
            optional ``contrast``): adds the lesion-level results of a finding-map run (hit rate, FROC,
            sensitivity by size and contrast; :mod:`medrec.report.lesions`). Needs the candidate
            findings file that ``medrec score`` writes beside the predictions of such a run. The
            failure review shows each flagged case on the slice of its largest lesion, circled
            (:mod:`medrec.report.failures`); a ``mask`` column of ``labels`` serves the same way.
        lesion_tolerance_mm: added to a lesion's radius when matching a finding; default one voxel of
            the scoring grid (from the predictions sidecar).
        labels: a labels file whose labels replace the predictions' label column
            (:mod:`medrec.report.reference`); the report names it as the reference standard.
        match_on: the labels key (``patient_id``, ``study_uid``, ``accession``, ``path``); None: the
            key that matches most samples.
        label_column: the labels file's label column.
        prevalence_source: where ``prevalence`` came from (``--prevalence``, ``recipe
            evaluation.prevalence``), printed beside every PPV / NPV at it.
        acceptance: pre-specified acceptance criteria, judged PASS / FAIL on the report's metrics
            (page 1 and ``report.json`` ``acceptance``; :mod:`medrec.report.acceptance`).
        acceptance_source: where the criteria came from, for the report.
        acceptance_caveat: what a reader of the verdicts must know about the data judged.
        context: the study's context (intended use, target condition, reference standard, data
            source, sites, dates), printed on page 1.
        **analysis_kw: passed on to :func:`medrec.report.analysis.analyse_predictions`.

    Returns:
        The report dict as written to report.json.

    The threshold is, in this order: ``threshold``, ``exploratory_threshold``, the run's model.json,
    the threshold the predictions were made at (their sidecar ``PREDICTIONS.json``, written by
    ``medrec score``). When the one used differs from the one the predictions were made at, the
    decisions are recomputed (``score >= threshold``) and ``threshold_source`` says both.
    Predictions scored with TTA take the run's ``threshold_tta`` (:func:`tta_run_info`).

    Rows from the training or validation split of the run (``run_dir``, else the run the sidecar
    names when it still holds the weights that scored) are left out of the analysis, counted in
    the flow and flagged first among the warnings and in a banner (:func:`training_split_of_rows`).
    The flow describes the manifest that was scored (:func:`manifest_for_flow`).

    Raises:
        InputError: unreadable predictions / manifest / qc / sidecar, a score that is not a number,
            predictions made by other weights than the run's, predictions that all come from the
            run's training / validation split, or ``lesions`` given for predictions without a
            findings file (not a finding-map run).
        LabelsError: ``labels`` is unusable or matches none of the predictions.
        AnnotationError: the lesion table is missing or lacks columns.
        ConfigError: no threshold source, or contradictory options.
        ModelError: the run's model.json is missing or has no threshold, or TTA predictions have no
            threshold chosen with TTA.
        SecurityError: an output would contain a raw identifier.
        OutputError: the output folder is not writable.
    """
    from medrec.report.analysis import analyse_predictions

    predictions_path = Path(predictions_csv)
    out = Path(out_dir)
    run = Path(run_dir) if run_dir is not None else None
    if run is not None and not run.is_dir():
        raise ModelError(f"{run}: run directory not found; pass the folder written by 'medrec train -o RUN'")
    predictions = read_predictions(predictions_path)
    multiclass = is_multiclass(predictions)
    record = read_scoring_record(predictions_path)
    sidecar = sidecar_of(predictions_path)
    lesion_module = None
    if lesions is not None:
        # deferred: the findings file's reader lives in medrec.score, which imports torch
        from medrec.report import lesions as lesion_module

        if multiclass:
            raise ConfigError("--lesions applies to binary finding-map runs; these predictions are multi-class")
        lesion_module.findings_file_of(predictions_path)  # fail before the analysis, naming the file
        if not Path(lesions).is_file():
            raise InputError(f"{lesions}: lesion table not found; pass a CSV with study_uid or series_uid, "
                             "center_x, center_y, center_z (LPS mm) and diameter_mm")

    run_info = None
    if run is not None and ((threshold is None and not exploratory_threshold) or (run / MODEL_JSON).is_file()):
        run_info = read_run(run)
    check_same_model(record, sidecar, run, run_info)
    scored = scored_threshold(record, sidecar)
    space = run_label_space({"classes": run_info.classes, "positive_class": run_info.positive_class}
                            if run_info is not None else record)
    threshold_info, tta_threshold_used = tta_run_info(run_info, record, scored, sidecar, threshold,
                                                      exploratory_threshold)
    value, kind, method, source_text = resolve_threshold(
        threshold_info, run / MODEL_JSON if run else None, threshold, exploratory_threshold, multiclass, scored)
    if tta_threshold_used:
        source_text += "; chosen on validation scored with test-time augmentation, as these predictions were"

    # Rows of the run's own training / validation split are no validation data: they leave the analysis.
    level = predictions_level(record, predictions)
    owner = run_of_predictions(run, record)
    fitted = fitted_on(owner) if owner is not None else None
    in_training = (training_split_of_rows(predictions, fitted, level) if fitted is not None
                   else pd.Series("", index=predictions.index, dtype=str))
    training_rows = predictions[in_training != ""]
    if len(training_rows) and len(training_rows) == len(predictions):
        raise InputError(
            f"{predictions_path}: all {len(predictions)} rows hold data from the training or validation split of the "
            f"run ({owner.name}/splits.csv: {_split_counts_text(in_training)}); a validation report needs data the "
            "model was neither fitted nor tuned on: 'medrec evaluate RUN' scores the run's locked test split, or "
            "score a new cohort"
        )
    predictions = predictions[in_training == ""].reset_index(drop=True)

    if manifest is not None and not Path(manifest).is_file():
        raise InputError(f"{manifest}: manifest not found; pass the manifest.csv written by 'medrec index'")
    if qc is not None and not Path(qc).is_file():
        raise InputError(f"{qc}: qc file not found; pass the qc.csv written by 'medrec index'")
    manifest_path, manifest_warning = manifest_for_flow(predictions_path, record,
                                                        Path(manifest) if manifest is not None else None,
                                                        run if run is not None else owner)
    manifest_frame = read_manifest(manifest_path) if manifest_path is not None and manifest_path.is_file() else None
    reference = None
    if labels is not None:
        predictions, reference = attach_labels(
            predictions, Path(labels), match_on=match_on, label_column=label_column,
            samples_file=scoring_samples_file(predictions_path, record), manifest=manifest_frame,
            scans_root=scanned_folder(record), space=space,
        )
    qc_path = Path(qc) if qc is not None else (manifest_path.parent / "qc.csv" if manifest_frame is not None else None)
    qc_frame = _read_optional_csv(qc_path)
    splits_frame = flow_splits(manifest_path, manifest_frame, predictions, run if run is not None else owner)
    compare_path = Path(compare) if compare is not None else None
    compare_frame = read_predictions(compare_path) if compare_path is not None else None
    for column in subgroups:
        if column not in predictions.columns and (manifest_frame is None or column not in manifest_frame.columns):
            available = sorted(manifest_frame.columns) if manifest_frame is not None else []
            raise ConfigError(
                f"--subgroup {column!r}: no such column in the manifest or the predictions; available: "
                f"{', '.join(available) if available else 'none (pass --manifest MANIFEST)'}"
            )

    # Pseudonymise before anything is analysed or drawn: nothing downstream sees a raw identifier.
    pseudonymiser = Pseudonymiser(key_from_file(predictions_path), enabled=not keep_identifiers)
    tables = [t for t in (predictions, manifest_frame, compare_frame, splits_frame) if t is not None]
    for column in ("patient_id", "study_uid", "sample_id", "series_uid", "accession"):
        pseudonymiser.reserve(column, (v for t in tables if column in t.columns for v in t[column]))
    shown_to_raw = {pseudonymiser.pseudonym(s, "sample_id"): str(s) for s in predictions["sample_id"]}
    manifest_rows = ({str(r["sample_id"]): r for r in manifest_frame.to_dict("records")}
                     if manifest_frame is not None else {})
    # a study / patient row is pictured by its highest-scoring member sample (its scan and its map)
    representatives = _representative_members(predictions, scoring_samples_file(predictions_path, record),
                                               manifest_rows)
    for group, member in representatives.items():
        manifest_rows.setdefault(group, manifest_rows[member])
    keep_columns = {*PREDICTION_ID_COLUMNS, "prediction", "label", "error", "split", *subgroups}
    predictions_view = pseudonymiser.frame(predictions)
    predictions_view = predictions_view[[c for c in predictions_view.columns
                                         if c in keep_columns or c == "score" or c.startswith("score_")]]
    compare_view = pseudonymiser.frame(compare_frame)
    positive_label = analysis_kw.pop("positive_label", None)
    mapping: dict[str, str] = {}
    if not multiclass:
        mapping, positive_label = label_mapping(predictions, space, positive_label, predictions_path.name)
        if positive_label is None and run_info is not None and run_info.positive_class is not None:
            positive_label = run_info.positive_class
    if mapping and "prediction" in predictions_view.columns:
        # 'prediction' holds the run's class names; the analysis reads it in the labels' vocabulary
        to_label = {name: label for label, name in mapping.items()}
        predictions_view = predictions_view.assign(prediction=predictions_view["prediction"].map(
            lambda value: to_label.get(str(value).strip(), value)))

    report = dict(analyse_predictions(
        predictions_view, value, source_text,
        manifest=pseudonymiser.frame(manifest_frame),
        subgroups=tuple(subgroups),
        prevalence=prevalence,
        prevalence_source=prevalence_source if prevalence is not None else None,
        ci_method=ci_method,
        n_boot=n_boot,
        seed=seed,
        compare=compare_view,
        exploratory_threshold=method if kind == "exploratory" else None,
        positive_label=positive_label,
        **analysis_kw,
    ))
    report["threshold_kind"] = kind
    report["threshold_method"] = method
    report["scoring_threshold"] = scored.value if scored is not None else None
    report["label_mapping"] = mapping or None
    report["reference_standard"] = reference.as_dict() if reference is not None else None
    warnings = report.setdefault("warnings", [])
    if scored is not None and report.get("threshold") is not None and kind != "exploratory" \
            and not math.isclose(float(report["threshold"]), scored.value, rel_tol=0.0, abs_tol=1e-12):
        warnings.append(f"the predictions were made at {scored.value:g} ({scored.origin}); this report "
                        f"recomputes every decision at {float(report['threshold']):g} (score >= threshold); the "
                        "file's 'prediction' column holds the decisions of scoring")
    if len(training_rows):
        _record_training_rows(report, in_training)
    if manifest_warning:
        warnings.append(manifest_warning)
    if lesion_module is not None:
        # raw identifiers are needed to match the lesion table; only counts and rates come back
        report["lesion_level"] = lesion_module.lesion_level_results(
            predictions_path, predictions, lesions, threshold=float(report["threshold"]),
            positive_label=str(report.get("positive_label")), classes=report.get("classes") or (),
            manifest=manifest_frame, tolerance_mm=lesion_tolerance_mm, ci_method=ci_method,
        )
        report.setdefault("methods", {})["lesion_level"] = doc_model.lesion_method_sentence(report["lesion_level"])
    cohort = dict(report.get("cohort") or {})
    run_positive = mapping.get(str(report.get("positive_label")))
    for name, item in cohort_flow(predictions, manifest_frame, qc_frame, splits_frame,
                                  report.get("positive_label"), report.get("classes") or (),
                                  positive_aliases=[run_positive] if run_positive else [],
                                  also_scored=training_rows, level=level).items():
        cohort.setdefault(name, item)
    report["cohort"] = cohort
    report["validation_split"] = validation_results(
        run if run is not None else owner, report.get("threshold"), space[1] if space is not None else None,
        ci_method)
    report["context"] = {key: value for key, value in (context.model_dump() if context is not None else {}).items()
                         if value} or None
    report["data_origin"] = synthetic_origin(manifest_frame, [scanned_folder(record)])
    report["acceptance"] = judge_acceptance(acceptance, report, acceptance_source or "given to the report",
                                            acceptance_caveat)
    report["limitations"] = doc_model.limitations(report)
    date = report_date()
    report["provenance"] = provenance_block(
        predictions_path, run, run_info, report, keep_identifiers,
        {"ci_method": ci_method, "n_boot": n_boot, "seed": seed}, date,
        compare_path=compare_path, manifest_path=manifest_path if manifest_frame is not None else None,
    )

    figures = draw_figures(report, compare_curves(compare_view, report))
    cases = draw_thumbnails(report, shown_to_raw, manifest_rows, _explain_folders(predictions_path, record),
                            representatives, lesions=lesions, masks=failures.masks_file(labels),
                            findings=failures.top_findings(predictions), analysed=predictions_view)
    for key, flagged_cases in cases.items():  # report.json records what each case's picture shows
        for entry, case in zip((report.get("flagged") or {}).get(key) or [], flagged_cases, strict=False):
            entry["picture"] = case.picture_note
            entry["other_studies"] = [{"sample_id": sample_id, "score": score, "label": label}
                                      for sample_id, score, label in case.other_studies or ()]
    all_figures = dict(figures)
    for flagged_cases in cases.values():
        all_figures.update({c.figure.name: c.figure.png for c in flagged_cases if c.figure is not None})
    report["figures"] = [f"figures/{name}" for name in sorted(all_figures)]
    report = to_json_ready(report)

    document = doc_model.compose(report, figures, cases, title or doc_model.DEFAULT_TITLE, date)
    held_out = report.get("held_out_check") or {}
    if held_out.get("n_excluded"):
        banner = (f"{held_out['n_excluded']} of {report.get('n_rows')} prediction rows came from the data this model "
                  f"was trained or tuned on ({held_out['splits_text']}) and were EXCLUDED: the results below are "
                  "from the remaining rows only.")
        document.banner = f"{document.banner} {banner}" if document.banner else banner
    html = render_html(document)
    pdf = render_pdf(document)
    report_text = json.dumps(report, indent=2, allow_nan=False, ensure_ascii=False) + "\n"

    if not keep_identifiers:
        check_no_identifiers(
            {"report.html": html, "report.json": report_text, "report.pdf": "\n".join(document.texts()),
             "figures/": "\n".join(all_figures)},
            raw_identifiers([predictions, manifest_frame, compare_frame]),
        )

    figure_dir = out / "figures"
    for name, png in sorted(all_figures.items()):
        write_bytes(figure_dir / name, png)
    for stale in figure_dir.glob("*.png"):
        if stale.name not in all_figures:
            stale.unlink()
    write_bytes(out / "report.pdf", pdf)
    write_text(out / "report.html", html)
    write_text(out / "report.json", report_text)
    return report
