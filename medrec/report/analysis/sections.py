"""The sample-level and patient-level sections of a binary report (bootstrapped on one set of
patient weights) and the sample-level calibration section."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from medrec.report import stats
from medrec.report.analysis.metrics import _binary_section, _boot_names
from medrec.report.analysis.schema import _metric
from medrec.report.analysis.settings import _Settings


def _patient_data(y: np.ndarray, s: np.ndarray, patients: np.ndarray,
                  threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One row per patient (sorted by id): label = any positive, score = max, prediction = score >= threshold."""
    frame = pd.DataFrame({"patient": patients, "label": y, "score": s})
    grouped = frame.groupby("patient", sort=True).agg(label=("label", "max"), score=("score", "max"))
    patient_y = grouped["label"].to_numpy().astype(np.int8)
    patient_s = grouped["score"].to_numpy()
    return patient_y, patient_s, (patient_s >= threshold).astype(np.int8), grouped.index.to_numpy()


PATIENT_CALIBRATION_OMITTED = ("omitted: a patient's score is the maximum of its samples' probabilities, which is not "
                               "a probability that the patient is positive; calibration is assessed per sample")


def _calibration(y: np.ndarray, s: np.ndarray, patients: np.ndarray,
                 boot: dict[str, stats.BootstrapResult]) -> dict[str, Any] | None:
    """The calibration section (sample level): intercept, slope, observed / expected, scaled Brier."""
    if not 0 < int(y.sum()) < y.size:
        return None
    n_patients = int(np.unique(patients).size)
    clustered = n_patients < y.size
    fit = stats.logistic_calibration(y, s, patients if clustered else None)

    def part(key: str, **extra: Any) -> dict[str, Any]:
        entry = fit[key]
        return _metric(entry["value"], entry["ci"], entry["method"], **extra)

    scaled = fit["scaled_brier"]
    result = boot.get("scaled_brier")
    if result is not None and math.isfinite(result.ci[0]) and result.ci[1] > result.ci[0]:
        scaled_ci, scaled_method = result.ci, result.method
    else:  # every replicate equal (scores exactly 0 / 1 and right): map the Brier score's bounded interval
        brier_ci = stats.bounded_statistic_ci(fit["brier"], n_patients)
        spread = float(y.mean()) * (1.0 - float(y.mean()))
        scaled_ci = (1.0 - brier_ci[1] / spread, 1.0 - brier_ci[0] / spread)
        scaled_method = (f"the Wilson score interval of the Brier score as a proportion of the {n_patients} "
                         "patients, rescaled (every bootstrap replicate equals the estimate here)")
    scaled_method = "1 - Brier / (prevalence (1 - prevalence)) (Steyerberg et al. 2010); " + scaled_method
    return {
        "level": "sample",
        "n_samples": int(y.size),
        "n_patients": n_patients,
        "n_clipped": fit["n_clipped"],
        "brier": fit["brier"],
        "intercept": part("intercept", se=fit["intercept"]["se"]),
        "slope": part("slope", se=fit["slope"]["se"], intercept=fit["slope"].get("intercept", math.nan)),
        "oe_ratio": part("oe_ratio", observed=fit["oe_ratio"]["observed"], expected=fit["oe_ratio"]["expected"]),
        "scaled_brier": _metric(scaled, scaled_ci, scaled_method),
    }


def _sample_and_patient_sections(y: np.ndarray, s: np.ndarray, pred: np.ndarray, patients: np.ndarray,
                                 threshold: float, settings: _Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sample-level section and the patient-level section, bootstrapped on one set of weights.

    The patient-level data have one row per patient whose label is "any study positive", so its
    outcome strata are the sample-level ones and its cluster bootstrap is a plain stratified
    bootstrap of the same patients: the same patient weight matrix serves both (it is what two
    separate calls with this seed would draw), and it is drawn once.

    The sample section gains ``calibration`` (:func:`_calibration`). At patient level, when some
    patient has several samples, the patient score (a maximum) is no probability: its Brier score,
    ECE and calibration are omitted, and ``calibration_omitted`` says why.
    """
    patient_y, patient_s, patient_pred, patient_ids = _patient_data(y, s, patients, threshold)
    clustered = patient_ids.size < y.size
    sample_names = _boot_names(y, patients, settings)
    if sample_names and 0 < int(y.sum()) < y.size:
        sample_names.append("scaled_brier")
    patient_names = [name for name in _boot_names(patient_y, patient_ids, settings)
                     if not (clustered and name in ("brier", "ece"))]
    tasks = [
        {"statistics": sample_names, "labels": y, "scores": s, "predictions": pred, "clusters": patients},
        {"statistics": patient_names, "labels": patient_y, "scores": patient_s, "predictions": patient_pred,
         "clusters": patient_ids},
    ]
    boots = stats.cluster_bootstrap_shared([task for task in tasks if task["statistics"]], n_boot=settings.n_boot,
                                           seed=settings.seed, n_bins=settings.n_bins)
    results = iter(boots)
    shared = [next(results) if task["statistics"] else {} for task in tasks]
    sample = _binary_section(y, s, pred, patients, settings, boot=shared[0])
    sample["calibration"] = _calibration(y, s, patients, shared[0])
    patient = _binary_section(patient_y, patient_s, patient_pred, patient_ids, settings, boot=shared[1])
    patient["aggregation"] = "patient positive if any study is; score = max over its studies; prediction = any"
    if clustered:
        for name in ("brier", "ece"):
            patient["metrics"][name] = _metric(math.nan, (math.nan, math.nan), PATIENT_CALIBRATION_OMITTED)
        patient["calibration_omitted"] = PATIENT_CALIBRATION_OMITTED
    else:
        patient["calibration_omitted"] = ("every patient has one sample, so the patient-level calibration is the "
                                          "sample-level one")
    return sample, patient
