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
    subgroups: {column: [GROUP]}
    comparison: {...} | None
    multiclass: {...} | None
    curves: {...}
    flagged: {false_negatives: [FLAG], false_positives: [FLAG]}
    methods: {name: str}                 # one sentence per statistical method used
    warnings: [str]

    METRIC  = {value: float|None, ci95: [lo|None, hi|None], method: str}
              (+ numerator, denominator: int for proportions)
    SECTION = {n_samples, n_patients, n_positive, n_negative, prevalence, metrics, confusion_matrix}
              patient_level is a SECTION with "aggregation": "patient positive if any study is;
              score = max over its studies; prediction = any".
    ROW     = {threshold, sensitivity, specificity, ppv, npv, tp, fp, tn, fn, note}
              note: "" (grid), "operating threshold", or "reaches sensitivity >= 0.90 on these data
              (chosen on the test data)".
    prevalence_adjusted = {prevalence, ppv: METRIC, npv: METRIC}
    GROUP   = {group, n, n_positive, n_negative, n_patients, small: bool,
               metrics: {sensitivity, specificity, auc: METRIC}}   # auc value None with one class
    comparison = {n_samples, n_unusable_in_compare, threshold_b,
                  auc: {auc_a, auc_b, difference, se, z, p_value, ci95, method} | None,
                  sensitivity: MCNEMAR, specificity: MCNEMAR}
              MCNEMAR = {value_a, value_b, n, b, c, statistic, p_value, method}
              (b: correct by A only, c: correct by B only)
    multiclass = {classes, confusion_matrix: [[int]] (rows true, columns predicted, class order),
                  per_class: [{class, n, metrics: {sensitivity, specificity, ppv, f1, auc: METRIC}}],
                  macro: {sensitivity, specificity, ppv, f1, auc: METRIC}}
    curves  = {roc: {fpr, tpr, thresholds}, pr: {recall, precision},
               calibration: {bin_lower, bin_upper, mean_predicted, observed_fraction, count},
               histogram: {bin_edges, positive, negative}}       # binary; multi-class: {} except
                                                                  # roc per class {class: {fpr, tpr}}
    FLAG    = {sample_id, patient_id, score}

Statistical choices (also written into each metric's ``method``):

* Proportions (sensitivity, specificity, PPV, NPV, accuracy): Wilson score interval by default
  (``ci_method="clopper-pearson"`` for the exact one). When some patient contributes several samples
  the samples are not independent and a Wilson interval is too narrow; the interval reported is then
  the union of the Wilson interval and the patient-clustered bootstrap interval (the bootstrap alone
  collapses to a point at 0/n and n/n).
* F1, MCC, balanced accuracy, PR-AUC, Brier, ECE: patient-clustered, outcome-stratified percentile
  bootstrap (:func:`medrec.report.stats.cluster_bootstrap`).
* AUC: DeLong (Sun & Xu 2014). With several samples per patient, the union of the DeLong and the
  patient-clustered bootstrap interval (as for proportions); ``auc_method="bootstrap"`` uses the
  bootstrap alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from medrec.errors import ConfigError, InputError
from medrec.labels import distinct_labels, polarity, resolve_positive
from medrec.report import stats

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

EXPLORATORY_RULES = ("youden", "sensitivity:<x>", "specificity:<x>")


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
                                fix="pass positive_label (the run's positive class, e.g. 'tumor')")
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
    """A threshold chosen on these data (``score >= threshold`` is positive).

    Args:
        labels: 0/1 outcomes; scores: positive-class probabilities.
        rule: ``"youden"`` (maximises sensitivity + specificity - 1; the highest such threshold),
            ``"sensitivity:<x>"`` (the highest threshold whose sensitivity is at least x) or
            ``"specificity:<x>"`` (the lowest threshold whose specificity is at least x).

    Raises:
        ConfigError: unknown rule, or only one class present.
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    if y.size == 0 or y.min() == y.max():
        raise ConfigError(f"choosing a threshold by {rule!r} needs positives and negatives; got {int(y.sum())} "
                          f"positive of {y.size}")
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if rule == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    match = re.fullmatch(r"(sensitivity|specificity):(0?\.\d+|1(?:\.0*)?)", rule.strip())
    if not match:
        raise ConfigError(f"exploratory_threshold {rule!r} is not a known rule; use one of "
                          f"{', '.join(EXPLORATORY_RULES)} with x in (0, 1], e.g. 'sensitivity:0.95'")
    target = float(match.group(2))
    if match.group(1) == "sensitivity":
        return float(thresholds[int(np.flatnonzero(tpr >= target - 1e-12)[0])])
    reaching = np.flatnonzero(1.0 - fpr >= target - 1e-12)
    return float(thresholds[int(reaching[-1])])


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


def _union(first: Sequence[float], second: Sequence[float]) -> tuple[float, float]:
    lows = [value for value in (first[0], second[0]) if value is not None and math.isfinite(value)]
    highs = [value for value in (first[1], second[1]) if value is not None and math.isfinite(value)]
    return (min(lows) if lows else math.nan, max(highs) if highs else math.nan)


def _boot_names(y: np.ndarray, patients: np.ndarray, settings: _Settings,
                names: Sequence[str] | None = None) -> list[str]:
    """The metrics whose interval needs the bootstrap on these samples."""
    wanted = list(names) if names is not None else list(stats.BOOTSTRAP_STATISTICS)
    clustered = int(np.unique(patients).size) < int(y.size)
    boot_names = [name for name in wanted if name in _BOOTSTRAP_ONLY or clustered
                  or (name == "auc" and settings.auc_method == "bootstrap")]
    if not 0 < int(y.sum()) < y.size:
        boot_names = [name for name in boot_names if name not in ("auc", "pr_auc")]
    return boot_names if y.size else []


def _binary_metrics(y: np.ndarray, s: np.ndarray, pred: np.ndarray, patients: np.ndarray,
                    settings: _Settings, names: Sequence[str] | None = None,
                    boot: dict[str, stats.BootstrapResult] | None = None) -> dict[str, dict[str, Any]]:
    """METRIC dicts for every binary metric (or the given names) on one set of samples.

    ``boot``: the bootstrap results of :func:`_boot_names`, when already computed (shared weights).
    """
    wanted = list(names) if names is not None else list(stats.BOOTSTRAP_STATISTICS)
    counts = stats.confusion_counts(y, pred)
    point = stats.binary_point_metrics(y, s, pred, n_bins=settings.n_bins)
    n_samples, n_patients = int(y.size), int(np.unique(patients).size)
    clustered = n_patients < n_samples
    both_classes = 0 < int(y.sum()) < y.size

    if boot is None:
        boot = {}
        boot_names = _boot_names(y, patients, settings, names)
        if boot_names:
            boot = stats.cluster_bootstrap(boot_names, y, s, patients, n_boot=settings.n_boot, seed=settings.seed,
                                           predictions=pred, n_bins=settings.n_bins)  # type: ignore[assignment]
    boot_text = stats.bootstrap_method_text(settings.n_boot, True, True)
    dependence = (f"; {n_samples} samples from {n_patients} patients are not independent, so the interval is "
                  f"the union of that interval and a {boot_text}") if clustered else ""

    out: dict[str, dict[str, Any]] = {}
    for name in wanted:
        if name in _PROPORTIONS:
            numerator_keys, denominator_keys = _PROPORTIONS[name]
            keys = (numerator_keys,) if isinstance(numerator_keys, str) else numerator_keys
            numerator = sum(counts[key] for key in keys)
            denominator = sum(counts[key] for key in denominator_keys)
            ci = stats.proportion_ci(numerator, denominator, settings.ci_method)
            if clustered and name in boot:
                ci = _union(ci, boot[name].ci)
            out[name] = _metric(point[name], ci, settings.proportion_name + dependence,
                                numerator=numerator, denominator=denominator)
        elif name == "auc":
            if not both_classes:
                out[name] = _metric(math.nan, (math.nan, math.nan), "AUC undefined: only one class present")
            elif settings.auc_method == "bootstrap":
                out[name] = _metric(point[name], boot[name].ci, boot[name].method)
            else:
                _, lower, upper = stats.delong_ci(y, s)
                ci = (lower, upper)
                method = stats.DELONG_METHOD
                if clustered and settings.auc_method == "auto":
                    ci = _union(ci, boot[name].ci)
                    method += dependence
                elif clustered:
                    method += f"; treats the {n_samples} samples of {n_patients} patients as independent"
                out[name] = _metric(point[name], ci, method)
        else:
            if name not in boot:
                out[name] = _metric(math.nan, (math.nan, math.nan), f"{name} undefined: only one class present")
                continue
            out[name] = _metric(point[name], boot[name].ci, boot[name].method)
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


def _sample_and_patient_sections(y: np.ndarray, s: np.ndarray, pred: np.ndarray, patients: np.ndarray,
                                 threshold: float, settings: _Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sample-level section and the patient-level section, bootstrapped on one set of weights.

    The patient-level data have one row per patient whose label is "any study positive", so its
    outcome strata are the sample-level ones and its cluster bootstrap is a plain stratified
    bootstrap of the same patients: the same patient weight matrix serves both (it is what two
    separate calls with this seed would draw), and it is drawn once.
    """
    patient_y, patient_s, patient_pred, patient_ids = _patient_data(y, s, patients, threshold)
    tasks = [
        {"statistics": _boot_names(y, patients, settings), "labels": y, "scores": s, "predictions": pred,
         "clusters": patients},
        {"statistics": _boot_names(patient_y, patient_ids, settings), "labels": patient_y, "scores": patient_s,
         "predictions": patient_pred, "clusters": patient_ids},
    ]
    boots = stats.cluster_bootstrap_shared([task for task in tasks if task["statistics"]], n_boot=settings.n_boot,
                                           seed=settings.seed, n_bins=settings.n_bins)
    results = iter(boots)
    shared = [next(results) if task["statistics"] else {} for task in tasks]
    sample = _binary_section(y, s, pred, patients, settings, boot=shared[0])
    patient = _binary_section(patient_y, patient_s, patient_pred, patient_ids, settings, boot=shared[1])
    patient["aggregation"] = "patient positive if any study is; score = max over its studies; prediction = any"
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


def _prevalence_adjusted(metrics: dict[str, dict[str, Any]], prevalence: float) -> dict[str, Any]:
    if not 0.0 <= prevalence <= 1.0:
        raise ConfigError(f"prevalence must lie in [0, 1], got {prevalence}")
    sens, spec = metrics["sensitivity"], metrics["specificity"]
    if sens["value"] is None or math.isnan(sens["value"]) or math.isnan(spec["value"]):
        nan_metric = _metric(math.nan, (math.nan, math.nan), "undefined: sensitivity or specificity undefined")
        return {"prevalence": prevalence, "ppv": nan_metric, "npv": dict(nan_metric)}
    ppv, npv = stats.adjusted_ppv_npv(sens["value"], spec["value"], prevalence)
    # PPV and NPV both increase with sensitivity and with specificity: the bounds map to bounds.
    ppv_lo, npv_lo = stats.adjusted_ppv_npv(sens["ci95"][0], spec["ci95"][0], prevalence)
    ppv_hi, npv_hi = stats.adjusted_ppv_npv(sens["ci95"][1], spec["ci95"][1], prevalence)
    method = (f"Bayes' rule at prevalence {prevalence:g}; interval from the sensitivity and specificity "
              "interval bounds taken together (conservative)")
    return {"prevalence": prevalence, "ppv": _metric(ppv, (ppv_lo, ppv_hi), method),
            "npv": _metric(npv, (npv_lo, npv_hi), method)}


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


def _curves(y: np.ndarray, s: np.ndarray, n_bins: int) -> dict[str, Any]:
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
    reasons: dict[str, int] = {}
    keep = pd.Series(True, index=frame.index)
    if "error" in frame.columns:
        failed = ~_is_blank(frame["error"])
        reasons["error"] = int(failed.sum())
        keep &= ~failed
    unlabelled = keep & _is_blank(frame["label"])
    reasons["no label"] = int(unlabelled.sum())
    keep &= ~unlabelled
    numeric = frame[list(score_columns)].apply(pd.to_numeric, errors="coerce")
    unscored = keep & ~np.isfinite(numeric.to_numpy(dtype=np.float64)).all(axis=1)
    reasons["no score"] = int(unscored.sum())
    keep &= ~unscored
    frame[list(score_columns)] = numeric
    return frame[keep].reset_index(drop=True), {key: value for key, value in reasons.items() if value}


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
        prevalence: a target-population prevalence for adjusted PPV / NPV.
        ci_method: ``"wilson"`` or ``"clopper-pearson"`` for proportions.
        n_boot: bootstrap replicates; seed: their seed (same seed, same intervals).
        compare: predictions of another model on the same samples (paired DeLong, McNemar).
        exploratory_threshold: with threshold None, choose it on these data (``"youden"``,
            ``"sensitivity:0.95"``, ``"specificity:0.9"``); labelled EXPLORATORY.
        positive_label: the positive class's label text (binary); default: recognised from the
            labels (1/0, true/false, tumor/normal, positive/negative, ...).
        auc_method: ``"auto"`` (DeLong; with several samples per patient, widened by the clustered
            bootstrap), ``"delong"`` or ``"bootstrap"``.
        n_bins: calibration bins (ECE, reliability curve).
        compare_threshold: threshold of the ``compare`` model (default: the same operating threshold).

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
        "prevalence_adjusted": (_prevalence_adjusted(section["metrics"], float(prevalence))
                                if prevalence is not None else None),
        "subgroups": _subgroups(joined, subgroup_columns, settings, _binary_group(y, s, pred, patients, settings)),
        "comparison": (_comparison(data, y, s, pred, _text(predictions["sample_id"]), compare,
                                   threshold if compare_threshold is None else float(compare_threshold))
                       if compare is not None else None),
        "multiclass": None,
        "curves": _curves(y, s, settings.n_bins),
        "flagged": _flagged(data, y, s, pred),
        "methods": _methods(settings, section["n_patients"] < section["n_samples"]),
        "warnings": warnings,
    }
    return _jsonable(report)


def _methods(settings: _Settings, clustered: bool) -> dict[str, str]:
    boot = stats.bootstrap_method_text(settings.n_boot, True, True)
    methods = {
        "proportions": settings.proportion_name + (
            f", widened to include the {boot} because patients contribute several samples" if clustered else ""),
        "auc": stats.DELONG_METHOD if settings.auc_method != "bootstrap" else boot,
        "bootstrap": f"{boot}, seed {settings.seed}; patients (not images) are resampled, positive-holding and "
                     "negative-only patients separately",
        "calibration": f"ECE over {settings.n_bins} equal-width bins [0, 1/{settings.n_bins}), ..., "
                       f"[{settings.n_bins - 1}/{settings.n_bins}, 1], weighted by bin count",
        "threshold_table": "rows at the operating threshold, a grid 0.1..0.9, and the thresholds reaching "
                           "sensitivity 0.90 / 0.95 on these data (exploratory)",
    }
    return methods


# --------------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------------


def _comparison(data: pd.DataFrame, y: np.ndarray, s: np.ndarray, pred: np.ndarray, all_ids: pd.Series,
                compare: pd.DataFrame, threshold_b: float) -> dict[str, Any]:
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
        result["auc"] = {**stats.delong_paired_test(ya, sa, sb),
                         "method": "paired DeLong test (Sun & Xu 2014) of AUC(first) - AUC(second); "
                                   "samples treated as independent"}
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


def _macro_proportions(confusion: np.ndarray, boot: dict[str, stats.BootstrapResult]) -> dict[str, dict[str, Any]]:
    """Macro sensitivity, specificity, PPV and NPV with an interval that keeps its width at 0 and 1.

    A percentile bootstrap of a macro average has no width when every class's proportion is 0 or 1
    (a model that predicts one class for everything, or a perfect one), which reads as certainty.
    The interval is the union of the bootstrap's (which sees patient clustering) and the Jeffreys
    interval of the mean of the per-class proportions (:func:`~medrec.report.stats.mean_proportion_ci`).
    """
    n_classes = confusion.shape[0]
    tp = np.diag(confusion)
    counts = {"tp": tp, "fn": confusion.sum(axis=1) - tp, "fp": confusion.sum(axis=0) - tp}
    counts["tn"] = confusion.sum() - counts["tp"] - counts["fn"] - counts["fp"]
    out = {}
    for name in ("sensitivity", "specificity", "ppv", "npv"):
        result = boot.get(name)
        numerator, denominator = _PROPORTIONS[name]
        successes = counts[numerator]
        totals = sum(counts[key] for key in denominator)
        if result is None or np.any(totals == 0):
            continue  # undefined for some class: the bootstrap's nan stands
        interval = stats.mean_proportion_ci(successes, totals)
        out[name] = _metric(result.value, _union(interval, result.ci),
                            f"macro average over {n_classes} classes (one-vs-rest); the union of the Jeffreys "
                            f"interval of the mean of the {n_classes} per-class proportions and a {result.method}")
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
        metrics["f1"] = _metric(boot["per_class"][k]["f1"].value, boot["per_class"][k]["f1"].ci,
                                boot["per_class"][k]["f1"].method)
        per_class.append({"class": name, "n": int(yk.sum()), "metrics": metrics})
    macro = {
        metric: _metric(result.value, result.ci, f"macro average over {n_classes} classes (one-vs-rest); "
                        f"{result.method}")
        for metric, result in boot["macro"].items()
    }
    macro.update(_macro_proportions(confusion, boot["macro"]))
    accuracy_hits = int(np.trace(confusion))
    accuracy_ci = stats.proportion_ci(accuracy_hits, int(y.size), settings.ci_method)
    accuracy_method = settings.proportion_name
    if clustered:
        accuracy_ci = _union(accuracy_ci, boot["accuracy"].ci)
        accuracy_method += (f"; {y.size} samples from {np.unique(patients).size} patients are not independent, so "
                            f"the interval is the union of that interval and a {boot['accuracy'].method}")
    # Top level: true multi-class accuracy; every other metric is its one-vs-rest macro average
    # (balanced accuracy = macro sensitivity, as scikit-learn defines it for several classes).
    undefined = _metric(math.nan, (math.nan, math.nan), "undefined: some class is absent")
    metrics = {name: macro.get(name, undefined) for name in stats.BOOTSTRAP_STATISTICS}
    metrics["accuracy"] = _metric(accuracy_hits / y.size, accuracy_ci, accuracy_method,
                                  numerator=accuracy_hits, denominator=int(y.size))
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
        "subgroups": _subgroups(joined, subgroup_columns, settings, group_metrics),
        "comparison": None,
        "multiclass": {"classes": classes, "confusion_matrix": confusion.tolist(), "per_class": per_class,
                       "macro": {name: macro[name] for name in ("sensitivity", "specificity", "ppv", "f1", "auc")
                                 if name in macro}},
        "curves": curves,
        "flagged": {"false_negatives": [], "false_positives": []},
        "methods": _methods(settings, clustered),
        "warnings": warnings,
    }
    return _jsonable(report)
