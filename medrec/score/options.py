"""What a ``medrec score`` call is asked to do (:class:`ScoreOptions`) and what it did (:class:`ScoreResult`)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrec.errors import ConfigError
from medrec.score.aggregate import AGGREGATIONS
from medrec.score.shards import LEVEL_KEYS, check_part

LEVELS = tuple(LEVEL_KEYS)


@dataclass(frozen=True)
class ScoreOptions:
    """How to score (every ``medrec score`` option that is not an input or output path).

    Attributes:
        level: ``series`` (one row per sample), ``study`` or ``patient`` (rows grouped).
        aggregate: ``max`` or ``mean`` at study / patient level; None: ``max`` for binary runs,
            ``mean`` for multi-class.
        threshold: operating threshold; None: the run's own.
        tta: average over all flips of the spatial axes; adds ``uncertainty``.
        batch_size: samples per inference batch.
        workers: loader processes (0: load in this process).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: float16 autocast on CUDA.
        explain_dir: write Grad-CAM maps (NIfTI + PNG) here.
        retry_errors: score again the samples whose earlier row holds an error.
        overwrite: discard an existing output instead of resuming it.
        num_parts: split the job into this many deterministic parts ...
        part_id: ... and score this one (0-based).
    """

    level: str = "series"
    aggregate: str | None = None
    threshold: float | None = None
    tta: bool = False
    batch_size: int = 8
    workers: int = 0
    device: str = "auto"
    amp: bool = True
    explain_dir: Path | None = None
    retry_errors: bool = False
    overwrite: bool = False
    num_parts: int = 1
    part_id: int = 0

    def validate(self) -> None:
        """Raises ConfigError naming the first invalid option."""
        if self.level not in LEVELS:
            raise ConfigError(f"--level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if self.aggregate is not None and self.aggregate not in AGGREGATIONS:
            raise ConfigError(f"--aggregate must be one of {', '.join(AGGREGATIONS)}, got {self.aggregate!r}")
        if self.threshold is not None and not (0.0 <= self.threshold <= 1.0 and math.isfinite(self.threshold)):
            raise ConfigError(f"--threshold must be a probability in [0, 1], got {self.threshold}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")
        check_part(self.num_parts, self.part_id)


@dataclass
class ScoreResult:
    """What one ``score`` call did.

    Attributes:
        output: the predictions CSV.
        sidecar: its JSON record.
        scored: samples scored by this call.
        failed: samples that failed in this call (their rows hold the reason).
        skipped: samples already in the output (not scored again).
        relabelled: samples already in the output whose label this call refreshed from the input.
        rows: rows in the output after this call.
        rows_ok: rows with a score.
        failures: reason -> count, for this call.
        record: the sidecar content.
    """

    output: Path
    sidecar: Path
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    relabelled: int = 0
    rows: int = 0
    rows_ok: int = 0
    failures: Counter = field(default_factory=Counter)
    record: dict[str, Any] = field(default_factory=dict)
