"""Pre-specified acceptance criteria: a bound per report metric, judged PASS / FAIL by the report
(a recipe's ``evaluation.acceptance`` or ``medrec report --acceptance FILE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from medrec.config.base import _Section
from medrec.config.loading import format_validation_error, read_yaml
from medrec.errors import ConfigError

# The report metrics an acceptance criterion may name: those where higher is better.
ACCEPTANCE_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy",
                                       "f1", "mcc", "auc", "pr_auc")


class AcceptanceCriterion(_Section):
    """One pre-specified criterion on a report metric (higher is better).

    Attributes:
        value: the point estimate must be at least this.
        lower_ci: the lower bound of the metric's 95% CI must be at least this (the criterion a
            study is powered for: the report gives the sample size that shows it with 80% power).
    """

    value: float | None = Field(None, ge=-1.0, le=1.0)
    lower_ci: float | None = Field(None, ge=-1.0, le=1.0)

    @model_validator(mode="after")
    def _has_a_bound(self) -> AcceptanceCriterion:
        if self.value is None and self.lower_ci is None:
            raise ValueError("give 'value' (point estimate at least) and / or 'lower_ci' (lower 95% CI bound at "
                             "least), e.g. {lower_ci: 0.8}")
        return self


class AcceptanceCriteria(_Section):
    """Pre-specified acceptance criteria, judged on the report's sample-level metrics (PASS / FAIL each).

    Each key is a report metric (:data:`ACCEPTANCE_METRICS`) with an :class:`AcceptanceCriterion`,
    e.g. ``sensitivity: {lower_ci: 0.80}``, ``auc: {lower_ci: 0.85}``, ``specificity: {value: 0.85}``.
    """

    sensitivity: AcceptanceCriterion | None = None
    specificity: AcceptanceCriterion | None = None
    ppv: AcceptanceCriterion | None = None
    npv: AcceptanceCriterion | None = None
    accuracy: AcceptanceCriterion | None = None
    balanced_accuracy: AcceptanceCriterion | None = None
    f1: AcceptanceCriterion | None = None
    mcc: AcceptanceCriterion | None = None
    auc: AcceptanceCriterion | None = None
    pr_auc: AcceptanceCriterion | None = None

    def criteria(self) -> list[tuple[str, AcceptanceCriterion]]:
        """``(metric, criterion)`` for every metric that has one, in :data:`ACCEPTANCE_METRICS` order."""
        return [(name, getattr(self, name)) for name in ACCEPTANCE_METRICS if getattr(self, name) is not None]


def parse_acceptance(data: Any, source: str = "acceptance criteria") -> AcceptanceCriteria:
    """Validate acceptance criteria: a mapping of metric -> criterion (also under ``acceptance:`` or
    ``evaluation: {acceptance: ...}``, so a recipe file works too).

    Raises:
        ConfigError: not a mapping, an unknown metric (with the nearest name) or a bad bound.
    """
    if isinstance(data, dict) and isinstance(data.get("evaluation"), dict) and "acceptance" in data["evaluation"]:
        data = data["evaluation"]["acceptance"]
    elif isinstance(data, dict) and set(data) == {"acceptance"}:
        data = data["acceptance"]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: acceptance criteria are a mapping of metric -> criterion, e.g. "
                          "'sensitivity: {lower_ci: 0.8}'; got " + type(data).__name__)
    try:
        return AcceptanceCriteria.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, root=AcceptanceCriteria,
                                                  what="acceptance criteria")) from e


def load_acceptance(path: str | Path) -> AcceptanceCriteria:
    """Read acceptance criteria from a YAML file (``medrec report --acceptance FILE``).

    Raises:
        ConfigError: missing file, bad YAML or invalid criteria (:func:`parse_acceptance`).
    """
    source = Path(path)
    return parse_acceptance(read_yaml(source, "acceptance criteria file not found; write a YAML mapping such as "
                                              "'auc: {lower_ci: 0.8}'"), source=str(source))
