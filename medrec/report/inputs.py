"""The report's inputs: the predictions CSV, the sidecar ``medrec score`` wrote beside it, the run's
``model.json``, and the manifest / splits / qc tables the cohort flow describes.

Each reader names the file and the fix in its errors; an optional table that is absent reads as None.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from medrec.errors import InputError, ModelError, OutputError
from medrec.runinfo import MODEL_JSON, RunInfo, read_run_info


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
