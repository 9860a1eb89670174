"""Keeping the run's own data out of a validation report.

Predictions made by other weights than the run's are refused; rows holding data the run was
fitted or tuned on (its ``splits.csv``) are found, left out of the analysis and counted in the
flow, the exclusions and the warnings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medrec.errors import InputError, ModelError
from medrec.report.inputs import _read_optional_csv, _recorded_path
from medrec.report.provenance import _model_sha256
from medrec.runinfo import MODEL_JSON, RunInfo, read_run_info


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
