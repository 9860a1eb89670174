"""Number formatting, in one place so that the HTML, the PDF and the console agree.

The metric names and their display style, values, confidence intervals, counts, thresholds and
lengths as the report prints them, and file paths scrubbed from messages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

# name -> (display name, "pct" for proportions shown as percentages, "dec" for plain decimals)
METRICS: dict[str, tuple[str, str]] = {
    "sensitivity": ("Sensitivity (recall)", "pct"),
    "specificity": ("Specificity", "pct"),
    "ppv": ("PPV (precision)", "pct"),
    "npv": ("NPV", "pct"),
    "accuracy": ("Accuracy", "pct"),
    "balanced_accuracy": ("Balanced accuracy", "pct"),
    "f1": ("F1 score", "dec"),
    "mcc": ("Matthews correlation", "dec"),
    "auc": ("ROC AUC", "dec"),
    "pr_auc": ("Average precision (PR AUC)", "dec"),
    "brier": ("Brier score (lower is better)", "dec"),
    "ece": ("Expected calibration error (lower is better)", "dec"),
}
KEY_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "auc", "balanced_accuracy")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(float(value))


def fmt_value(value: object, style: str = "dec") -> str:
    """``0.875`` -> ``87.5%`` (style ``pct``) or ``0.875`` (style ``dec``); missing -> ``n/a``."""
    if not is_number(value):
        return "n/a"
    number = float(value)
    return f"{100 * number:.1f}%" if style == "pct" else f"{number:.3f}"


def fmt_ci(ci: Sequence | None, style: str = "dec") -> str:
    """``[0.80, 0.92]`` -> ``80.0-92.0%`` or ``0.800-0.920``; missing -> ``n/a``.

    Bounds that differ are never printed alike: up to three more decimals are added until they
    differ (``[0.9996, 1.0]`` -> ``0.9996-1.0000``, not ``1.000-1.000``, which reads as no uncertainty).
    """
    if not ci or len(ci) != 2 or not (is_number(ci[0]) and is_number(ci[1])):
        return "n/a"
    lower, upper = float(ci[0]), float(ci[1])
    scale, suffix, decimals = (100.0, "%", 1) if style == "pct" else (1.0, "", 3)
    limit = decimals + 3
    while decimals < limit and lower != upper and f"{scale * lower:.{decimals}f}" == f"{scale * upper:.{decimals}f}":
        decimals += 1
    return f"{scale * lower:.{decimals}f}\u2013{scale * upper:.{decimals}f}{suffix}"


def prevalence_note(metric: Mapping | None) -> str:
    """``at prevalence 48.0% (test set (observed))`` for a PPV / NPV that carries its prevalence; else ``''``."""
    if not isinstance(metric, Mapping) or not is_number(metric.get("prevalence")):
        return ""
    source = str(metric.get("prevalence_source") or "").strip()
    return f"at prevalence {fmt_value(metric['prevalence'], 'pct')}" + (f" ({source})" if source else "")


def _metric_label(name: str, metric: Mapping | None, label: str) -> str:
    note = prevalence_note(metric) if name in ("ppv", "npv") else ""
    return f"{label}, {note}" if note else label


def fmt_metric(metric: Mapping | None, name: str) -> str:
    """``sensitivity`` -> ``87.5% (95% CI 80.0-92.0%)``."""
    style = METRICS.get(name, (name, "dec"))[1]
    if not metric:
        return "n/a"
    return f"{fmt_value(metric.get('value'), style)} (95% CI {fmt_ci(metric.get('ci95'), style)})"


def fmt_metric_short(metric: Mapping | None, name: str) -> str:
    """``sensitivity`` -> ``87.5% (80.0-92.0%)``, for tables whose caption says the brackets hold the 95% CI."""
    style = METRICS.get(name, (name, "dec"))[1]
    if not metric:
        return "n/a"
    return f"{fmt_value(metric.get('value'), style)} ({fmt_ci(metric.get('ci95'), style)})"


def fmt_count(value: object) -> str:
    return f"{int(value):,}" if is_number(value) else "n/a"


def fmt_threshold(value: object) -> str:
    return f"{float(value):.4g}" if is_number(value) else "n/a"


def fmt_mm(value: object) -> str:
    """``5.625`` -> ``5.62 mm``."""
    return f"{float(value):.3g} mm" if is_number(value) else "n/a"


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s:;,'\"]+)+")


def scrub_paths(text: str, limit: int = 90) -> str:
    """Replace file paths in a message by ``<path>`` (folder names can carry patient names)."""
    cleaned = _PATH.sub("<path>", str(text)).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "\u2026"


def _metric_cell(metric: Mapping | None, name: str) -> tuple[str, str]:
    style = METRICS.get(name, (name, "dec"))[1]
    if not metric:
        return "n/a", "n/a"
    return fmt_value(metric.get("value"), style), fmt_ci(metric.get("ci95"), style)


def _count_cell(metric: Mapping) -> str:
    numerator, denominator = metric.get("numerator"), metric.get("denominator")
    if is_number(numerator) and is_number(denominator):
        return f"{int(numerator)}/{int(denominator)}"
    return ""
