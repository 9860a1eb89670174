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

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medrec.errors import ConfigError, InputError
from medrec.report.analysis.comparison import _comparison
from medrec.report.analysis.curves import _curves
from medrec.report.analysis.flagged import _flagged
from medrec.report.analysis.methods import _methods
from medrec.report.analysis.multiclass import _analyse_multiclass
from medrec.report.analysis.prevalence import STATED_PREVALENCE, _prevalence_adjusted
from medrec.report.analysis.schema import SCHEMA_VERSION, _jsonable
from medrec.report.analysis.sections import _sample_and_patient_sections
from medrec.report.analysis.settings import _Settings
from medrec.report.analysis.subgroups import _age_band, _binary_group, _subgroup_columns, _subgroups
from medrec.report.analysis.table import (
    REQUIRED_COLUMNS,
    _binary_values,
    _clean,
    _join_manifest,
    _resolve_positive_label,
    _score_columns,
    _text,
)
from medrec.report.analysis.threshold_table import _threshold_table, choose_threshold


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
