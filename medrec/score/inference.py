"""Batched inference with the run's calibrated ``predict``: device, AMP, flip test-time augmentation."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import numpy as np
import torch

from medrec.errors import ModelError
from medrec.rundir import ScoringRun


def flip_combinations(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes of a ``(B, C, *spatial)`` batch (identity first).

    2D gives 4 variants, 3D gives 8. Flips are exact and invertible, so the averaged
    prediction only depends on what the model sees, not on interpolation.
    """
    axes = tuple(range(2, 2 + spatial_dims))
    return [combo for size in range(len(axes) + 1) for combo in itertools.combinations(axes, size)]


def as_class_probabilities(output: Any, n_classes: int) -> np.ndarray:
    """``(B, C)`` float64 probabilities from what ``Run.predict`` returns.

    A binary run may return one probability per sample (``(B,)`` or ``(B, 1)``): that is the
    positive class, the negative one is its complement.

    Raises:
        ModelError: the shape does not match the run's classes.
    """
    probs = np.asarray(torch.as_tensor(output).detach().float().cpu().numpy(), dtype=np.float64)
    if probs.ndim == 1 or (probs.ndim == 2 and probs.shape[1] == 1 and n_classes == 2):
        positive = probs.reshape(-1)
        probs = np.stack([1.0 - positive, positive], axis=1)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ModelError(
            f"the run's predict() returned shape {tuple(probs.shape)}; expected (batch, {n_classes}) "
            f"for classes of the run"
        )
    return probs


class Predictor:
    """Calibrated class probabilities of a batch, optionally averaged over flips.

    Args:
        run: a loaded run (``model``, ``classes``, ``predict``).
        device: where the model runs.
        amp: use float16 autocast on CUDA (ignored on CPU, which stays float32 and bit-reproducible).
        tta: average over every flip of the spatial axes; the spread is returned as uncertainty.
        uncertainty_class: the class whose probability spread is reported (the positive class
            for binary runs); None: the predicted class of each sample.
    """

    def __init__(
        self, run: ScoringRun, device: torch.device, amp: bool = True, tta: bool = False,
        uncertainty_class: int | None = None,
    ) -> None:
        self.run = run
        self.device = device
        self.amp = amp and device.type == "cuda"
        self.tta = tta
        self.n_classes = len(run.classes)
        self.uncertainty_class = uncertainty_class
        run.model.to(device)
        run.model.eval()
        if hasattr(run, "device"):
            run.device = device  # Run.predict moves its input to run.device

    def _predict(self, batch: torch.Tensor) -> np.ndarray:
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            output = self.run.predict(batch)
        return as_class_probabilities(output, self.n_classes)

    def __call__(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``(B, C)`` and, with TTA, the per-sample spread ``(B,)`` (else None)."""
        batch = batch.to(self.device, non_blocking=True)
        if not self.tta:
            return self._predict(batch), None
        variants = [
            self._predict(torch.flip(batch, dims=combo) if combo else batch)
            for combo in flip_combinations(batch.ndim - 2)
        ]
        stacked = np.stack(variants)  # (n_flips, B, C)
        mean = stacked.mean(axis=0)
        if self.uncertainty_class is not None:
            column = np.full(mean.shape[0], self.uncertainty_class)
        else:
            column = mean.argmax(axis=1)
        spread = stacked[:, np.arange(mean.shape[0]), column].std(axis=0)
        return mean, spread
