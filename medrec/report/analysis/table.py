"""The predictions table as the analysis reads it: which rows are analysed (and why the others are
not), label text as 1 / 0, and the manifest joined on ``sample_id``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medrec.errors import ConfigError
from medrec.labels import distinct_labels, polarity, resolve_positive

REQUIRED_COLUMNS: tuple[str, ...] = ("sample_id", "label")


def _text(series: pd.Series) -> pd.Series:
    """Strings with missing values as ''."""
    return series.astype(object).where(series.notna(), "").astype(str).str.strip()


def _is_blank(series: pd.Series) -> pd.Series:
    """Empty cells and the texts missing values print as ("nan", "null"); "none" is a class name
    (``medrec synth`` writes ``lesion_type`` none / hypodense / hyperdense), so it is not blank."""
    text = _text(series)
    return text.eq("") | text.str.lower().isin({"nan", "null"})


def _score_columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if column.startswith("score_")]


def _resolve_positive_label(labels: pd.Series, positive_label: str | None) -> tuple[str, str]:
    """(negative, positive) label text for a binary table (:func:`medrec.labels.resolve_positive`)."""
    distinct = distinct_labels(labels)
    positive = resolve_positive(distinct, positive_label, source="predictions",
                                fix="name it with --positive-label LABEL (or report with --run RUN, whose "
                                    "positive class decides)")
    others = [value for value in distinct if value != positive]
    return (others[0] if others else "negative", positive)


def _binary_values(values: pd.Series, negative: str, positive: str) -> pd.Series:
    """1 / 0 / NaN (unknown) from label-like text."""
    text = _text(values)
    lowered = text.str.lower()
    out = pd.Series(np.nan, index=values.index)
    out[text.eq(positive)] = 1.0
    out[text.eq(negative)] = 0.0
    if polarity(positive) is not True and polarity(negative) is not False:
        return out
    unset = out.isna()
    out[unset & lowered.isin({"1", "1.0", "true"})] = 1.0
    out[unset & lowered.isin({"0", "0.0", "false"})] = 0.0
    return out


def _clean(predictions: pd.DataFrame, score_columns: Sequence[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows usable for metrics, and the count of excluded rows per reason."""
    frame = predictions.copy()
    frame["sample_id"] = _text(frame["sample_id"])
    if "patient_id" not in frame.columns:
        frame["patient_id"] = ""
    frame["patient_id"] = _text(frame["patient_id"])
    # A sample without a patient id is its own patient.
    frame.loc[frame["patient_id"].eq(""), "patient_id"] = "sample:" + frame["sample_id"]
    excluded = _exclusions(frame, score_columns)
    keep = ~pd.concat(list(excluded.values()), axis=1).any(axis=1)
    frame[list(score_columns)] = frame[list(score_columns)].apply(pd.to_numeric, errors="coerce")
    reasons = {reason: int(mask.sum()) for reason, mask in excluded.items()}
    return frame[keep].reset_index(drop=True), {key: value for key, value in reasons.items() if value}


def _exclusions(frame: pd.DataFrame, score_columns: Sequence[str]) -> dict[str, pd.Series]:
    """Rows excluded from the metrics by reason, each reason counting rows no earlier reason took."""
    keep = pd.Series(True, index=frame.index)
    reasons: dict[str, pd.Series] = {}
    if "error" in frame.columns:
        reasons["error"] = ~_is_blank(frame["error"])
        keep &= ~reasons["error"]
    reasons["no label"] = keep & _is_blank(frame["label"])
    keep &= ~reasons["no label"]
    numeric = frame[list(score_columns)].apply(pd.to_numeric, errors="coerce")
    reasons["no score"] = keep & ~np.isfinite(numeric.to_numpy(dtype=np.float64)).all(axis=1)
    return reasons


def analysed_rows(predictions: pd.DataFrame, score_columns: Sequence[str] = ("score",)) -> pd.Series:
    """True for the rows the analysis keeps: no error, a reference label and finite scores."""
    excluded = _exclusions(predictions, score_columns)
    return ~pd.concat(list(excluded.values()), axis=1).any(axis=1)


def _join_manifest(data: pd.DataFrame, manifest: pd.DataFrame | None) -> pd.DataFrame:
    if manifest is None:
        return data
    if "sample_id" not in manifest.columns:
        raise ConfigError("manifest: has no sample_id column to join the predictions on; pass the manifest.csv "
                          "written by 'medrec index'")
    extra = [column for column in manifest.columns if column not in data.columns]
    right = manifest[["sample_id", *extra]].copy()
    right["sample_id"] = _text(right["sample_id"])
    right = right.drop_duplicates("sample_id")
    return data.merge(right, on="sample_id", how="left", validate="many_to_one")
