"""Temperature scaling (Guo et al., 2017) fitted on validation logits.

One scalar T > 0 divides the logits before the softmax. It changes no ranking (AUC is
unchanged) but makes the probabilities honest. T is found by minimising the validation
negative log-likelihood over log T with scipy's bounded 1-D minimiser, so T stays positive.

A temperature fitted on a handful of validation samples is noise: on 6 samples the minimum can
sit at the bound (T = e^5 = 148), which squeezes every probability to about 0.5. So T is fitted
only when validation holds at least :data:`MIN_SAMPLES_PER_CLASS` samples of every class (else
T = 1 and the reason is recorded), a fit that reaches the bound carries a warning, and every fit
records its 95 % profile-likelihood interval (the T whose likelihood-ratio statistic against the
fit stays below the chi-square(1) 95 % quantile), so a reader sees how well validation pins T down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import chi2

# T in [exp(-5), exp(5)] ~ [0.0067, 148]: wider than any useful calibration.
_LOG_T_BOUNDS = (-5.0, 5.0)
# Fewer validation samples of a class than this and the temperature is not fitted (T = 1).
MIN_SAMPLES_PER_CLASS = 10
PROFILE_CI_METHOD = "profile likelihood (likelihood-ratio test, chi-square 1 df), on log T"


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and the validation NLL before (T = 1) and after.

    Attributes:
        temperature: the temperature applied (1.0 when not fitted).
        nll_before: mean validation NLL at T = 1.
        nll_after: mean validation NLL at ``temperature``.
        method: ``temperature`` (asked for) or ``none``.
        applied: False when temperature scaling was asked for but not fitted (see ``reason``).
        reason: why the temperature was not fitted, else None.
        warning: what a reader must know about the fit (it reached the bound), else None.
        ci95: 95 % profile-likelihood interval of the fitted temperature, else None.
        n_val: validation samples the fit saw.
        class_counts: validation samples per class index.
    """

    temperature: float
    nll_before: float
    nll_after: float
    method: str = "temperature"
    applied: bool = True
    reason: str | None = None
    warning: str | None = None
    ci95: tuple[float, float] | None = None
    n_val: int | None = None
    class_counts: tuple[int, ...] | None = None

    def to_dict(self) -> dict:
        record = {
            "method": self.method,
            "temperature": self.temperature,
            "val_nll_before": self.nll_before,
            "val_nll_after": self.nll_after,
        }
        if self.method != "temperature":
            return record
        record.update(applied=self.applied, n_val=self.n_val,
                      val_class_counts=None if self.class_counts is None else list(self.class_counts),
                      min_samples_per_class=MIN_SAMPLES_PER_CLASS)
        if self.ci95 is not None:
            record.update(temperature_ci95=list(self.ci95), temperature_ci_method=PROFILE_CI_METHOD)
        if self.reason:
            record["reason"] = self.reason
        if self.warning:
            record["warning"] = self.warning
        return record

    def summary(self) -> str:
        """One line for train.log: what was fitted (with its interval), or why nothing was."""
        if self.method != "temperature":
            return f"calibration {self.method}: T = 1, val NLL {self.nll_before:.4f}"
        if not self.applied:
            return f"calibration temperature NOT fitted (T = 1): {self.reason}"
        interval = f" (95% CI {self.ci95[0]:.4g}-{self.ci95[1]:.4g})" if self.ci95 is not None else ""
        line = (f"calibration temperature: T = {self.temperature:.4f}{interval}, "
                f"val NLL {self.nll_before:.4f} -> {self.nll_after:.4f}")
        return f"{line}; WARNING: {self.warning}" if self.warning else line


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of integer ``labels`` under ``softmax(logits / temperature)``."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    log_probs = log_softmax(scaled, axis=1)
    return float(-log_probs[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)].mean())


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, min_per_class: int = MIN_SAMPLES_PER_CLASS
) -> TemperatureFit:
    """Fit the temperature that minimises the NLL of ``labels`` given ``logits``.

    Args:
        logits: (n, n_classes) raw model outputs on the validation split.
        labels: (n,) integer class indices.
        min_per_class: fit only when every class has at least this many samples; else T = 1
            (``applied`` False, ``reason`` says why).

    Returns:
        The fitted :class:`TemperatureFit` with its 95 % profile-likelihood interval; if
        minimising does not lower the NLL, T = 1. A fit at the upper or lower bound of T carries a
        ``warning``.

    Raises:
        ValueError: shapes do not match, or the inputs are empty or not finite.
    """
    values = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(labels, dtype=np.int64)
    if values.ndim != 2 or values.shape[0] != targets.shape[0] or values.shape[0] == 0:
        raise ValueError(
            f"logits must be (n, n_classes) with n = len(labels) > 0; got {values.shape} and {targets.shape}")
    if not np.isfinite(values).all():
        raise ValueError("logits contain NaN or infinite values")
    if targets.min() < 0 or targets.max() >= values.shape[1]:
        raise ValueError(
            f"labels must be class indices in [0, {values.shape[1]}); got {targets.min()}..{targets.max()}")
    nll_before = negative_log_likelihood(values, targets, 1.0)
    counts = tuple(int(c) for c in np.bincount(targets, minlength=values.shape[1]))
    if min(counts) < min_per_class:
        held = ", ".join(f"class {index}: {count}" for index, count in enumerate(counts))
        reason = (f"validation holds too few samples to fit a temperature ({held}; at least {min_per_class} of "
                  "each class are needed); the probabilities are the network's softmax (T = 1); give validation "
                  "more samples (split.val) or set calibration.method: none")
        return TemperatureFit(1.0, nll_before, nll_before, applied=False, reason=reason, n_val=len(targets),
                              class_counts=counts)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(values, targets, float(np.exp(log_t))),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    log_t = float(result.x)
    nll_after = negative_log_likelihood(values, targets, float(np.exp(log_t)))
    if not nll_after <= nll_before:
        log_t, nll_after = 0.0, nll_before
    temperature = float(np.exp(log_t))
    warning = None
    low, high = _LOG_T_BOUNDS
    if min(log_t - low, high - log_t) < 1e-3:
        side = "upper" if high - log_t < 1e-3 else "lower"
        warning = (f"the fitted temperature {temperature:.4g} sits at the {side} bound of the search "
                   f"[{np.exp(low):.4g}, {np.exp(high):.4g}]: validation does not pin it down"
                   + (" (the validation scores carry no signal: every calibrated probability is near "
                      f"1/{values.shape[1]})" if side == "upper" else "")
                   + "; read the probabilities with care, or set calibration.method: none")
    return TemperatureFit(temperature=temperature, nll_before=nll_before, nll_after=nll_after, warning=warning,
                          ci95=_profile_interval(values, targets, log_t), n_val=len(targets), class_counts=counts)


def _profile_interval(logits: np.ndarray, labels: np.ndarray, log_t_hat: float, level: float = 0.95
                      ) -> tuple[float, float]:
    """The profile-likelihood interval of T: the T whose deviance 2 * (NLL_sum(T) - NLL_sum(T_hat))
    stays below the chi-square(1) quantile; an end that the deviance never reaches inside the search
    bounds is the bound itself (the interval is open there)."""
    n = len(labels)
    critical = float(chi2.ppf(level, df=1))
    best = n * negative_log_likelihood(logits, labels, float(np.exp(log_t_hat)))

    def excess(log_t: float) -> float:
        return 2.0 * (n * negative_log_likelihood(logits, labels, float(np.exp(log_t))) - best) - critical

    ends = []
    for bound in _LOG_T_BOUNDS:
        if abs(bound - log_t_hat) < 1e-9 or excess(bound) <= 0.0:
            ends.append(bound)
        else:
            ends.append(float(brentq(excess, min(log_t_hat, bound), max(log_t_hat, bound), xtol=1e-8)))
    return float(np.exp(ends[0])), float(np.exp(ends[1]))


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` along the class axis."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
