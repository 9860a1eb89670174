"""Study- and patient-level rows from sample-level predictions.

Rules (also in ``medrec score --help``):

- A group is a study (``study_uid``) or a patient (``patient_id``); a sample with an empty key
  forms its own group.
- The group score is the ``max`` or ``mean`` of its scored samples (multi-class: ``mean`` of each
  class probability; ``max`` is refused there because per-class maxima do not form a distribution).
- Samples that failed do not count: a group with at least one scored sample keeps the aggregate of
  the scored ones (``error`` empty, ``n_failed`` tells how many were left out); a group where every
  sample failed has an empty score and ``error`` = ``all N samples failed: <first reason>``.
- The group label is the members' label when they agree; otherwise (binary) the positive class if
  any member is positive, (multi-class) the most frequent label (:func:`medrec.labels.group_label`).
- With TTA the uncertainty is that of the sample that gave the max, or the mean uncertainty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from medrec.errors import ConfigError
from medrec.labels import group_label
from medrec.thresholds import is_positive

AGGREGATIONS = ("max", "mean")
GROUP_COLUMNS = ("n_samples", "n_failed", "sample_ids")


def group_id(level: str, key: str) -> str:
    """A short stable id for a group row (its ``sample_id`` column); no identifier leaks into it."""
    return hashlib.sha256(f"{level}:{key}".encode()).hexdigest()[:16]


def _float(value: object) -> float:
    if value is None or value == "":
        return float("nan")
    return float(value)


def aggregate_rows(
    rows: Sequence[Mapping[str, object]],
    level: str,
    method: str,
    classes: Sequence[str],
    score_columns: Sequence[str],
    threshold: float | None,
    with_uncertainty: bool = False,
    positive_class: str | None = None,
    carry: Sequence[str] = (),
) -> list[dict[str, object]]:
    """Group sample-level prediction rows into study or patient rows.

    Args:
        rows: sample-level rows (``sample_id, patient_id, study_uid``, score columns, ``label, error``
            and ``uncertainty`` with TTA); values may be strings as read back from the CSV.
        level: ``study`` or ``patient``.
        method: ``max`` or ``mean``.
        classes: the run's classes (binary: negative, positive).
        score_columns: ``["score"]`` (binary) or ``score_<class>`` per class.
        threshold: operating threshold for binary runs (None for multi-class).
        with_uncertainty: carry an ``uncertainty`` value.
        positive_class: binary runs: the class that ``score`` is the probability of (default: the second).
        carry: columns copied from the member with the highest first score (e.g. the top finding).

    Returns:
        One row per group, in order of first appearance.

    Raises:
        ConfigError: unknown level or method, or ``max`` for a multi-class run.
    """
    if level not in ("study", "patient"):
        raise ConfigError(f"aggregation level must be study or patient, got {level!r}")
    if method not in AGGREGATIONS:
        raise ConfigError(f"--aggregate must be one of {', '.join(AGGREGATIONS)}, got {method!r}")
    binary = len(classes) == 2
    positive = positive_class if positive_class is not None else (classes[1] if binary else None)
    negative = next((name for name in classes if name != positive), None) if binary else None
    if not binary and method == "max":
        raise ConfigError("--aggregate max is only defined for binary runs; use --aggregate mean for multi-class")
    column = "study_uid" if level == "study" else "patient_id"
    groups: dict[str, list[Mapping[str, object]]] = {}
    for row in rows:
        key = str(row.get(column) or "") or f"sample:{row['sample_id']}"
        groups.setdefault(key, []).append(row)

    out: list[dict[str, object]] = []
    for key, members in groups.items():
        good = [m for m in members if not m.get("error")]
        failed = [m for m in members if m.get("error")]
        studies = sorted({str(m.get("study_uid") or "") for m in members} - {""})
        patients = sorted({str(m.get("patient_id") or "") for m in members} - {""})
        record: dict[str, object] = {
            "sample_id": group_id(level, key),
            "patient_id": ";".join(patients),
            "study_uid": ";".join(studies),
            "label": group_label([str(m.get("label") or "") for m in members], classes, positive),
            "n_samples": len(members),
            "n_failed": len(failed),
            "sample_ids": ";".join(str(m["sample_id"]) for m in members),
            "error": "",
        }
        if not good:
            record["error"] = f"all {len(members)} samples failed: {failed[0].get('error')}"
            record.update({name: None for name in score_columns})
            record["prediction"] = ""
            if with_uncertainty:
                record["uncertainty"] = None
            record.update(dict.fromkeys(carry))
            out.append(record)
            continue
        scores = np.array([[_float(m.get(name)) for name in score_columns] for m in good])
        uncertainties = np.array([_float(m.get("uncertainty")) for m in good]) if with_uncertainty else None
        if method == "max":
            best = int(np.argmax(scores[:, 0]))
            values = scores[best]
            uncertainty = None if uncertainties is None else float(uncertainties[best])
        else:
            values = scores.mean(axis=0)
            uncertainty = None if uncertainties is None else float(uncertainties.mean())
        record.update({name: float(value) for name, value in zip(score_columns, values, strict=True)})
        if binary:
            record["prediction"] = positive if threshold is not None and is_positive(values[0], threshold) else negative
        else:
            record["prediction"] = classes[int(np.argmax(values))]
        if with_uncertainty:
            record["uncertainty"] = uncertainty
        top = good[int(np.argmax(scores[:, 0]))]
        record.update({name: top.get(name) for name in carry})
        out.append(record)
    return out
