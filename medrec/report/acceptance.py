"""Pre-specified acceptance criteria: PASS / FAIL per criterion, and the sample size that would show each.

A criterion names a report metric and a bound (:class:`medrec.config.AcceptanceCriterion`):
``value`` (the point estimate must reach it) and / or ``lower_ci`` (the lower bound of the 95% CI
must reach it). :func:`judge_acceptance` judges them on the report's sample-level metrics; a
report is never an error, so a FAIL changes no exit status.

For every ``lower_ci`` criterion it also gives the sample size that shows the bound with 80%
power if the metric's true value is the one observed, so that a reader sees whether a FAIL (or a
narrow PASS) comes from the model or from a test set too small to tell:

* proportions (sensitivity, specificity, PPV, NPV, accuracy): exact binomial power of the Wilson
  score interval's lower bound. The Wilson interval is the inversion of the score test, so its
  lower bound is at least ``p0`` exactly when ``x / n >= p0 + z sqrt(p0 (1 - p0) / n)``; the power
  is ``P(X >= that x)`` for ``X ~ Binomial(n, observed)``. Exact power saw-tooths with ``n``: the
  size given is the smallest from which the power stays at or above 80%. Where patients contribute
  several samples the count is multiplied by the metric's design effect.
* AUC: Hanley & McNeil's (1982) variance of the AUC, with the test set's ratio of negatives to
  positives, in the one-sample formula ``A1 - A0 >= z_a SE(A0) + z_b SE(A1)`` (Obuchowski 1998).

Written here rather than taken from a library: statsmodels' power classes use the normal
approximation of the Wald interval, which is not the interval the report prints, and none gives
the Hanley-McNeil AUC sample size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as sps

if TYPE_CHECKING:  # medrec.config imports torch (through medrec.transforms); judging needs only .criteria()
    from medrec.config import AcceptanceCriteria

POWER = 0.8
CONFIDENCE = 0.95
MAX_SAMPLE_SIZE = 100_000

PASS, FAIL, NOT_EVALUABLE = "PASS", "FAIL", "NOT EVALUABLE"

# proportion -> the samples its denominator counts (singular, plural)
PROPORTION_UNITS: dict[str, tuple[str, str]] = {
    "sensitivity": ("reference-positive sample", "reference-positive samples"),
    "specificity": ("reference-negative sample", "reference-negative samples"),
    "ppv": ("model-positive sample", "model-positive samples"),
    "npv": ("model-negative sample", "model-negative samples"),
    "accuracy": ("sample", "samples"),
}
PROPORTION_METHOD = ("exact binomial power of the Wilson score interval's lower bound at the observed value "
                     "(smallest n from which the power stays >= 80%; times the design effect where patients "
                     "contribute several samples)")
AUC_METHOD = ("Hanley & McNeil (1982) AUC variance at the bound and at the observed AUC, one-sample normal "
              "approximation (Obuchowski 1998), at the test set's ratio of negatives to positives")


def _z(confidence: float) -> float:
    """The normal quantile of a two-sided interval's lower bound (1.96 for 95%)."""
    return float(sps.norm.ppf(1.0 - (1.0 - confidence) / 2.0))


def proportion_sample_size(observed: float, bound: float, power: float = POWER, confidence: float = CONFIDENCE,
                           n_max: int = MAX_SAMPLE_SIZE) -> int | None:
    """The denominator a proportion needs for its Wilson lower bound to reach ``bound`` with ``power``.

    Args:
        observed: the proportion assumed true (the one observed).
        bound: the bound the lower end of the two-sided ``confidence`` interval must reach.
        power: the probability of showing it.
        confidence: the interval's level.
        n_max: the largest size searched.

    Returns:
        The smallest ``n`` from which the power stays at least ``power`` up to ``n_max`` (exact
        binomial power saw-tooths with ``n``), or None when no ``n`` up to ``n_max`` reaches it
        (the observed value does not exceed the bound, the bound is 1, or it needs more than ``n_max``).
    """
    if not (0.0 <= observed <= 1.0) or bound >= 1.0 or observed <= bound:
        return None
    if bound <= 0.0:
        return 1
    z = _z(confidence)
    n = np.arange(1, n_max + 1, dtype=float)
    # Wilson lower bound >= bound  <=>  x >= n bound + z sqrt(n bound (1 - bound))  (score-test inversion)
    needed = np.ceil(n * bound + z * np.sqrt(n * bound * (1.0 - bound)) - 1e-9)
    achieved = np.where(needed <= n, sps.binom.sf(needed - 1.0, n, observed), 0.0)
    short = np.flatnonzero(achieved < power)
    if not len(short):
        return 1
    return None if short[-1] == len(n) - 1 else int(short[-1] + 2)


def hanley_mcneil_se(auc: float, n_positive: float | np.ndarray,
                     n_negative: float | np.ndarray) -> float | np.ndarray:
    """Hanley & McNeil's (1982) standard error of an AUC from ``n_positive`` and ``n_negative`` samples
    (``Q1 = A / (2 - A)``, ``Q2 = 2 A^2 / (1 + A)``); arrays of sizes give an array."""
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    variance = (auc * (1.0 - auc) + (np.asarray(n_positive) - 1.0) * (q1 - auc * auc)
                + (np.asarray(n_negative) - 1.0) * (q2 - auc * auc)) \
        / (np.asarray(n_positive) * np.asarray(n_negative))
    se = np.sqrt(np.maximum(variance, 0.0))
    return float(se) if se.ndim == 0 else se


def auc_sample_size(observed: float, bound: float, negatives_per_positive: float, power: float = POWER,
                    confidence: float = CONFIDENCE, n_max: int = MAX_SAMPLE_SIZE) -> tuple[int, int] | None:
    """The positives and negatives an AUC needs for its lower bound to reach ``bound`` with ``power``.

    Uses ``observed - bound >= z_a SE(bound) + z_b SE(observed)`` with Hanley-McNeil standard
    errors and ``n_negative = ceil(negatives_per_positive * n_positive)``.

    Returns:
        ``(n_positive, n_negative)``, or None when the observed AUC does not exceed the bound or
        more than ``n_max`` positives would be needed.
    """
    if not (0.0 < bound < 1.0) or observed <= bound or observed > 1.0 or negatives_per_positive <= 0:
        return None
    z_a, z_b = _z(confidence), float(sps.norm.ppf(power))
    n_positive = np.arange(2, n_max + 1, dtype=float)
    n_negative = np.ceil(negatives_per_positive * n_positive)
    shown = observed - bound >= z_a * hanley_mcneil_se(bound, n_positive, n_negative) \
        + z_b * hanley_mcneil_se(observed, n_positive, n_negative)
    if not shown.any():
        return None
    first = int(np.argmax(shown))  # the condition only gets easier with n: the first size that meets it
    return int(n_positive[first]), int(n_negative[first])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _sample_size(name: str, bound: float, metric: Mapping, report: Mapping) -> dict[str, Any]:
    """The sample size that shows ``metric >= bound`` at its lower CI bound, beside what the test set has."""
    observed = metric.get("value")
    n_analysed = report.get("n_samples")
    if report.get("task") == "multiclass":
        return {"method": "", "n_needed": None, "unit": "", "n_in_test_set": None, "total_needed": None,
                "enough": None, "note": "no sample-size formula for macro-averaged metrics"}
    if name in PROPORTION_UNITS:
        singular, plural = PROPORTION_UNITS[name]
        denominator = metric.get("denominator")
        needed = proportion_sample_size(float(observed), bound) if observed is not None else None
        design_effect = metric.get("design_effect")
        if needed is not None and isinstance(design_effect, int | float) and design_effect > 1.0:
            needed = math.ceil(needed * float(design_effect))
        total = (math.ceil(needed * n_analysed / denominator) if needed is not None and denominator
                 and isinstance(n_analysed, int | float) else None)
        return {"method": PROPORTION_METHOD, "n_needed": needed, "unit": plural, "unit_singular": singular,
                "n_in_test_set": denominator, "total_needed": total,
                "enough": None if needed is None or denominator is None else bool(denominator >= needed),
                "note": "" if needed is not None else _unreachable(observed, bound)}
    if name == "auc":
        n_positive, n_negative = report.get("n_positive"), report.get("n_negative")
        found = None
        if observed is not None and n_positive and n_negative:
            found = auc_sample_size(float(observed), bound, float(n_negative) / float(n_positive))
        return {"method": AUC_METHOD, "n_needed": found[0] if found else None, "unit": "reference-positive samples",
                "unit_singular": "reference-positive sample", "n_negative_needed": found[1] if found else None,
                "n_in_test_set": n_positive, "n_negative_in_test_set": n_negative,
                "total_needed": sum(found) if found else None,
                "enough": (None if found is None or not n_positive else
                           bool(n_positive >= found[0] and n_negative >= found[1])),
                "note": "" if found is not None else _unreachable(observed, bound)}
    return {"method": "", "n_needed": None, "unit": "", "n_in_test_set": None, "total_needed": None, "enough": None,
            "note": "no closed-form sample size for this metric (bootstrap interval)"}


def _unreachable(observed: float | None, bound: float) -> str:
    if observed is None:
        return "the metric was not computed"
    if observed <= bound:
        return (f"no sample size shows a bound of {bound:g} when the observed value ({_fmt(observed)}) does not "
                "exceed it")
    if bound >= 1.0:
        return "a lower bound of 1 cannot be shown"
    return f"more than {MAX_SAMPLE_SIZE:,} needed: the observed value is too close to the bound"


def judge_acceptance(criteria: AcceptanceCriteria, report: Mapping, source: str,
                     caveat: str = "") -> dict[str, Any] | None:
    """Judge pre-specified criteria on a report's sample-level metrics.

    Args:
        criteria: the criteria (None or empty: no judgement).
        report: the report dict (``metrics``, ``n_samples``, ``n_positive``, ``n_negative``,
            ``threshold_kind``).
        source: where the criteria came from (``recipe evaluation.acceptance``, ``--acceptance FILE``).
        caveat: what the reader must know about the data judged (e.g. pooled cross-validation
            predictions rather than a locked test split); printed beside the verdict.

    Returns:
        ``{"source", "overall", "n_pass", "n_fail", "criteria": [CRITERION], "power", "confidence",
        "rule", "caveat"}`` with ``CRITERION = {metric, required: {value, lower_ci}, observed,
        ci95, verdict, reasons: [str], sample_size}``; ``sample_size`` is None for criteria with
        no ``lower_ci``. None when there are no criteria.
    """
    chosen = criteria.criteria() if criteria is not None else []
    if not chosen:
        return None
    metrics = report.get("metrics") or {}
    judged = []
    for name, criterion in chosen:
        metric = metrics.get(name) if isinstance(metrics.get(name), Mapping) else {}
        value = metric.get("value")
        ci = metric.get("ci95") or [None, None]
        lower = ci[0] if len(ci) == 2 else None
        reasons, verdicts = [], []
        if criterion.value is not None:
            if value is None:
                verdicts.append(NOT_EVALUABLE)
                reasons.append("point estimate not available")
            else:
                met = float(value) >= criterion.value
                verdicts.append(PASS if met else FAIL)
                reasons.append(f"point estimate {_fmt(value)} {'>=' if met else '<'} {criterion.value:g}")
        if criterion.lower_ci is not None:
            if lower is None:
                verdicts.append(NOT_EVALUABLE)
                reasons.append("95% CI not available")
            else:
                met = float(lower) >= criterion.lower_ci
                verdicts.append(PASS if met else FAIL)
                reasons.append(f"lower 95% CI bound {_fmt(lower)} {'>=' if met else '<'} {criterion.lower_ci:g}")
        verdict = FAIL if FAIL in verdicts else (NOT_EVALUABLE if NOT_EVALUABLE in verdicts else PASS)
        judged.append({
            "metric": name,
            "required": {"value": criterion.value, "lower_ci": criterion.lower_ci},
            "observed": value,
            "ci95": list(ci) if len(ci) == 2 else [None, None],
            "verdict": verdict,
            "reasons": reasons,
            "sample_size": (_sample_size(name, criterion.lower_ci, metric, report)
                            if criterion.lower_ci is not None and metric else None),
        })
    verdicts = [entry["verdict"] for entry in judged]
    overall = FAIL if FAIL in verdicts else (NOT_EVALUABLE if NOT_EVALUABLE in verdicts else PASS)
    caveats = [caveat] if caveat else []
    if report.get("threshold_kind") == "exploratory":
        caveats.append("the operating threshold was chosen on these data (exploratory): criteria on threshold-"
                       "dependent metrics are judged at an optimistic operating point")
    return {
        "source": source,
        "overall": overall,
        "n_pass": verdicts.count(PASS),
        "n_fail": verdicts.count(FAIL),
        "n_not_evaluable": verdicts.count(NOT_EVALUABLE),
        "criteria": judged,
        "power": POWER,
        "confidence": CONFIDENCE,
        "rule": "a criterion passes when each bound it sets is reached (>=): 'value' by the point estimate, "
                "'lower_ci' by the lower bound of the 95% CI printed in this report",
        "caveat": "; ".join(caveats),
    }
