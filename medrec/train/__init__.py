"""Training: the epoch loop, threshold choice, temperature calibration, checkpoints and DDP.

Examples:
    >>> from medrec.config import load_config
    >>> from medrec.train import train
    >>> result = train(load_config("train.yaml"), "runs/ct-lesion")
"""

from __future__ import annotations

from medrec.train.calibration import TemperatureFit, calibrated_probabilities, fit_temperature
from medrec.train.threshold import ThresholdChoice, choose_threshold

__all__ = [
    "RunResult",
    "TemperatureFit",
    "ThresholdChoice",
    "calibrated_probabilities",
    "choose_threshold",
    "fit_temperature",
    "resolve_device",
    "train",
]


def __getattr__(name: str):  # noqa: ANN202 - the loop imports medrec.data, which uses train.determinism
    if name in ("RunResult", "resolve_device", "train"):
        from medrec.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'medrec.train' has no attribute {name!r}")
