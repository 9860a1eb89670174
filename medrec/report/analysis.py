"""From a predictions table to the numbers of a clinical validation report (``report.json``).

:func:`analyse_predictions` returns a JSON-serialisable dict (floats, ints, str, lists, dicts, None;
NaN and infinity become None). Its keys are stable; renderers rely on them.

Schema (``schema_version`` 1)::

    schema_version: 1
    task: "binary" | "multiclass"
    classes: [str, ...]                  # binary: [negative, positive]; multi-class: score_<class> order
    positive_label: str | None           # binary only
    n_rows: int                          # rows in the predictions table
    n_samples, n_patients: int           # rows / patients used for the metrics
    n_positive, n_negative: int          # binary (multi-class: n_per_class {class: n})
    n_excluded: int
    excluded_reasons: {reason: count}    # "error", "no label", "no score", "unknown label"
    threshold: float | None              # operating threshold on the score (None for multi-class)
    threshold_source: str                # where it came from; "EXPLORATORY: ..." if chosen on these data
    prevalence: float                    # observed fraction of positive samples
    metrics: {name: METRIC}              # see below
    confusion_matrix: {tp, fp, tn, fn}   # binary; multi-class: see "multiclass"
    patient_level: {...} | None          # binary: same keys as a section (see SECTION), per patient
    threshold_table: [ROW]               # binary
    prevalence_adjusted: {...} | None
    calibration: CALIBRATION | None      # binary, sample level (None with one class)
    subgroups: {column: [GROUP]}
    comparison: {...} | None
    multiclass: {...} | None
    curves: {...}
    flagged: {false_negatives: [FLAG], false_positives: [FLAG]}
    methods: {name: str}                 # one sentence per statistical method used
    warnings: [str]

    METRIC  = {value: float|None, ci95: [lo|None, hi|None], method: str}
              (+ numerator, denominator: int for proportions; + design_effect, n_effective where
              patients contribute several samples to the denominator; ppv / npv + prevalence,
              prevalence_source: the prevalence they hold at and where it came from; auc + se)
    SECTION = {n_samples, n_patients, n_positive, n_negative, prevalence, metrics, confusion_matrix}
              patient_level is a SECTION with "aggregation": "patient positive if any study is;
              score = max over its studies; prediction = any", and "calibration_omitted": why no
              patient-level calibration is given (with several samples per patient its brier / ece
              are None, the max-aggregated score being no probability).
    ROW     = {threshold, sensitivity, specificity, ppv, npv, tp, fp, tn, fn, note}
              note: "" (grid), "operating threshold", or "reaches sensitivity >= 0.90 on these data
              (chosen on the test data)".
    prevalence_adjusted = {prevalence, prevalence_source, ppv: METRIC, npv: METRIC}
              (METRIC + prevalence, prevalence_source, plug_in: Bayes' rule value, adjusted: bool)
    CALIBRATION = {level: "sample", n_samples, n_patients, n_clipped, brier,
                   intercept, slope, oe_ratio (+ observed, expected), scaled_brier: METRIC}
    GROUP   = {group, n, n_positive, n_negative, n_patients, small: bool,
               metrics: {sensitivity, specificity, auc: METRIC}}   # auc value None with one class
    comparison = {n_samples, n_unusable_in_compare, threshold_b,
                  auc: {auc_a, auc_b, difference, se, z, p_value, ci95, ci_method, method} | None,
                  sensitivity: MCNEMAR, specificity: MCNEMAR}
              MCNEMAR = {value_a, value_b, n, b, c, statistic, p_value, method}
              (b: correct by A only, c: correct by B only)
    multiclass = {classes, confusion_matrix: [[int]] (rows true, columns predicted, class order),
                  per_class: [{class, n, metrics: {sensitivity, specificity, ppv, f1, auc: METRIC}}],
                  macro: {sensitivity, specificity, ppv, f1, auc: METRIC}}
    curves  = {roc: {fpr, tpr, thresholds}, pr: {recall, precision},
               calibration: {bin_lower, bin_upper, mean_predicted, observed_fraction, count},
               histogram: {bin_edges, positive, negative},
               decision: {thresholds, treat_none, test_set: DCA, stated: DCA | None} | None}
                                                  # binary; multi-class: {} except roc per class {class: {fpr, tpr}}
    DCA     = {prevalence, prevalence_source, net_benefit: [float], treat_all: [float]}
    FLAG    = {sample_id, patient_id, score}; the written report adds picture (what the case's picture
              shows) and other_studies ([{sample_id, score, label}]: the patient's other analysed rows)

Statistical choices (also written into each metric's ``method``):

* Proportions (sensitivity, specificity, PPV, NPV, accuracy): Wilson score interval by default
  (``ci_method="clopper-pearson"`` for the exact one). When some patient contributes several samples
  to a proportion's denominator, the same interval at the effective sample size n / DE, the design
  effect from the ratio estimator over patients (:func:`medrec.report.stats.clustered_proportion_ci`).
* AUC: Wald interval of logit(AUC) from the DeLong variance, or Obuchowski's (1997) clustered
  variance with patients as clusters when some patient has several samples; Newcombe's (2006) score
  interval where the AUC is 0 or 1 (:func:`medrec.report.stats.auc_ci`). Never of width zero.
* F1, MCC, balanced accuracy: patient-clustered, outcome-stratified BCa bootstrap, with a
  Jeffreys-posterior interval of the 2x2 table where every replicate is equal
  (:func:`medrec.report.stats.count_statistic_ci`).
* PR-AUC, Brier, ECE, scaled Brier: patient-clustered, outcome-stratified percentile bootstrap
  (:func:`medrec.report.stats.cluster_bootstrap`).
* PPV / NPV at a stated prevalence: Mercaldo, Lau & Zhou (2007) logit intervals.
* Multi-class macro sensitivity (= balanced accuracy), specificity, PPV, NPV: the MOVER interval of
  the mean of the per-class proportions from their one-vs-rest intervals above
  (:func:`medrec.report.stats.mover_mean_ci`); it holds the estimate and keeps a width at 0 and 1.
* Comparison of two models' AUCs: paired DeLong / Obuchowski test, Wald interval of the difference;
  where its variance is 0 (identical rankings) a paired bootstrap, else an exact bound
  (:func:`medrec.report.stats.paired_auc_difference_fallback`).
* Calibration intercept and slope (logistic recalibration, Wald intervals; clustered sandwich
  standard errors), observed / expected, scaled Brier (:func:`medrec.report.stats.logistic_calibration`);
  decision curve (:func:`medrec.report.stats.decision_curve`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from medrec import thresholds
from medrec.errors import ConfigError, InputError
from medrec.labels import distinct_labels, polarity, resolve_positive
from medrec.report import stats
from medrec.thresholds import parse_rule

__all__ = ["AGE_BANDS", "SCHEMA_VERSION", "analyse_predictions", "choose_threshold"]

SCHEMA_VERSION = 1
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<40", -math.inf, 40.0), ("40-59", 40.0, 60.0), ("60-79", 60.0, 80.0), (">=80", 80.0, math.inf),
)
DEFAULT_SUBGROUPS: tuple[str, ...] = ("manufacturer", "sex", "age_band")
SMALL_GROUP = 10  # a subgroup with fewer positives or negatives than this is flagged "small"
GRID_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TARGET_SENSITIVITIES: tuple[float, ...] = (0.90, 0.95)
MAX_CURVE_POINTS = 500
N_FLAGGED = 5
REQUIRED_COLUMNS: tuple[str, ...] = ("sample_id", "label")

TEST_SET_PREVALENCE = "test set"
STATED_PREVALENCE = "stated by the user (--prevalence or the recipe's evaluation.prevalence)"


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Plain Python types only; NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(item) for item in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def _metric(value: float, ci: Sequence[float], method: str, **extra: Any) -> dict[str, Any]:
    return {"value": value, "ci95": [ci[0], ci[1]], "method": method, **extra}


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


def _age_band(ages: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(ages, errors="coerce")
    band = pd.Series("unknown", index=ages.index, dtype=object)
    for name, lower, upper in AGE_BANDS:
        band[(numeric >= lower) & (numeric < upper)] = name
    return band


def choose_threshold(labels: np.ndarray, scores: np.ndarray, rule: str) -> float:
    """A threshold chosen on these data by a rule of :mod:`medrec.thresholds` (``score >= threshold`` is positive).

    Raises:
        ConfigError: unknown rule, only one class present, or no threshold meets the rule.
    """
    parsed = parse_rule(rule, "exploratory_threshold")
    try:
        return thresholds.choose_threshold(np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64),
                                           parsed).value
    except ValueError as e:
        raise ConfigError(f"choosing a threshold by {rule!r} on these data: {e}") from e


# --------------------------------------------------------------------------------------------------
# Binary sections
# --------------------------------------------------------------------------------------------------


class _Settings:
    def __init__(self, ci_method: str, n_boot: int, seed: int, auc_method: str, n_bins: int):
        if ci_method not in stats.PROPORTION_METHODS:
            raise ConfigError(f"ci_method {ci_method!r} is unknown; use one of {', '.join(stats.PROPORTION_METHODS)}")
        if auc_method not in ("auto", "delong", "bootstrap"):
            raise ConfigError(f"auc_method {auc_method!r} is unknown; use 'auto', 'delong' or 'bootstrap'")
        if int(n_boot) < 10:
            raise ConfigError(f"n_boot must be at least 10 (2000 or more for a report), got {n_boot}")
        self.ci_method = ci_method
        self.n_boot = int(n_boot)
        self.seed = int(seed)
        self.auc_method = auc_method
        self.n_bins = int(n_bins)

    @property
    def proportion_name(self) -> str:
        return "Wilson score interval" if self.ci_method == "wilson" else "Clopper-Pearson exact interval"


_PROPORTIONS = {
    "sensitivity": ("tp", ("tp", "fn")),
    "specificity": ("tn", ("tn", "fp")),
    "ppv": ("tp", ("tp", "fp")),
    "npv": ("tn", ("tn", "fn")),
    "accuracy": (("tp", "tn"), ("tp", "fp", "tn", "fn")),
}
_BOOTSTRAP_ONLY = ("balanced_accuracy", "f1", "mcc", "pr_auc", "brier", "ece")


def _boot_names(y: np.ndarray, patients: np.ndarray, settings: _Settings,
                names: Sequence[str] | None = None) -> list[str]:
    """The metrics whose interval needs the bootstrap on these samples.

    Proportions and the AUC have analytic intervals that account for patients with several samples
    (design effect, Obuchowski), so only the metrics without one are bootstrapped.
    """
    wanted = list(names) if names is not None else list(stats.BOOTSTRAP_STATISTICS)
    boot_names = [name for name in wanted if name in _BOOTSTRAP_ONLY
                  or (name == "auc" and settings.auc_method == "bootstrap")]
    if not 0 < int(y.sum()) < y.size:
        boot_names = [name for name in boot_names if name not in ("auc", "pr_auc")]
    return boot_names if y.size else []


# Per proportion: (success mask, denominator mask) from labels y and predictions p.
_PROPORTION_MASKS = {
    "sensitivity": lambda y, p: (p == 1, y == 1),
    "specificity": lambda y, p: (p == 0, y == 0),
    "ppv": lambda y, p: (y == 1, p == 1),
    "npv": lambda y, p: (y == 0, p == 0),
    "accuracy": lambda y, p: (y == p, np.ones(y.size, dtype=bool)),
}


def _proportion_metric(name: str, value: float, y: np.ndarray, pred: np.ndarray, codes: np.ndarray,
                       settings: _Settings) -> dict[str, Any]:
    """A proportion's METRIC: Wilson (or Clopper-Pearson), at the effective sample size when some
    patient contributes several samples to its denominator."""
    success, denominator = _PROPORTION_MASKS[name](y, pred)
    numerator, total = int(np.sum(success & denominator)), int(np.sum(denominator))
    n_codes = int(codes.max()) + 1 if codes.size else 0
    per_patient = np.bincount(codes[denominator], minlength=n_codes)
    if total and per_patient.max() > 1:
        hits = np.bincount(codes[denominator & success], minlength=n_codes)
        result = stats.clustered_proportion_ci(hits, per_patient, settings.ci_method)
        patients_in = int(np.sum(per_patient > 0))
        return _metric(value, result.ci, f"{result.method}; {total} samples from {patients_in} patients are not "
                       "independent", numerator=numerator, denominator=total,
                       design_effect=result.design_effect, n_effective=result.n_effective)
    return _metric(value, stats.proportion_ci(numerator, total, settings.ci_method), settings.proportion_name,
                   numerator=numerator, denominator=total)


def _auc_metric(value: float, y: np.ndarray, s: np.ndarray, patients: np.ndarray, settings: _Settings,
                boot: dict[str, stats.BootstrapResult]) -> dict[str, Any]:
    n_samples, n_patients = int(y.size), int(np.unique(patients).size)
    clustered = n_patients < n_samples
    if settings.auc_method == "bootstrap" and "auc" in boot:
        result = boot["auc"]
        if math.isfinite(result.ci[0]) and result.ci[1] > result.ci[0]:
            return _metric(value, result.ci, result.method)
        fallback = stats.auc_ci(y, s, patients if clustered else None)
        return _metric(value, fallback.ci, f"{result.method} has no width here (every replicate equal), so: "
                       f"{fallback.method}")
    interval = stats.auc_ci(y, s, patients if clustered and settings.auc_method == "auto" else None)
    method = interval.method
    if clustered and settings.auc_method == "delong":
        method += f"; treats the {n_samples} samples of {n_patients} patients as independent (auc_method='delong')"
    return _metric(value, interval.ci, method, se=math.sqrt(interval.variance))


def _bootstrap_metric(name: str, value: float, y: np.ndarray, pred: np.ndarray, patients: np.ndarray,
                      settings: _Settings, result: stats.BootstrapResult) -> dict[str, Any]:
    """F1, MCC, balanced accuracy: BCa with a posterior fallback; PR-AUC, Brier, ECE: percentile,
    with a conservative bounded-statistic interval where every replicate is equal."""
    if name in stats.COUNT_STATISTIC_RANGES:
        ci, method = stats.count_statistic_ci(name, y, pred, patients, result, seed=settings.seed)
        return _metric(value, ci, method)
    if not math.isfinite(value) or (math.isfinite(result.ci[0]) and result.ci[1] > result.ci[0]):
        return _metric(value, result.ci, result.method)
    units = int(np.unique(patients[y == 1]).size) if name == "pr_auc" else int(np.unique(patients).size)
    what = "patients holding positive samples" if name == "pr_auc" else "patients"
    ci = stats.bounded_statistic_ci(value, units)
    return _metric(value, ci, f"Wilson score interval of the value as a proportion of the {units} {what} "
                   "(conservative for a statistic in [0, 1]: the Bernoulli has the largest variance of any [0, 1] "
                   "variable with that mean); every bootstrap replicate equals the estimate here, so the bootstrap "
                   "gives no interval")


def _binary_metrics(y: np.ndarray, s: np.ndarray, pred: np.ndarray, patients: np.ndarray,
                    settings: _Settings, names: Sequence[str] | None = None,
                    boot: dict[str, stats.BootstrapResult] | None = None) -> dict[str, dict[str, Any]]:
    """METRIC dicts for every binary metric (or the given names) on one set of samples.

    ``boot``: the bootstrap results of :func:`_boot_names`, when already computed (shared weights).
    PPV and NPV carry the prevalence they hold at (this set's) and its source.
    """
    wanted = list(names) if names is not None else list(stats.BOOTSTRAP_STATISTICS)
    point = stats.binary_point_metrics(y, s, pred, n_bins=settings.n_bins)
    both_classes = 0 < int(y.sum()) < y.size
    _, codes = np.unique(patients, return_inverse=True)
    codes = codes.reshape(-1)

    if boot is None:
        boot = {}
        boot_names = _boot_names(y, patients, settings, names)
        if boot_names:
            boot = stats.cluster_bootstrap(boot_names, y, s, patients, n_boot=settings.n_boot, seed=settings.seed,
                                           predictions=pred, n_bins=settings.n_bins)  # type: ignore[assignment]

    out: dict[str, dict[str, Any]] = {}
    for name in wanted:
        if name in _PROPORTIONS:
            out[name] = _proportion_metric(name, point[name], y, pred, codes, settings)
            if name in ("ppv", "npv"):
                out[name]["prevalence"] = float(y.mean()) if y.size else math.nan
                out[name]["prevalence_source"] = TEST_SET_PREVALENCE
        elif name == "auc":
            if not both_classes:
                out[name] = _metric(math.nan, (math.nan, math.nan), "AUC undefined: only one class present")
            else:
                out[name] = _auc_metric(point[name], y, s, patients, settings, boot)
        elif name not in boot:
            out[name] = _metric(math.nan, (math.nan, math.nan), f"{name} undefined: only one class present")
        else:
            out[name] = _bootstrap_metric(name, point[name], y, pred, patients, settings, boot[name])
    return out


def _binary_section(y: np.ndarray, s: np.ndarray, pred: np.ndarray, patients: np.ndarray,
                    settings: _Settings, boot: dict[str, stats.BootstrapResult] | None = None) -> dict[str, Any]:
    return {
        "n_samples": int(y.size),
        "n_patients": int(np.unique(patients).size),
        "n_positive": int(y.sum()),
        "n_negative": int(y.size - y.sum()),
        "prevalence": float(y.mean()) if y.size else math.nan,
        "metrics": _binary_metrics(y, s, pred, patients, settings, boot=boot),
        "confusion_matrix": stats.confusion_counts(y, pred),
    }


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


def _threshold_table(y: np.ndarray, s: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    rows: dict[float, str] = {float(t): "" for t in GRID_THRESHOLDS}
    rows[float(threshold)] = "operating threshold"
    if 0 < y.sum() < y.size:
        for target in TARGET_SENSITIVITIES:
            chosen = choose_threshold(y, s, f"sensitivity:{target}")
            note = f"reaches sensitivity >= {target:.2f} on these data (chosen on the test data)"
            rows[chosen] = f"{rows[chosen]}; {note}" if rows.get(chosen) else note
    table = []
    for cut in sorted(rows):
        pred = (s >= cut).astype(np.int8)
        counts = stats.confusion_counts(y, pred)
        values = stats.metrics_from_counts(**counts)
        table.append({"threshold": cut, "sensitivity": float(values["sensitivity"]),
                      "specificity": float(values["specificity"]), "ppv": float(values["ppv"]),
                      "npv": float(values["npv"]), **counts, "note": rows[cut]})
    return table


def _prevalence_adjusted(section: dict[str, Any], prevalence: float, source: str) -> dict[str, Any]:
    """PPV and NPV at a stated prevalence: Mercaldo, Lau & Zhou (2007) logit intervals.

    When patients contribute several samples, the sizes behind sensitivity and specificity are
    their effective sizes (``n_effective`` of those metrics: n / design effect).
    """
    if not 0.0 < prevalence < 1.0:
        raise ConfigError(f"prevalence must lie strictly between 0 and 1 (a clinical prevalence such as 0.1), "
                          f"got {prevalence}")
    counts, metrics = section["confusion_matrix"], section["metrics"]
    n_diseased = metrics["sensitivity"].get("n_effective")
    n_healthy = metrics["specificity"].get("n_effective")
    result = stats.predictive_values_ci(counts["tp"], counts["fn"], counts["fp"], counts["tn"], prevalence,
                                        n_diseased=n_diseased, n_healthy=n_healthy)
    tp, fn, fp, tn = (counts[key] for key in ("tp", "fn", "fp", "tn"))
    method = (f"Mercaldo, Lau & Zhou (2007) logit interval at the stated prevalence {prevalence:g} ({source}), from "
              f"sensitivity {tp}/{tp + fn} and specificity {tn}/{tn + fp}")
    if n_diseased is not None or n_healthy is not None:
        method += (f"; effective sizes {n_diseased if n_diseased is not None else tp + fn:.1f} diseased and "
                   f"{n_healthy if n_healthy is not None else tn + fp:.1f} healthy (n / design effect: patients "
                   "contribute several samples)")
    if result["adjusted"]:
        method += ("; a cell of the 2x2 table is 0, so the estimate and interval are their adjusted ones "
                   "(z^2/2 added to the successes and z^2 to the totals of sensitivity and specificity)")
    out: dict[str, Any] = {"prevalence": prevalence, "prevalence_source": source}
    for index, name in enumerate(("ppv", "npv")):
        value, lower, upper = result[name]
        out[name] = _metric(value, (lower, upper), method, prevalence=prevalence, prevalence_source=source,
                            plug_in=result["plug_in"][index], adjusted=result["adjusted"])
    return out


def _subgroups(data: pd.DataFrame, columns: Sequence[str], settings: _Settings,
               group_metrics: Any) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for column in columns:
        values = _text(data[column]).replace("", "unknown")
        groups = []
        for group in sorted(values.unique(), key=lambda g: (g == "unknown", _band_order(g), g)):
            mask = (values == group).to_numpy()
            groups.append(group_metrics(group, mask))
        out[column] = groups
    return out


def _band_order(group: str) -> int:
    names = [name for name, _, _ in AGE_BANDS]
    return names.index(group) if group in names else len(names)


def _binary_group(y: np.ndarray, s: np.ndarray, pred: np.ndarray, patients: np.ndarray, settings: _Settings):
    def compute(group: str, mask: np.ndarray) -> dict[str, Any]:
        gy, gs, gp, gpat = y[mask], s[mask], pred[mask], patients[mask]
        n_pos = int(gy.sum())
        n_neg = int(gy.size - n_pos)
        return {
            "group": group, "n": int(gy.size), "n_positive": n_pos, "n_negative": n_neg,
            "n_patients": int(np.unique(gpat).size),
            "small": bool(n_pos < SMALL_GROUP or n_neg < SMALL_GROUP),
            "metrics": _binary_metrics(gy, gs, gp, gpat, settings, names=("sensitivity", "specificity", "auc")),
        }
    return compute


def _downsample(n: int, limit: int = MAX_CURVE_POINTS) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(int))


def _decision(y: np.ndarray, s: np.ndarray, prevalence: float | None, source: str) -> dict[str, Any] | None:
    """Net benefit of the model, treat-all and treat-none (Vickers & Elkin 2006), at the test set's
    prevalence and, when one is stated, at that one."""
    if not 0 < y.sum() < y.size:
        return None
    observed = stats.decision_curve(y, s)
    out: dict[str, Any] = {
        "thresholds": observed["thresholds"],
        "treat_none": observed["treat_none"],
        "test_set": {"prevalence": observed["prevalence"], "prevalence_source": TEST_SET_PREVALENCE,
                     "net_benefit": observed["net_benefit"], "treat_all": observed["treat_all"]},
        "stated": None,
    }
    if prevalence is not None:
        stated = stats.decision_curve(y, s, prevalence=prevalence)
        out["stated"] = {"prevalence": stated["prevalence"], "prevalence_source": source,
                         "net_benefit": stated["net_benefit"], "treat_all": stated["treat_all"]}
    return out


def _curves(y: np.ndarray, s: np.ndarray, n_bins: int, prevalence: float | None = None,
            prevalence_source: str = STATED_PREVALENCE) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    if 0 < y.sum() < y.size:
        fpr, tpr, thresholds = roc_curve(y, s)
        keep = _downsample(fpr.size)
        curves["roc"] = {"fpr": fpr[keep], "tpr": tpr[keep],
                         "thresholds": np.minimum(thresholds[keep], 1.0)}  # first threshold is +inf
        precision, recall, _ = precision_recall_curve(y, s)
        keep = _downsample(precision.size)
        curves["pr"] = {"recall": recall[keep], "precision": precision[keep]}
    else:
        curves["roc"] = None
        curves["pr"] = None
    curves["calibration"] = stats.reliability_curve(y, s, n_bins)
    edges = np.arange(21) / 20
    curves["histogram"] = {
        "bin_edges": edges,
        "positive": np.histogram(s[y == 1], bins=edges)[0],
        "negative": np.histogram(s[y == 0], bins=edges)[0],
    }
    curves["decision"] = _decision(y, s, prevalence, prevalence_source)
    return curves


def _flagged(data: pd.DataFrame, y: np.ndarray, s: np.ndarray, pred: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    def rows(mask: np.ndarray, ascending: bool) -> list[dict[str, Any]]:
        index = np.flatnonzero(mask)
        order = index[np.argsort(s[index] if ascending else -s[index], kind="stable")][:N_FLAGGED]
        return [{"sample_id": str(data["sample_id"].iat[i]), "patient_id": str(data["patient_id"].iat[i]),
                 "score": float(s[i])} for i in order]

    return {"false_negatives": rows((y == 1) & (pred == 0), ascending=True),
            "false_positives": rows((y == 0) & (pred == 1), ascending=False)}


# --------------------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------------------


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


def _subgroup_columns(data: pd.DataFrame, subgroups: Sequence[str]) -> list[str]:
    columns = [column for column in DEFAULT_SUBGROUPS if column in data.columns]
    for column in subgroups:
        if column not in data.columns:
            raise ConfigError(f"subgroup column {column!r} is in neither the predictions nor the manifest; "
                              f"available: {', '.join(sorted(map(str, data.columns)))}")
        if column not in columns:
            columns.append(column)
    return columns


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def analyse_predictions(
    predictions: pd.DataFrame,
    threshold: float | None,
    threshold_source: str,
    manifest: pd.DataFrame | None = None,
    subgroups: Sequence[str] = (),
    prevalence: float | None = None,
    ci_method: str = "wilson",
    n_boot: int = 2000,
    seed: int = 0,
    compare: pd.DataFrame | None = None,
    exploratory_threshold: str | None = None,
    *,
    positive_label: str | None = None,
    auc_method: str = "auto",
    n_bins: int = 10,
    compare_threshold: float | None = None,
    prevalence_source: str | None = None,
) -> dict[str, Any]:
    """Every number of a clinical validation report, as the ``report.json`` dict (schema above).

    Args:
        predictions: the predictions table (``sample_id, patient_id, study_uid, score, prediction,
            label, error``; multi-class: ``score_<class>`` columns). Rows with an error, no label or
            no score are excluded and counted.
        threshold: operating threshold on ``score`` (``score >= threshold`` is positive); None for
            multi-class, or with ``exploratory_threshold``.
        threshold_source: where the threshold came from (e.g. "run: chosen on validation by youden").
        manifest: the manifest, joined on ``sample_id`` for subgroup columns (manufacturer, sex, age).
        subgroups: extra subgroup column names (in the predictions or the manifest).
        prevalence: a target-population prevalence for adjusted PPV / NPV and the decision curve.
        ci_method: ``"wilson"`` or ``"clopper-pearson"`` for proportions.
        n_boot: bootstrap replicates; seed: their seed (same seed, same intervals).
        compare: predictions of another model on the same samples (paired DeLong, McNemar).
        exploratory_threshold: with threshold None, choose it on these data (``"youden"``,
            ``"sensitivity:0.95"``, ``"specificity:0.9"``); labelled EXPLORATORY.
        positive_label: the positive class's label text (binary); default: recognised from the
            labels (1/0, true/false, tumor/normal, positive/negative, ...).
        auc_method: ``"auto"`` (DeLong variance; Obuchowski's clustered variance with several samples
            per patient; logit-scale interval, Newcombe's at AUC 0 or 1), ``"delong"`` (samples taken
            as independent) or ``"bootstrap"`` (patient-clustered percentile bootstrap).
        n_bins: calibration bins (ECE, reliability curve).
        compare_threshold: threshold of the ``compare`` model (default: the same operating threshold).
        prevalence_source: where ``prevalence`` came from, printed beside every PPV / NPV at it (e.g.
            "recipe evaluation.prevalence", "--prevalence"); default: "stated by the user (...)".

    Returns:
        The report dict (JSON-serialisable, NaN as None).

    Raises:
        ConfigError: no threshold and no exploratory rule (binary), unknown options, missing subgroup column.
        InputError: missing columns, or ``compare`` holds other samples.
        LabelsError: labels that do not match the classes.
    """
    if not isinstance(predictions, pd.DataFrame):
        raise InputError(f"predictions must be a pandas DataFrame, got {type(predictions).__name__}")
    missing = [column for column in REQUIRED_COLUMNS if column not in predictions.columns]
    if missing:
        raise InputError(f"predictions: missing column(s) {missing}; expected sample_id, patient_id, study_uid, "
                         "score (or score_<class>), prediction, label, error")
    settings = _Settings(ci_method, n_boot, seed, auc_method, n_bins)
    if prevalence is not None and not 0.0 < float(prevalence) < 1.0:
        raise ConfigError(f"prevalence must lie strictly between 0 and 1 (a clinical prevalence such as 0.1), "
                          f"got {prevalence}")
    prevalence_source = prevalence_source or STATED_PREVALENCE
    class_columns = _score_columns(predictions)
    multiclass = "score" not in predictions.columns and len(class_columns) > 2
    if not multiclass and "score" not in predictions.columns:
        if len(class_columns) == 2:
            raise InputError("predictions: a two-class table needs one 'score' column (probability of the positive "
                             f"class), found {class_columns}")
        raise InputError("predictions: no 'score' column (binary) nor score_<class> columns (multi-class)")
    if multiclass:
        return _analyse_multiclass(predictions, class_columns, threshold_source, manifest, subgroups, settings)

    data, reasons = _clean(predictions, ["score"])
    warnings: list[str] = []
    if data.empty:
        raise InputError(f"predictions: no row is usable for metrics (excluded: {reasons or 'none'}); "
                         "scoring failed everywhere or no label is known")
    negative, positive = _resolve_positive_label(_text(data["label"]), positive_label)
    y_series = _binary_values(data["label"], negative, positive)
    unknown = y_series.isna()
    if unknown.any():
        reasons["unknown label"] = int(unknown.sum())
        warnings.append(f"{int(unknown.sum())} rows have labels other than {negative!r} / {positive!r} and were "
                        "excluded")
        data, y_series = data[~unknown].reset_index(drop=True), y_series[~unknown].reset_index(drop=True)
    y = y_series.to_numpy().astype(np.int8)
    s = data["score"].to_numpy(dtype=np.float64)
    if s.min() < 0.0 or s.max() > 1.0:
        raise InputError(f"predictions: 'score' must be a probability in [0, 1]; found values from {s.min():g} to "
                         f"{s.max():g}")
    patients = data["patient_id"].to_numpy().astype(str)

    if threshold is not None and exploratory_threshold is not None:
        raise ConfigError("give either a threshold (--threshold / --run) or exploratory_threshold, not both")
    if threshold is None:
        if exploratory_threshold is None:
            raise ConfigError("no operating threshold: pass --run RUN (its validated threshold), --threshold T, or "
                              "--exploratory-threshold youden|sensitivity:0.95 to choose one on these data")
        threshold = choose_threshold(y, s, exploratory_threshold)
        threshold_source = (f"EXPLORATORY: chosen on the test data ({exploratory_threshold}); the metrics at this "
                            "threshold are optimistic and need confirmation on independent data")
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must lie in [0, 1], got {threshold}")
    pred = (s >= threshold).astype(np.int8)
    if "prediction" in data.columns:
        given = _binary_values(data["prediction"], negative, positive)
        disagree = int((given.notna() & (given.to_numpy() != pred)).sum())
        if disagree:
            warnings.append(f"{disagree} rows' 'prediction' differs from score >= {threshold:g}; the report uses "
                            "score >= threshold")

    joined = _join_manifest(data, manifest)
    if "age" in joined.columns:
        joined["age_band"] = _age_band(joined["age"])
    subgroup_columns = _subgroup_columns(joined, subgroups)

    section, patient_section = _sample_and_patient_sections(y, s, pred, patients, threshold, settings)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "task": "binary",
        "classes": [negative, positive],
        "positive_label": positive,
        "n_rows": int(len(predictions)),
        "n_samples": section["n_samples"],
        "n_patients": section["n_patients"],
        "n_positive": section["n_positive"],
        "n_negative": section["n_negative"],
        "n_excluded": int(sum(reasons.values())),
        "excluded_reasons": reasons,
        "threshold": threshold,
        "threshold_source": threshold_source,
        "prevalence": section["prevalence"],
        "metrics": section["metrics"],
        "confusion_matrix": section["confusion_matrix"],
        "patient_level": patient_section,
        "threshold_table": _threshold_table(y, s, threshold),
        "prevalence_adjusted": (_prevalence_adjusted(section, float(prevalence), prevalence_source)
                                if prevalence is not None else None),
        "calibration": section.pop("calibration"),
        "subgroups": _subgroups(joined, subgroup_columns, settings, _binary_group(y, s, pred, patients, settings)),
        "comparison": (_comparison(data, y, s, pred, patients, _text(predictions["sample_id"]), compare,
                                   threshold if compare_threshold is None else float(compare_threshold), settings)
                       if compare is not None else None),
        "multiclass": None,
        "curves": _curves(y, s, settings.n_bins, prevalence, prevalence_source),
        "flagged": _flagged(data, y, s, pred),
        "methods": _methods(settings, section["n_patients"] < section["n_samples"], prevalence is not None,
                            compare is not None),
        "warnings": warnings,
    }
    return _jsonable(report)


def _methods(settings: _Settings, clustered: bool, stated_prevalence: bool = False,
             compared: bool = False) -> dict[str, str]:
    """One sentence per statistical method (each metric's ``method`` says which one gave its interval)."""
    boot = stats.bootstrap_method_text(settings.n_boot, True, True)
    bca = stats.bca_method_text(settings.n_boot, True, True)
    proportion = settings.proportion_name
    if clustered:
        proportion += (" where every patient contributes one sample to the denominator; otherwise the same interval "
                       "at the effective sample size n / DE, the design effect DE from the ratio estimator over "
                       "patients (Kish 1965), floored at 1 (each patient counted once where the proportion is 0 or "
                       "1 and DE cannot be estimated)")
    auc = ("Wald interval of logit(AUC) with the " + (
        "Obuchowski (1997) clustered variance, patients as clusters (DeLong's when each patient has one sample)"
        if clustered and settings.auc_method == "auto" else "DeLong variance (Sun & Xu 2014)")
        + ", back-transformed; where the AUC is 0 or 1 (perfect separation) Newcombe's (2006, method 5) score "
        "interval with the Hanley-McNeil variance")
    if settings.auc_method == "bootstrap":
        auc = f"{boot} (auc_method='bootstrap'; the interval above where the bootstrap has no width)"
    methods = {
        "proportions": proportion,
        "auc": auc,
        "bootstrap": (f"F1, MCC and balanced accuracy: {bca}, seed {settings.seed}, and where every replicate is equal "
                      "(no error to resample) the Jeffreys-posterior interval of the 2x2 table; PR-AUC, Brier, ECE "
                      f"and scaled Brier: {boot}; patients (not images) are resampled, positive-holding and "
                      "negative-only patients separately"),
        "calibration": f"ECE over {settings.n_bins} equal-width bins [0, 1/{settings.n_bins}), ..., "
                       f"[{settings.n_bins - 1}/{settings.n_bins}, 1], weighted by bin count; calibration intercept "
                       "(slope fixed at 1 by an offset) and slope by logistic recalibration on the sample-level "
                       "probabilities, Wald intervals" + (" with patient-clustered sandwich standard errors"
                                                          if clustered else "")
                       + "; observed / expected with a log-scale binomial interval; scaled Brier "
                       "1 - Brier / (prevalence (1 - prevalence))",
        "predictive_values": "PPV and NPV in the metric table hold at the test set's own prevalence (Wilson intervals "
                             "of TP / (TP + FP) and TN / (TN + FN))" + (
                                 "; at the stated prevalence, Mercaldo, Lau & Zhou (2007) logit intervals from "
                                 "sensitivity and specificity (their adjusted estimates when a cell is 0)"
                                 if stated_prevalence else ""),
        "decision_curve": "net benefit TP/N - FP/N x t/(1 - t) at threshold probabilities t = 0.01..0.99 (Vickers & "
                          "Elkin 2006), with treat-all and treat-none" + (
                              ", also at the stated prevalence from sensitivity and specificity"
                              if stated_prevalence else ""),
        "threshold_table": "rows at the operating threshold, a grid 0.1..0.9, and the thresholds reaching "
                           "sensitivity 0.90 / 0.95 on these data (exploratory)",
    }
    if compared:
        methods["comparison"] = (
            "AUC difference: paired DeLong test (Obuchowski's clustered covariance where a patient has several "
            "samples) with the Wald interval of the difference; where the variance of the difference is 0 (the "
            "models rank the samples alike) the paired percentile bootstrap of the difference on the same "
            f"resamples ({settings.n_boot} replicates, patients resampled), and where every resample gives the same "
            "difference d the exact bound [d - pi (1 + d), d + pi (1 - d)], pi the Clopper-Pearson upper bound for no "
            "differently ordered pair among the disjoint pairs of distinct patients (p-value by inverting it, 1 when "
            "d is 0); sensitivity and specificity: McNemar's test on the discordant pairs (exact binomial below 25)")
    return methods


# --------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------


def _comparison(data: pd.DataFrame, y: np.ndarray, s: np.ndarray, pred: np.ndarray, patients: np.ndarray,
                all_ids: pd.Series, compare: pd.DataFrame, threshold_b: float, settings: _Settings) -> dict[str, Any]:
    if not isinstance(compare, pd.DataFrame) or "sample_id" not in compare.columns or "score" not in compare.columns:
        raise InputError("compare: needs a binary predictions table with sample_id and score columns")
    other_ids = _text(compare["sample_id"])
    if other_ids.duplicated().any():
        raise InputError(f"compare: sample_id {other_ids[other_ids.duplicated()].iloc[0]!r} appears twice")
    only_first = sorted(set(all_ids) - set(other_ids))
    only_second = sorted(set(other_ids) - set(all_ids))
    if only_first or only_second:
        raise InputError(
            f"compare: the two predictions tables hold different samples ({len(only_first)} only in the first, "
            f"e.g. {only_first[:3]}; {len(only_second)} only in the second, e.g. {only_second[:3]}); score both "
            "models on the same manifest")
    usable = compare.assign(sample_id=other_ids, score=pd.to_numeric(compare["score"], errors="coerce"))
    if "error" in usable.columns:
        usable = usable[_is_blank(usable["error"])]
    usable = usable[np.isfinite(usable["score"].to_numpy(dtype=np.float64))]
    merged = data[["sample_id"]].assign(_row=np.arange(len(data))).merge(
        usable[["sample_id", "score"]].rename(columns={"score": "score_b"}), on="sample_id", how="inner")
    rows = merged["_row"].to_numpy()
    ya, sa, pa = y[rows], s[rows], pred[rows]
    sb = merged["score_b"].to_numpy(dtype=np.float64)
    pb = (sb >= threshold_b).astype(np.int8)
    result: dict[str, Any] = {"n_samples": int(rows.size), "n_unusable_in_compare": int(len(data) - rows.size),
                              "threshold_b": threshold_b}
    if 0 < ya.sum() < ya.size:
        pa_ids = patients[rows]
        n_patients = int(np.unique(pa_ids).size)
        if n_patients < rows.size:
            paired = stats.obuchowski_paired_test(ya, sa, sb, pa_ids, n_boot=settings.n_boot, seed=settings.seed)
            test = (f"paired test of AUC(first) - AUC(second) with the Obuchowski (1997) clustered covariance, the "
                    f"{n_patients} patients as clusters ({rows.size} samples)")
        else:
            paired = stats.delong_paired_test(ya, sa, sb, n_boot=settings.n_boot, seed=settings.seed)
            test = "paired DeLong test (Sun & Xu 2014) of AUC(first) - AUC(second); one sample per patient"
        result["auc"] = {**paired, "method": f"{test}; {paired['ci_method']}"}
    else:
        result["auc"] = None
    for name, subset in (("sensitivity", ya == 1), ("specificity", ya == 0)):
        correct_a = pa[subset] == ya[subset]
        correct_b = pb[subset] == ya[subset]
        b = int(np.sum(correct_a & ~correct_b))
        c = int(np.sum(~correct_a & correct_b))
        result[name] = {"value_a": float(correct_a.mean()) if correct_a.size else math.nan,
                        "value_b": float(correct_b.mean()) if correct_b.size else math.nan,
                        "n": int(subset.sum()), **stats.mcnemar_test(b, c)}
    return result


# --------------------------------------------------------------------------------------------------
# Multi-class
# --------------------------------------------------------------------------------------------------


_MACRO_PROPORTIONS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv")


def _macro_proportion_text(settings: _Settings) -> str:
    """The rule for a macro-averaged proportion, for its metric's method and the methods list."""
    return (f"MOVER interval of the mean of the per-class proportions (Zou & Donner 2008; Zou, Huang & Zhang 2009), "
            f"from each class's one-vs-rest {settings.proportion_name} (at the effective sample size n / DE where a "
            "patient contributes several samples to it), the classes taken as independent: mean - sqrt(sum_k "
            "(p_k - l_k)^2) / K to mean + sqrt(sum_k (u_k - p_k)^2) / K")


def _macro_proportions(y: np.ndarray, pred: np.ndarray, codes: np.ndarray, n_classes: int,
                       settings: _Settings) -> dict[str, dict[str, Any]]:
    """Macro sensitivity, specificity, PPV and NPV with an interval that keeps its width at 0 and 1.

    A percentile bootstrap of a macro average has no width when every class's proportion is 0 or 1
    (a model that predicts one class for everything, or a perfect one), which reads as certainty.
    The interval is the MOVER of the per-class intervals (:func:`~medrec.report.stats.mover_mean_ci`),
    each the one a binary report gives that proportion (Wilson or Clopper-Pearson, at the effective
    sample size where patients contribute several samples): one closed-form rule, which holds the
    estimate and keeps a width wherever the per-class intervals have one. Taking the classes as
    independent is exact for sensitivity and PPV (disjoint samples, given the class and prediction
    counts) and errs on the wide side for specificity and NPV, whose classes' errors exclude each
    other within a sample (negative covariance); a patient with samples of several classes links
    them, which it ignores.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in _MACRO_PROPORTIONS:
        per_class = []
        for k in range(n_classes):
            yk, pk = (y == k).astype(np.int8), (pred == k).astype(np.int8)
            success, denominator = _PROPORTION_MASKS[name](yk, pk)
            value = np.sum(success & denominator) / denominator.sum() if denominator.any() else math.nan
            per_class.append(_proportion_metric(name, float(value), yk, pk, codes, settings))
        values = np.array([metric["value"] for metric in per_class], dtype=np.float64)
        if not np.isfinite(values).all():
            continue  # undefined for some class (no sample, or no prediction): the bootstrap's nan stands
        bounds = np.array([metric["ci95"] for metric in per_class], dtype=np.float64)
        out[name] = _metric(float(values.mean()), stats.mover_mean_ci(values, bounds[:, 0], bounds[:, 1]),
                            f"macro average over {n_classes} classes (one-vs-rest); {_macro_proportion_text(settings)}")
    return out


def _macro_without_width(macro: dict[str, dict[str, Any]], per_class: list[dict[str, Any]], confusion: np.ndarray,
                         y: np.ndarray, patients: np.ndarray, settings: _Settings) -> dict[str, dict[str, Any]]:
    """Macro metrics whose percentile bootstrap has no width (a perfect, or a one-class, model).

    F1 and MCC: the Jeffreys posterior of the confusion matrix (:func:`~medrec.report.stats.multiclass_posterior_ci`).
    AUC: the mean of the per-class interval bounds (each class's logit / Newcombe interval), and
    PR-AUC, Brier, ECE: the mean over classes of conservative bounded-statistic intervals; a mean of
    bounds is the interval of the mean if the classes' errors were perfectly correlated, and wider
    than needed otherwise.
    """
    n_classes = confusion.shape[0]
    n_patients = int(np.unique(patients).size)
    scale = n_patients / y.size if n_patients < y.size else 1.0
    out = {}
    for name, metric in macro.items():
        lower, upper = metric["ci95"]
        value = metric["value"]
        if not (isinstance(value, float) and math.isfinite(value)) or (math.isfinite(lower) and upper > lower):
            continue
        head = f"macro average over {n_classes} classes (one-vs-rest); every bootstrap replicate is equal, so: "
        if name in stats.COUNT_STATISTIC_RANGES:
            ci = stats.multiclass_posterior_ci(name, confusion, scale=scale, seed=settings.seed)
            method = head + ("equal-tailed 95% posterior interval under a Jeffreys Dirichlet prior (1/2 per cell) on "
                             "the confusion matrix" + (f", counts scaled to the {n_patients} patients" if scale < 1
                                                       else "") + ", bounded by the metric's edge")
        elif name == "auc" and all(entry["metrics"]["auc"]["ci95"][0] is not None
                                   and math.isfinite(entry["metrics"]["auc"]["ci95"][0]) for entry in per_class):
            bounds = np.array([entry["metrics"]["auc"]["ci95"] for entry in per_class], dtype=np.float64)
            ci = (float(bounds[:, 0].mean()), float(bounds[:, 1].mean()))
            method = head + "the mean of the per-class AUC interval bounds (conservative)"
        elif name in ("pr_auc", "brier", "ece"):
            bounds = []
            for k in range(n_classes):
                units = int(np.unique(patients[y == k]).size) if name == "pr_auc" else n_patients
                bounds.append(stats.bounded_statistic_ci(value, units))
            ci = (float(np.mean([b[0] for b in bounds])), float(np.mean([b[1] for b in bounds])))
            method = head + ("the mean over classes of the Wilson score interval of the value as a proportion of "
                             "that class's patients (conservative for a statistic in [0, 1])")
        else:
            continue
        out[name] = _metric(value, ci, method)
    return out


def _analyse_multiclass(predictions: pd.DataFrame, class_columns: list[str], threshold_source: str,
                        manifest: pd.DataFrame | None, subgroups: Sequence[str], settings: _Settings) -> dict[str, Any]:
    classes = [column[len("score_"):] for column in class_columns]
    data, reasons = _clean(predictions, class_columns)
    warnings: list[str] = []
    labels = _text(data["label"])
    unknown = ~labels.isin(classes)
    if unknown.any():
        reasons["unknown label"] = int(unknown.sum())
        warnings.append(f"{int(unknown.sum())} rows have labels outside {classes} "
                        f"(e.g. {sorted(set(labels[unknown]))[:3]}) and were excluded")
        data, labels = data[~unknown].reset_index(drop=True), labels[~unknown].reset_index(drop=True)
    if data.empty:
        raise InputError(f"predictions: no row is usable for metrics (excluded: {reasons or 'none'})")
    index = {name: k for k, name in enumerate(classes)}
    y = labels.map(index).to_numpy().astype(np.int64)
    prob = data[class_columns].to_numpy(dtype=np.float64)
    if prob.min() < 0.0 or prob.max() > 1.0:
        raise InputError(f"predictions: {', '.join(class_columns)} must be probabilities in [0, 1]; found values "
                         f"from {prob.min():g} to {prob.max():g}")
    pred = prob.argmax(axis=1)
    patients = data["patient_id"].to_numpy().astype(str)
    n_classes = len(classes)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)

    boot_names = [name for name in stats.BOOTSTRAP_STATISTICS if name != "accuracy"]
    if any(not 0 < np.sum(y == k) < y.size for k in range(n_classes)):
        boot_names = [name for name in boot_names if name not in ("auc", "pr_auc")]
        warnings.append("some class has no sample (or every sample): AUC and PR-AUC are undefined")
    boot = stats.cluster_bootstrap_multiclass(boot_names, y, prob, pred, patients, n_boot=settings.n_boot,
                                              seed=settings.seed, n_bins=settings.n_bins)
    clustered = np.unique(patients).size < y.size
    per_class = []
    for k, name in enumerate(classes):
        yk, sk, pk = (y == k).astype(np.int8), prob[:, k], (pred == k).astype(np.int8)
        metrics = _binary_metrics(yk, sk, pk, patients, settings, names=("sensitivity", "specificity", "ppv", "auc"))
        f1_ci, f1_method = stats.count_statistic_ci("f1", yk, pk, patients, boot["per_class"][k]["f1"],
                                                    seed=settings.seed)
        metrics["f1"] = _metric(boot["per_class"][k]["f1"].value, f1_ci, f1_method)
        per_class.append({"class": name, "n": int(yk.sum()), "metrics": metrics})
    macro = {
        metric: _metric(result.value, result.ci, f"macro average over {n_classes} classes (one-vs-rest); "
                        f"{result.method}")
        for metric, result in boot["macro"].items()
    }
    macro.update(_macro_without_width(macro, per_class, confusion, y, patients, settings))
    _, patient_codes = np.unique(patients, return_inverse=True)
    macro.update(_macro_proportions(y, pred, patient_codes.reshape(-1), n_classes, settings))
    accuracy_hits = int(np.trace(confusion))
    accuracy_metric = _proportion_metric("accuracy", accuracy_hits / y.size, y, pred, patient_codes.reshape(-1),
                                         settings)
    # Top level: true multi-class accuracy; every other metric is its one-vs-rest macro average
    # (balanced accuracy = macro sensitivity, as scikit-learn defines it for several classes).
    undefined = _metric(math.nan, (math.nan, math.nan), "undefined: some class is absent")
    metrics = {name: macro.get(name, undefined) for name in stats.BOOTSTRAP_STATISTICS}
    metrics["accuracy"] = accuracy_metric
    metrics["balanced_accuracy"] = {**macro["sensitivity"], "method": "macro-averaged sensitivity; "
                                    + macro["sensitivity"]["method"]}
    joined = _join_manifest(data, manifest)
    if "age" in joined.columns:
        joined["age_band"] = _age_band(joined["age"])
    subgroup_columns = _subgroup_columns(joined, subgroups)

    def group_metrics(group: str, mask: np.ndarray) -> dict[str, Any]:
        counts = np.bincount(y[mask], minlength=n_classes)
        hits = int(np.sum(y[mask] == pred[mask]))
        n = int(mask.sum())
        return {"group": group, "n": n, "n_per_class": dict(zip(classes, counts.tolist(), strict=True)),
                "n_patients": int(np.unique(patients[mask]).size),
                "small": bool(counts.min() < SMALL_GROUP),
                "metrics": {"accuracy": _metric(hits / n, stats.proportion_ci(hits, n, settings.ci_method),
                                                settings.proportion_name, numerator=hits, denominator=n)}}

    curves: dict[str, Any] = {"roc": {}}
    for k, name in enumerate(classes):
        yk = (y == k).astype(np.int8)
        if 0 < yk.sum() < yk.size:
            fpr, tpr, _ = roc_curve(yk, prob[:, k])
            keep = _downsample(fpr.size)
            curves["roc"][name] = {"fpr": fpr[keep], "tpr": tpr[keep]}
    report = {
        "schema_version": SCHEMA_VERSION,
        "task": "multiclass",
        "classes": classes,
        "positive_label": None,
        "n_rows": int(len(predictions)),
        "n_samples": int(y.size),
        "n_patients": int(np.unique(patients).size),
        "n_per_class": dict(zip(classes, np.bincount(y, minlength=n_classes).tolist(), strict=True)),
        "n_excluded": int(sum(reasons.values())),
        "excluded_reasons": reasons,
        "threshold": None,
        "threshold_source": threshold_source or "argmax (multi-class)",
        "prevalence": None,
        "metrics": metrics,
        "confusion_matrix": confusion.tolist(),
        "patient_level": None,
        "threshold_table": [],
        "prevalence_adjusted": None,
        "calibration": None,
        "subgroups": _subgroups(joined, subgroup_columns, settings, group_metrics),
        "comparison": None,
        "multiclass": {"classes": classes, "confusion_matrix": confusion.tolist(), "per_class": per_class,
                       "macro": {name: macro[name] for name in ("sensitivity", "specificity", "ppv", "f1", "auc")
                                 if name in macro}},
        "curves": curves,
        "flagged": {"false_negatives": [], "false_positives": []},
        "methods": _multiclass_methods(settings, clustered),
        "warnings": warnings,
    }
    return _jsonable(report)


def _multiclass_methods(settings: _Settings, clustered: bool) -> dict[str, str]:
    """The binary methods (per class, one-vs-rest) with the macro averages' rules."""
    methods = _methods(settings, clustered)
    boot = stats.bootstrap_method_text(settings.n_boot, True, True)
    bca = stats.bca_method_text(settings.n_boot, True, True)
    methods["bootstrap"] = (f"per-class F1: {bca}, seed {settings.seed}, with the Jeffreys-posterior interval of the "
                            "2x2 table where every replicate is equal; macro F1, MCC, AUC, PR-AUC, Brier and ECE: "
                            f"{boot} of the macro average, patients (not images) resampled within strata of the "
                            "classes they hold, and where every replicate is equal the posterior interval of the "
                            "confusion matrix (F1, MCC) or the mean of the per-class bounds (AUC, PR-AUC, Brier, ECE)")
    methods["macro_average"] = ("macro sensitivity (= balanced accuracy), specificity, PPV and NPV: "
                                + _macro_proportion_text(settings))
    return methods
