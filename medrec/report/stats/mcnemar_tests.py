"""McNemar's test of two classifiers on the same samples, from their discordant pairs.

:func:`mcnemar`, :func:`mcnemar_exact`, :func:`mcnemar_table`, :func:`mcnemar_test`: the chi-square
test with or without Edwards' continuity correction, and the exact binomial test for few discordant pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

# Exact binomial McNemar below this many discordant pairs (the chi-square approximation is poor there).
MCNEMAR_EXACT_BELOW = 25


def mcnemar(b: int, c: int, correction: bool = True) -> tuple[float, float]:
    """McNemar's chi-square test (1 degree of freedom) on the discordant counts b and c.

    ``chi2 = (|b - c| - 1)^2 / (b + c)`` with Edwards' continuity correction, ``(b - c)^2 / (b + c)``
    without. With no discordant pair there is no evidence of a difference: ``(0.0, 1.0)``.

    Returns:
        ``(chi2, p_value)``.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return (0.0, 1.0)
    difference = abs(b - c)
    if correction:
        difference = max(difference - 1, 0)
    chi2 = difference * difference / (b + c)
    return (float(chi2), float(sps.chi2.sf(chi2, 1)))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) McNemar test: two-sided p of ``min(b, c)`` under Binomial(b + c, 1/2)."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * sps.binom.cdf(min(b, c), b + c, 0.5)))


def mcnemar_table(table: Sequence[Sequence[int]] | np.ndarray, correction: bool = True) -> tuple[float, float]:
    """McNemar's chi-square test on a 2x2 paired table ``[[a, b], [c, d]]`` (uses b and c)."""
    array = np.asarray(table)
    if array.shape != (2, 2):
        raise ValueError(f"McNemar needs a 2x2 table, got shape {array.shape}")
    return mcnemar(int(array[0, 1]), int(array[1, 0]), correction=correction)


def mcnemar_test(b: int, c: int, correction: bool = True) -> dict[str, float | int | str]:
    """McNemar's test, exact binomial when ``b + c < 25``, corrected chi-square otherwise.

    Returns:
        dict with ``b, c, statistic`` (chi2, or None for the exact test), ``p_value`` and ``method``.
    """
    if int(b) + int(c) < MCNEMAR_EXACT_BELOW:
        return {"b": int(b), "c": int(c), "statistic": None, "p_value": mcnemar_exact(b, c),
                "method": "exact binomial McNemar test (b + c < 25)"}
    chi2, p_value = mcnemar(b, c, correction=correction)
    label = "with continuity correction" if correction else "without continuity correction"
    return {"b": int(b), "c": int(c), "statistic": chi2, "p_value": p_value,
            "method": f"McNemar chi-square test {label}"}
