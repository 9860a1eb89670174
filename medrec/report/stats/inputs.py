"""Argument checks shared by every statistic of :mod:`medrec.report.stats`.

The package's input conventions in one place: ``labels`` are 0/1 (1 = positive, the tumor class),
``scores`` are finite probabilities of the positive class, ``clusters`` (patient ids) become codes
0..k-1, and a confidence level becomes its two-sided normal quantile.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as sps


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    return float(sps.norm.ppf(0.5 + level / 2.0))


def _binary_array(values: np.ndarray | Sequence, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and not np.isin(array, (0, 1, True, False)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return array.astype(np.int8)


def _score_array(values: np.ndarray | Sequence, name: str = "scores") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite numbers (found NaN or infinity)")
    return array


def _cluster_codes(clusters: np.ndarray | Sequence | None, n_samples: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n_samples), n_samples
    array = np.asarray(clusters)
    if array.shape != (n_samples,):
        raise ValueError(f"clusters must have one entry per sample ({n_samples}), got shape {array.shape}")
    _, codes = np.unique(array.astype(str) if array.dtype == object else array, return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1 if codes.size else 0
