"""What was read per sample: its lesions or mask, whether its target is known, and every problem found.

Bad input never stops the read: every bad row, unmatched row or unusable mask is counted in
:attr:`Annotations.counts` and listed in :attr:`Annotations.problems` (file and line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medrec.atomicio import write_csv

PROBLEM_COLUMNS: tuple[str, ...] = ("source", "sample_id", "reason")

# every key of Annotations.counts, in the order summary() prints them
COUNT_KEYS: tuple[str, ...] = (
    "lesion_rows",  # rows of the lesion table
    "lesion_rows_matched",  # rows attached to at least one sample
    "lesion_rows_unmatched",  # rows whose study_uid / series_uid names no manifest sample
    "lesion_rows_bad",  # rows with a zero / negative / NaN diameter, a non-finite centre or no UID
    "lesion_rows_multi_sample",  # matched rows attached to more than one sample (a study with several series)
    "mask_rows",  # rows of the masks file
    "mask_rows_matched",
    "mask_rows_unmatched",
    "mask_conflicts",  # samples whose matching rows name different masks (not annotated)
    "masks_bad",  # masks missing, unreadable, holding NaN or not overlapping their image (not annotated)
    "samples_annotated",  # samples with a dense target (lesions, a usable mask, or lesion-free)
    "samples_lesion_free",  # annotated samples whose target is all zeros
    "positives_without_annotation",  # positive studies with no lesion row and no lesion in a mask (label-only)
    "negatives_with_lesions",  # negative studies that a lesion row or a mask says have a lesion (target kept zero)
)


@dataclass(frozen=True)
class Lesion:
    """One lesion of the lesion table: a sphere in patient space."""

    center_lps: tuple[float, float, float]
    diameter_mm: float
    source: str  # file and line, e.g. "lesions.csv line 7"
    contrast: float | None = None  # the optional ``contrast`` column (None when absent or not a number)


@dataclass
class Annotations:
    """Lesion annotations per sample, with what could not be used and why.

    Attributes:
        lesions: sample_id -> lesions from the lesion table.
        masks: sample_id -> mask file, or None when the masks file annotates the sample as lesion-free.
        problems: ``{"source", "sample_id", "reason"}`` per problem (file and line in ``source``).
        counts: :data:`COUNT_KEYS` -> number.
        lesion_free: samples whose target is all zeros (negative studies, empty mask cells).
        positives: samples whose label is positive (an empty mask file leaves them label-only).
        label_only: samples dropped to label-only after their mask was checked against the image grid.
        mask_sources: sample_id -> where its mask was named (file and line), for problem reports.
    """

    lesions: dict[str, list[Lesion]] = field(default_factory=dict)
    masks: dict[str, Path | None] = field(default_factory=dict)
    problems: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    lesion_free: set[str] = field(default_factory=set)
    positives: set[str] = field(default_factory=set)
    label_only: set[str] = field(default_factory=set)
    mask_sources: dict[str, str] = field(default_factory=dict)

    def is_annotated(self, sample_id: str) -> bool:
        """Whether the sample has a dense target (a mask that fails its image check turns this False)."""
        if sample_id in self.label_only:
            return False
        return sample_id in self.lesion_free or bool(self.lesions.get(sample_id)) or sample_id in self.masks

    def add_problem(self, source: str, sample_id: str, reason: str) -> None:
        """Record a problem (appendable after the read: mask checks need the image grid)."""
        self.problems.append({"source": source, "sample_id": sample_id, "reason": reason})

    def demote(self, sample_id: str, count_key: str, source: str, reason: str) -> None:
        """Make an annotated sample label-only, count why and record the problem."""
        if not self.is_annotated(sample_id):
            return
        self.label_only.add(sample_id)
        self.counts["samples_annotated"] -= 1
        self.counts[count_key] += 1
        self.add_problem(source, sample_id, reason)

    def summary(self) -> str:
        """One line for logs: every count, then the number of problems."""
        counts = ", ".join(f"{key}={self.counts.get(key, 0)}" for key in COUNT_KEYS)
        return f"annotations: {counts}, problems={len(self.problems)}"


def write_problems(path: str | Path, annotations: Annotations) -> None:
    """Write the problems as a CSV (``source, sample_id, reason``), with its header even when empty."""
    frame = pd.DataFrame(annotations.problems, columns=list(PROBLEM_COLUMNS))
    write_csv(path, frame)
