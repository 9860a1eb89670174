"""What a ``train`` call returns: :class:`RunResult`, also rebuilt from a complete run directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrec.runinfo import Calibration, ThresholdEntry, read_run_info


@dataclass(frozen=True)
class RunResult:
    """What a ``train`` call produced.

    Attributes:
        run_dir: the run directory.
        complete: False only when stopped on purpose before the end (``interrupt_after_epoch``).
        best_epoch: epoch of the kept weights (1-based).
        epochs_completed: epochs trained in total.
        stopped_early: early stopping ended training.
        val_metrics: validation metrics of the kept weights (calibrated).
        threshold: the ``model.json`` threshold entry (None until the run is complete).
        calibration: the ``model.json`` calibration entry (None until the run is complete).
        classes: class names in model-output order.
        positive_class: binary positive class, or None.
        seconds: wall time of this call.
    """

    run_dir: Path
    complete: bool
    best_epoch: int
    epochs_completed: int
    stopped_early: bool
    val_metrics: dict[str, Any] = field(default_factory=dict)
    threshold: ThresholdEntry | None = None
    calibration: Calibration | None = None
    classes: tuple[str, ...] = ()
    positive_class: str | None = None
    seconds: float = 0.0


def result_from_run(run_dir: Path) -> RunResult:
    """The result of a run that is already complete (``medrec train`` on it again is a no-op)."""
    info = read_run_info(run_dir)
    return RunResult(
        run_dir=run_dir,
        complete=True,
        best_epoch=info.best_epoch or 0,
        epochs_completed=info.epochs_completed or 0,
        stopped_early=bool(info.stopped_early),
        val_metrics=dict(info.val_metrics or {}),
        threshold=info.threshold,
        calibration=info.calibration,
        classes=info.classes,
        positive_class=info.positive_class,
    )
