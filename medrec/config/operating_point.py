"""The ``threshold`` and ``calibration`` sections: what is fitted on the validation split after training
to turn the network's output into calibrated probabilities and a binary decision.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from medrec.config.base import _Section
from medrec.errors import ConfigError
from medrec.thresholds import ThresholdRule, parse_rule


class ThresholdConfig(_Section):
    """How the binary operating threshold is chosen on the validation split.

    Attributes:
        method: a rule of :mod:`medrec.thresholds` (``youden``, ``sensitivity:0.95``,
            ``specificity:0.9``: the grammar of ``medrec report --exploratory-threshold`` too), or
            ``target_sensitivity`` with the target in ``target_sensitivity`` (the older spelling of
            ``sensitivity:<target>``).
        target_sensitivity: the target of ``method: target_sensitivity``, in (0, 1].
    """

    method: str = "youden"
    target_sensitivity: float = Field(0.95, gt=0.0, le=1.0)

    @field_validator("method")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        if str(value).strip().lower() != "target_sensitivity":
            try:
                parse_rule(value, "threshold.method")
            except ConfigError as e:
                raise ValueError(str(e)) from e
        return str(value).strip().lower()

    @property
    def rule(self) -> ThresholdRule:
        """The parsed rule (``target_sensitivity`` becomes ``sensitivity:<target_sensitivity>``)."""
        if self.method == "target_sensitivity":
            return ThresholdRule("sensitivity", self.target_sensitivity)
        return parse_rule(self.method, "threshold.method")


class CalibrationConfig(_Section):
    """Probability calibration fitted on validation logits: ``temperature`` scaling or ``none``."""

    method: Literal["temperature", "none"] = "temperature"
