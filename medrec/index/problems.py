"""What the index records about a file it could not use (a row of ``qc.csv``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A file that cannot become (part of) a sample, with a short machine code and a reason."""

    path: str
    code: str
    reason: str
    series_uid: str = ""
