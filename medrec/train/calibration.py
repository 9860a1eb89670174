"""Temperature scaling (Guo et al., 2017) fitted on validation logits.

One scalar T > 0 divides the logits before the softmax. It changes no ranking (AUC is
unchanged) but makes the probabilities honest. T is found by minimising the validation
negative log-likelihood over log T with scipy's bounded 1-D minimiser, so T stays positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

# T in [exp(-5), exp(5)] ~ [0.0067, 148]: wider than any useful calibration.
_LOG_T_BOUNDS = (-5.0, 5.0)


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and the validation NLL before (T = 1) and after."""

    temperature: float
    nll_before: float
    nll_after: float
    method: str = "temperature"

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "temperature": self.temperature,
            "val_nll_before": self.nll_before,
            "val_nll_after": self.nll_after,
        }


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of integer ``labels`` under ``softmax(logits / temperature)``."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    log_probs = log_softmax(scaled, axis=1)
    return float(-log_probs[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> TemperatureFit:
    """Fit the temperature that minimises the NLL of ``labels`` given ``logits``.

    Args:
        logits: (n, n_classes) raw model outputs on the validation split.
        labels: (n,) integer class indices.

    Returns:
        The fitted :class:`TemperatureFit`; if minimising does not lower the NLL, T = 1.

    Raises:
        ValueError: shapes do not match, or the inputs are empty or not finite.
    """
    values = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(labels, dtype=np.int64)
    if values.ndim != 2 or values.shape[0] != targets.shape[0] or values.shape[0] == 0:
        raise ValueError(f"logits must be (n, n_classes) with n = len(labels) > 0; got {values.shape} and {targets.shape}")
    if not np.isfinite(values).all():
        raise ValueError("logits contain NaN or infinite values")
    if targets.min() < 0 or targets.max() >= values.shape[1]:
        raise ValueError(f"labels must be class indices in [0, {values.shape[1]}); got {targets.min()}..{targets.max()}")
    nll_before = negative_log_likelihood(values, targets, 1.0)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(values, targets, float(np.exp(log_t))),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    temperature = float(np.exp(result.x))
    nll_after = negative_log_likelihood(values, targets, temperature)
    if not nll_after <= nll_before:
        temperature, nll_after = 1.0, nll_before
    return TemperatureFit(temperature=temperature, nll_before=nll_before, nll_after=nll_after)


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` along the class axis."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
