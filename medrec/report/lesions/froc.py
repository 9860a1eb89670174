"""Lesion-level results of a finding-map run: its findings against a lesion table.

Everything is computed on the studies the report analyses (scored, with a reference label); a
*study* is one row of the predictions file (a sample at ``--level series``, a group otherwise,
whose candidates are those of its member samples).

* **Hit rate**: among true-positive studies (reference positive, score at or above the operating
  threshold) that have an annotated lesion, the fraction whose top finding (``finding_x/y/z`` of
  the predictions) hits a lesion of the study; Wilson (or Clopper-Pearson) 95% CI.
* **FROC**: the candidate findings (the ``<stem>.findings.csv`` side file of ``medrec score``)
  against the lesions, sweeping a threshold on the candidates' probability. Lesion sensitivity:
  the fraction of the lesions of positive studies hit by a candidate at or above the threshold.
  False positives per study: candidates that hit no lesion, divided by the number of studies.
  At each of 1/8, 1/4, 1/2, 1, 2, 4 and 8 FP per study the sensitivity is read at the lowest
  threshold whose FP rate does not exceed the target (a step function, never interpolated
  upwards), and the competition performance metric (CPM, as in the LUNA16 challenge: Setio et al.
  2017, Med Image Anal 42:1) is the mean of these seven. Past the last candidate (the scorer keeps
  regions above a low probability, at most ten per sample) the curve stays at its last sensitivity.
* **Sensitivity by lesion diameter** (<10, 10-20, 20-30, >=30 mm) and, when the table has a
  ``contrast`` column, by tertile of the contrast magnitude ``|contrast|`` (hypodense lesions have
  a negative contrast), at the FROC point of 1 FP per study.

A finding *hits* a lesion when its distance to the lesion's centre is at most the lesion's radius
plus a tolerance, by default one voxel of the scoring grid (the largest spacing of the run's
plan, recorded in the predictions sidecar). Several candidates on one lesion detect it once and
none of them is a false positive. Positive studies without an annotated lesion are left out of
the FROC (their candidates cannot be judged) and of the hit rate, and counted; lesions of studies
that are not in the predictions, of reference-negative studies or of excluded rows are counted
and ignored.

Hand-written because no maintained Python package computes a FROC of point findings against
spherical lesions (the LUNA16 evaluation code is a stand-alone script).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medrec.annotations import Lesion
from medrec.errors import ConfigError
from medrec.report import stats

FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
BAND_FP_RATE = 1.0  # the FROC point at which sensitivity is broken down by size and contrast
DIAMETER_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<10 mm", 0.0, 10.0), ("10-20 mm", 10.0, 20.0), ("20-30 mm", 20.0, 30.0), (">=30 mm", 30.0, math.inf),
)
# distances are compared after rounding to 0.01 mm (the findings file's precision)
_DISTANCE_SLACK_MM = 1e-6

Point = tuple[float, float, float]


@dataclass(frozen=True)
class LesionCase:
    """One analysed study.

    Attributes:
        positive: the reference label is the positive class.
        predicted_positive: the study score is at or above the operating threshold.
        lesions: its annotated lesions (ignored unless ``positive``).
        candidates: ``(probability, LPS point or None)`` of each candidate finding.
        top: the LPS point of its top finding (None when unknown).
    """

    positive: bool
    predicted_positive: bool
    lesions: tuple[Lesion, ...] = ()
    candidates: tuple[tuple[float, Point | None], ...] = ()
    top: Point | None = None


@dataclass
class _Scored:
    """Per-lesion detection scores and false-positive probabilities of the FROC studies."""

    lesion_scores: list[float] = field(default_factory=list)  # best hitting candidate, -inf when none
    lesions: list[Lesion] = field(default_factory=list)
    fp_scores: list[float] = field(default_factory=list)
    n_cases: int = 0
    n_candidates: int = 0
    n_candidates_hit: int = 0
    n_candidates_without_location: int = 0
    n_positive_without_lesions: int = 0


def hits(point: Point, lesions: Sequence[Lesion], tolerance_mm: float) -> np.ndarray:
    """Which lesions a finding at ``point`` (LPS mm) hits: distance to centre <= radius + tolerance."""
    if not lesions:
        return np.zeros(0, dtype=bool)
    centres = np.array([lesion.center_lps for lesion in lesions], dtype=np.float64)
    reach = np.array([lesion.diameter_mm for lesion in lesions], dtype=np.float64) / 2 + tolerance_mm
    return np.linalg.norm(centres - np.asarray(point, dtype=np.float64), axis=1) <= reach + _DISTANCE_SLACK_MM


def _score_cases(cases: Iterable[LesionCase], tolerance_mm: float) -> _Scored:
    scored = _Scored()
    for case in cases:
        lesions = tuple(case.lesions) if case.positive else ()
        if case.positive and not lesions:
            scored.n_positive_without_lesions += 1
            continue
        scored.n_cases += 1
        best = np.full(len(lesions), -np.inf)
        for probability, point in case.candidates:
            if point is None:
                scored.n_candidates_without_location += 1
                continue
            scored.n_candidates += 1
            hit = hits(point, lesions, tolerance_mm)
            if hit.any():
                scored.n_candidates_hit += 1
                best[hit] = np.maximum(best[hit], float(probability))
            else:
                scored.fp_scores.append(float(probability))
        scored.lesion_scores.extend(best.tolist())
        scored.lesions.extend(lesions)
    return scored


def froc_curve(lesion_scores: Sequence[float], fp_scores: Sequence[float], n_cases: int) -> dict[str, list[float]]:
    """The FROC curve: one point per distinct candidate probability, from the strictest threshold down.

    Args:
        lesion_scores: per lesion, the probability of the best candidate that hits it (``-inf``: none).
        fp_scores: the probability of each candidate that hits no lesion.
        n_cases: studies over which false positives are averaged.

    Returns:
        ``threshold`` (starting at ``inf``: no candidate), ``sensitivity`` (None without lesions),
        ``fp_per_study``, ``n_detected`` and ``n_false_positives``, one entry per point.
    """
    lesions = np.sort(np.asarray(lesion_scores, dtype=np.float64))
    false = np.sort(np.asarray(fp_scores, dtype=np.float64))
    candidates = np.concatenate([lesions[np.isfinite(lesions)], false])
    thresholds = np.concatenate([[np.inf], np.unique(candidates)[::-1]])
    detected = len(lesions) - np.searchsorted(lesions, thresholds, side="left")
    false_positives = len(false) - np.searchsorted(false, thresholds, side="left")
    return {
        "threshold": thresholds.tolist(),
        "sensitivity": (detected / len(lesions)).tolist() if len(lesions) else [None] * len(thresholds),
        "fp_per_study": (false_positives / n_cases).tolist() if n_cases else [None] * len(thresholds),
        "n_detected": detected.tolist(),
        "n_false_positives": false_positives.tolist(),
    }


def froc_points(curve: Mapping[str, Sequence], targets: Sequence[float] = FP_RATES) -> list[dict[str, Any]]:
    """The curve read at each target FP rate: the lowest threshold whose FP rate does not exceed it."""
    rates = np.asarray([np.nan if r is None else r for r in curve["fp_per_study"]], dtype=np.float64)
    points = []
    for target in targets:
        if not len(rates) or np.isnan(rates).any():
            points.append({"fp_per_study_target": target, "sensitivity": None, "threshold": None,
                           "fp_per_study": None, "n_detected": None})
            continue
        index = int(np.searchsorted(rates, target + 1e-12, side="right")) - 1  # rates rise as the threshold falls
        points.append({"fp_per_study_target": target, "sensitivity": curve["sensitivity"][index],
                       "threshold": curve["threshold"][index], "fp_per_study": float(rates[index]),
                       "n_detected": int(curve["n_detected"][index])})
    return points


def _proportion(numerator: int, denominator: int, ci_method: str) -> dict[str, Any]:
    low, high = stats.proportion_ci(numerator, denominator, ci_method) if denominator else (None, None)
    return {"value": numerator / denominator if denominator else None, "ci95": [low, high],
            "numerator": int(numerator), "denominator": int(denominator), "method": _ci_name(ci_method)}


def _ci_name(ci_method: str) -> str:
    return "Wilson score interval" if ci_method == "wilson" else "Clopper-Pearson exact interval"


def _band_rows(groups: Sequence[tuple[str, np.ndarray]], detected: np.ndarray, ci_method: str) -> list[dict]:
    rows = []
    for name, members in groups:
        count, found = int(members.sum()), int((members & detected).sum())
        rows.append({"band": name, "n_lesions": count, "n_detected": found, **_proportion(found, count, ci_method)})
    return rows


def contrast_tertiles(values: Sequence[float]) -> tuple[float, float] | None:
    """The 1/3 and 2/3 quantiles of ``|contrast|`` (None with fewer than three values)."""
    magnitudes = np.abs(np.asarray(values, dtype=np.float64))
    if len(magnitudes) < 3:
        return None
    low, high = np.quantile(magnitudes, [1 / 3, 2 / 3])
    return float(low), float(high)


def lesion_level_analysis(
    cases: Sequence[LesionCase],
    tolerance_mm: float,
    ci_method: str = "wilson",
    band_fp_rate: float = BAND_FP_RATE,
) -> dict[str, Any]:
    """Hit rate, FROC with CPM, and lesion sensitivity by diameter and contrast (see the module docstring).

    Args:
        cases: the analysed studies.
        tolerance_mm: added to each lesion's radius when matching a finding.
        ci_method: ``wilson`` or ``clopper-pearson`` for the proportions.
        band_fp_rate: the FROC point (FP per study) of the diameter and contrast breakdowns.

    Returns:
        ``hit_rate``, ``froc`` (``points``, ``cpm``, ``curve``), ``operating_point``,
        ``lesion_sensitivity``, ``by_diameter``, ``by_contrast`` (None without contrast values),
        ``contrast_edges`` and the counts behind them.
    """
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ConfigError(f"the lesion hit tolerance must be a finite number of mm >= 0, got {tolerance_mm}")
    cases = list(cases)
    true_positive = [case for case in cases if case.positive and case.predicted_positive]
    judged = [case for case in true_positive if case.lesions and case.top is not None]
    inside = sum(bool(hits(case.top, case.lesions, tolerance_mm).any()) for case in judged)  # type: ignore[arg-type]
    hit_rate = {
        **_proportion(inside, len(judged), ci_method),
        "n_true_positive_studies": len(true_positive),
        "n_without_lesions": sum(1 for case in true_positive if not case.lesions),
        "n_without_location": sum(1 for case in true_positive if case.lesions and case.top is None),
    }

    scored = _score_cases(cases, tolerance_mm)
    curve = froc_curve(scored.lesion_scores, scored.fp_scores, scored.n_cases)
    points = froc_points(curve)
    sensitivities = [point["sensitivity"] for point in points]
    cpm = float(np.mean(sensitivities)) if all(value is not None for value in sensitivities) else None
    operating = froc_points(curve, (band_fp_rate,))[0]
    threshold = operating["threshold"] if operating["threshold"] is not None else math.inf
    scores = np.asarray(scored.lesion_scores, dtype=np.float64)
    detected = scores >= threshold
    diameters = np.array([lesion.diameter_mm for lesion in scored.lesions], dtype=np.float64)
    by_diameter = _band_rows([(name, (diameters >= low) & (diameters < high)) for name, low, high in DIAMETER_BANDS],
                             detected, ci_method)
    contrasts = np.array([np.nan if lesion.contrast is None else abs(lesion.contrast) for lesion in scored.lesions],
                         dtype=np.float64)
    known = np.isfinite(contrasts)
    edges = contrast_tertiles(contrasts[known])
    by_contrast = None
    if edges is not None:
        low, high = edges
        by_contrast = _band_rows([
            (f"low (|contrast| <= {low:.4g})", known & (contrasts <= low)),
            (f"middle ({low:.4g} < |contrast| <= {high:.4g})", known & (contrasts > low) & (contrasts <= high)),
            (f"high (|contrast| > {high:.4g})", known & (contrasts > high)),
        ], detected, ci_method)
    return {
        "tolerance_mm": float(tolerance_mm),
        "n_studies": len(cases),
        "n_positive_studies": sum(1 for case in cases if case.positive),
        "n_froc_studies": scored.n_cases,
        "n_lesions": len(scored.lesions),
        "n_candidates": scored.n_candidates,
        "n_candidates_hit": scored.n_candidates_hit,
        "n_false_positive_candidates": len(scored.fp_scores),
        "n_candidates_without_location": scored.n_candidates_without_location,
        "n_positive_without_lesions": scored.n_positive_without_lesions,
        "hit_rate": hit_rate,
        "froc": {"points": points, "cpm": cpm, "curve": curve,
                 "max_fp_per_study": curve["fp_per_study"][-1] if scored.n_cases else None},
        "operating_point": {**operating, "fp_per_study_target": band_fp_rate},
        "lesion_sensitivity": _proportion(int(detected.sum()), len(scores), ci_method),
        "by_diameter": by_diameter,
        "by_contrast": by_contrast,
        "contrast_edges": list(edges) if edges is not None else None,
        "n_lesions_without_contrast": int((~known).sum()),
    }
