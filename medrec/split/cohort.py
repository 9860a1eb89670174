"""The manifest as splitting sees it: its labelled samples (each with a unique sample id and a patient
id), and its rows keyed for a join with ``splits.csv``.
"""

from __future__ import annotations

import pandas as pd

from medrec.errors import ManifestError


def _labelled(manifest: pd.DataFrame, label_column: str) -> pd.DataFrame:
    for column in ("sample_id", "patient_id", label_column):
        if column not in manifest.columns:
            raise ManifestError(f"manifest lacks column {column!r}; build it with 'medrec index'")
    frame = manifest.copy()
    frame[label_column] = frame[label_column].fillna("").astype(str).str.strip()
    frame["sample_id"] = frame["sample_id"].astype(str)
    frame["patient_id"] = frame["patient_id"].fillna("").astype(str)
    duplicated = frame["sample_id"][frame["sample_id"].duplicated()]
    if len(duplicated):
        raise ManifestError(f"manifest lists sample_id {duplicated.iloc[0]!r} twice; sample ids must be unique")
    labelled = frame[frame[label_column] != ""]
    missing_patient = labelled[labelled["patient_id"].str.strip() == ""]
    if len(missing_patient):
        raise ManifestError(
            f"sample {missing_patient['sample_id'].iloc[0]} (and {len(missing_patient) - 1} more) has no "
            f"patient_id; patient-level splitting needs one per sample (fill the column in the manifest)"
        )
    return labelled.reset_index(drop=True)


def _without_split(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest keyed by string sample ids, without a column that would clash with ``split``."""
    frame = manifest.drop(columns=[c for c in ("split", "_merge") if c in manifest.columns])
    return frame.assign(sample_id=frame["sample_id"].astype(str))
