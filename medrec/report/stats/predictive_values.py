"""Predictive values (PPV, NPV) at a stated prevalence rather than the test set's.

:func:`adjusted_ppv_npv`: predictive values at another prevalence (Bayes' rule), and
:func:`predictive_values_ci`: their logit intervals (Mercaldo, Lau & Zhou 2007).
"""

from __future__ import annotations

import math
from typing import Any

from scipy.special import expit

from medrec.report.stats.inputs import _z


def adjusted_ppv_npv(sensitivity: float, specificity: float, prevalence: float) -> tuple[float, float]:
    """Positive and negative predictive values at a given prevalence (Bayes' rule).

    ``ppv = se*p / (se*p + (1-sp)*(1-p))``, ``npv = sp*(1-p) / (sp*(1-p) + (1-se)*p)``.

    Returns:
        ``(ppv, npv)``; ``nan`` where the denominator is 0.
    """
    se, sp, p = float(sensitivity), float(specificity), float(prevalence)
    for name, value in (("sensitivity", se), ("specificity", sp), ("prevalence", p)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    true_pos, false_pos = se * p, (1.0 - sp) * (1.0 - p)
    true_neg, false_neg = sp * (1.0 - p), (1.0 - se) * p
    ppv = true_pos / (true_pos + false_pos) if true_pos + false_pos > 0 else math.nan
    npv = true_neg / (true_neg + false_neg) if true_neg + false_neg > 0 else math.nan
    return (ppv, npv)


def predictive_values_ci(tp: float, fn: float, fp: float, tn: float, prevalence: float, level: float = 0.95,
                         n_diseased: float | None = None, n_healthy: float | None = None) -> dict[str, Any]:
    """PPV and NPV at a stated prevalence with the logit intervals of Mercaldo, Lau & Zhou (2007).

    Mercaldo et al. (Stat Med 26:2170, section 2.2): with sensitivity ``Se`` from ``n1`` diseased and
    specificity ``Sp`` from ``n0`` healthy subjects and a known prevalence ``p``,
    ``logit PPV = log(Se p / ((1 - Sp)(1 - p)))`` with variance
    ``(1 - Se) / (Se n1) + Sp / ((1 - Sp) n0)``, and ``logit NPV = log(Sp (1 - p) / ((1 - Se) p))``
    with variance ``Se / ((1 - Se) n1) + (1 - Sp) / (Sp n0)``; the bounds are back-transformed.
    When a cell of the 2x2 table is 0 these are undefined, and their adjusted estimates are used
    (their Table II): ``Se~ = (n1 Se + z^2/2) / (n1 + z^2)``, ``Sp~`` likewise, ``n1 + z^2`` and
    ``n0 + z^2`` in the variances; the point estimate is then the adjusted one too (the plug-in of
    Se = 1 or Sp = 1 claims a PPV or NPV of exactly 1). Sensitivity and specificity are the only
    inputs, so the test set's own case mix does not matter (a case-control or enriched design is fine).

    Args:
        tp, fn, fp, tn: the 2x2 counts.
        prevalence: the stated prevalence, strictly between 0 and 1.
        level: confidence level.
        n_diseased, n_healthy: effective sizes to use instead of ``tp + fn`` and ``fp + tn`` (the
            counts divided by their design effects when patients contribute several samples).

    Returns:
        ``{"ppv": (value, lower, upper), "npv": (value, lower, upper), "adjusted": bool,
        "plug_in": (ppv, npv)}``; nan where a class is absent.

    Raises:
        ValueError: a prevalence outside (0, 1) or a negative count.
    """
    p = float(prevalence)
    if not 0.0 < p < 1.0:
        raise ValueError(f"prevalence must lie strictly between 0 and 1, got {prevalence}")
    counts = [float(value) for value in (tp, fn, fp, tn)]
    if any(value < 0 for value in counts):
        raise ValueError(f"2x2 counts must be >= 0, got tp={tp}, fn={fn}, fp={fp}, tn={tn}")
    tp, fn, fp, tn = counts
    n1 = float(n_diseased) if n_diseased is not None else tp + fn
    n0 = float(n_healthy) if n_healthy is not None else fp + tn
    undefined = (math.nan, math.nan, math.nan)
    if tp + fn == 0 or fp + tn == 0 or n1 <= 0 or n0 <= 0:
        return {"ppv": undefined, "npv": undefined, "adjusted": False, "plug_in": (math.nan, math.nan)}
    se, sp = tp / (tp + fn), tn / (tn + fp)
    plug_in = adjusted_ppv_npv(se, sp, p)
    z = _z(level)
    adjusted = min(tp, fn, fp, tn) == 0
    if adjusted:
        se = (n1 * se + z * z / 2.0) / (n1 + z * z)
        sp = (n0 * sp + z * z / 2.0) / (n0 + z * z)
        n1, n0 = n1 + z * z, n0 + z * z
    logit_ppv = math.log(se * p / ((1.0 - sp) * (1.0 - p)))
    var_ppv = (1.0 - se) / (se * n1) + sp / ((1.0 - sp) * n0)
    logit_npv = math.log(sp * (1.0 - p) / ((1.0 - se) * p))
    var_npv = se / ((1.0 - se) * n1) + (1.0 - sp) / (sp * n0)

    def interval(centre: float, variance: float) -> tuple[float, float, float]:
        half = z * math.sqrt(variance)
        return (float(expit(centre)), float(expit(centre - half)), float(expit(centre + half)))

    ppv = interval(logit_ppv, var_ppv)
    npv = interval(logit_npv, var_npv)
    if not adjusted:  # the point estimate stays Bayes' rule with the observed Se and Sp (the same number)
        ppv, npv = (plug_in[0], ppv[1], ppv[2]), (plug_in[1], npv[1], npv[2])
    return {"ppv": ppv, "npv": npv, "adjusted": adjusted, "plug_in": plug_in}
