"""Operating thresholds: one rule grammar for recipes, model.json and the report.

The decision is ``positive if score >= threshold``. A threshold is chosen on data by a rule:

* ``youden``: maximise Youden's J = sensitivity + specificity - 1 (ties: the higher threshold, the
  more specific one);
* ``sensitivity:<x>``: the highest threshold whose sensitivity reaches x (the best specificity
  that still meets the target);
* ``specificity:<x>``: the lowest threshold whose specificity reaches x (the best sensitivity
  that still meets the target);

with x in (0, 1]. ``target_sensitivity:<x>``, the name runs recorded before, reads as
``sensitivity:<x>``. Candidate thresholds are the distinct scores (scikit-learn's ROC curve), so
the sensitivity and specificity given with a threshold are exactly what the rule gives on the
scores it was chosen on.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, overload

import numpy as np
from sklearn.metrics import roc_curve

from medrec.errors import ConfigError

RULE_HELP = "'youden', 'sensitivity:<x>' or 'specificity:<x>' with x in (0, 1], e.g. 'sensitivity:0.95'"
_RULE = re.compile(r"^(youden|(target_sensitivity|sensitivity|specificity):(0?\.\d+|1(?:\.0*)?))$")


@dataclass(frozen=True)
class ThresholdRule:
    """A parsed rule: ``kind`` is ``youden``, ``sensitivity`` or ``specificity``; ``target`` None for youden."""

    kind: str
    target: float | None = None

    @property
    def text(self) -> str:
        """The rule as written in recipes, model.json and reports (``sensitivity:0.95``)."""
        return self.kind if self.target is None else f"{self.kind}:{self.target:g}"


def parse_rule(rule: str, setting: str = "threshold rule") -> ThresholdRule:
    """Read a threshold rule (see the module docstring).

    Args:
        rule: the rule text (case and surrounding spaces ignored).
        setting: where it was written (``threshold.method``, ``--exploratory-threshold``), for the message.

    Raises:
        ConfigError: not a rule of the grammar, or a target of 0.
    """
    text = str(rule).strip().lower()
    match = _RULE.match(text)
    if not match:
        raise ConfigError(f"{setting} {rule!r} is not a known rule; use {RULE_HELP}")
    if match.group(1) == "youden":
        return ThresholdRule("youden")
    target = float(match.group(3))
    if target <= 0.0:
        raise ConfigError(f"{setting} {rule!r}: the target must lie in (0, 1]")
    kind = "sensitivity" if match.group(2) == "target_sensitivity" else match.group(2)
    return ThresholdRule(kind, target)


@dataclass(frozen=True)
class ThresholdChoice:
    """An operating threshold and how it was chosen.

    Attributes:
        value: the threshold; a sample is positive when its score is >= value.
        method: the rule (:attr:`ThresholdRule.text`).
        sensitivity: sensitivity at ``value`` on the scores it was chosen on.
        specificity: specificity at ``value`` on the scores it was chosen on.
    """

    value: float
    method: str
    sensitivity: float
    specificity: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_inputs(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y_true).astype(bool).ravel()
    values = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != values.shape:
        raise ValueError(f"y_true has {labels.size} entries but scores has {values.size}")
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or infinite values")
    if labels.all() or not labels.any():
        raise ValueError(
            "threshold choice needs both positive and negative samples; "
            f"got {int(labels.sum())} positive of {labels.size}"
        )
    return labels, values


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, rule: str | ThresholdRule = "youden") -> ThresholdChoice:
    """Choose the operating threshold of a binary classifier by ``rule``.

    Args:
        y_true: 1 for the positive class, 0 otherwise.
        scores: the positive-class probability (or any score, higher = more positive).
        rule: a rule of the grammar (text or parsed).

    Returns:
        The chosen :class:`ThresholdChoice`.

    Raises:
        ConfigError: an unknown rule.
        ValueError: only one class present, or mismatched / non-finite inputs.
    """
    parsed = rule if isinstance(rule, ThresholdRule) else parse_rule(rule)
    labels, values = _check_inputs(y_true, scores)
    fpr, tpr, thresholds = roc_curve(labels, values, drop_intermediate=False)
    # roc_curve starts with +inf (nothing positive); it is never a usable operating point.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    target = 0.0 if parsed.target is None else parsed.target - 1e-12
    if parsed.kind == "youden":
        index = int(np.argmax(tpr - fpr))  # argmax takes the first maximum: the highest threshold
    elif parsed.kind == "sensitivity":
        index = int(np.flatnonzero(tpr >= target)[0])  # tpr reaches 1 at the lowest threshold
    else:
        reaching = np.flatnonzero(1.0 - fpr >= target)
        if not reaching.size:  # the highest score is a negative's: only a threshold above every score is that specific
            raise ValueError(f"no threshold at a score meets {parsed.text}: the highest score "
                             "belongs to a negative")
        index = int(reaching[-1])
    return ThresholdChoice(
        value=float(thresholds[index]),
        method=parsed.text,
        sensitivity=float(tpr[index]),
        specificity=float(1.0 - fpr[index]),
    )


def specificity_threshold(negative_scores: np.ndarray, rule: str | ThresholdRule,
                          upper: float = 1.0) -> tuple[float, float]:
    """A ``specificity:<x>`` rule on negatives alone (no positive to weigh it against).

    The same choice as :func:`choose_threshold` makes for that rule: the lowest candidate (a
    distinct score) whose specificity reaches x, i.e. the false-positive rate ``1 - x`` on these
    negatives. When no score is such a threshold (fewer than ``1 / (1 - x)`` negatives), the
    threshold lies just above the highest score (at most ``upper``, the top of the score range).

    Returns:
        The threshold and the specificity it gives on ``negative_scores``.

    Raises:
        ConfigError: an unknown rule.
        ValueError: not a specificity rule, no score, or non-finite scores.
    """
    parsed = rule if isinstance(rule, ThresholdRule) else parse_rule(rule)
    if parsed.kind != "specificity" or parsed.target is None:
        raise ValueError(f"only a specificity rule can be met on negatives alone, not {parsed.text}")
    values = np.sort(np.asarray(negative_scores, dtype=np.float64).ravel())
    if not values.size or not np.isfinite(values).all():
        raise ValueError("specificity_threshold needs finite scores of at least one negative")
    candidates = np.unique(values)
    specificity = np.searchsorted(values, candidates, side="left") / values.size
    reaching = np.flatnonzero(specificity >= parsed.target - 1e-12)
    if not reaching.size:  # too few negatives for the rate: just above the highest of them
        value = min(float(np.nextafter(values[-1], np.inf)), upper)
        return value, float((values < value).mean())
    index = int(reaching[0])
    return float(candidates[index]), float(specificity[index])


@overload
def is_positive(scores: float, threshold: float) -> bool: ...


@overload
def is_positive(scores: np.ndarray, threshold: float) -> np.ndarray: ...


def is_positive(scores: float | np.ndarray, threshold: float) -> bool | np.ndarray:
    """The decision rule of every binary output of medrec: positive when ``score >= threshold``."""
    decided = np.asarray(scores, dtype=np.float64) >= threshold
    return bool(decided) if decided.ndim == 0 else decided


def sensitivity_specificity(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of the rule ``score >= threshold``."""
    labels, values = _check_inputs(y_true, scores)
    predicted = is_positive(values, threshold)
    sensitivity = float((predicted & labels).sum() / labels.sum())
    specificity = float((~predicted & ~labels).sum() / (~labels).sum())
    return sensitivity, specificity
