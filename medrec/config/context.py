"""The study context: what a validation is about, printed on the report's first page."""

from __future__ import annotations

from typing import Any

from pydantic import field_validator

from medrec.config.base import _Section


class StudyContext(_Section):
    """What the validation is about, printed on the report's first page (every field optional; the
    report's wording is :data:`medrec.report.document.CONTEXT_LABELS`).

    Attributes:
        intended_use: who uses the model, on whom, for what decision.
        target_condition: the condition the model detects.
        reference_standard: how the reference labels were established, and by whom.
        data_source: where the scans come from (archive, trial, public data set).
        sites: the sites that contributed scans (a list is joined with commas).
        dates: the acquisition period.
    """

    intended_use: str | None = None
    target_condition: str | None = None
    reference_standard: str | None = None
    data_source: str | None = None
    sites: str | None = None
    dates: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # YAML reads "2019-2021" as text but 2020-01-01 as a date and 3 as a number; a list of sites is joined
        if isinstance(value, list | tuple):
            return ", ".join(str(item) for item in value)
        if value is not None and not isinstance(value, str | dict):
            return str(value)
        return (value.strip() or None) if isinstance(value, str) else value
