"""Optimisation: AdamW, linear warm-up then cosine decay per step, mixed precision, the loss."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medrec.config import TrainConfig


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor of step ``step``: linear warm-up, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress_fraction = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_fraction)))

    return factor


@dataclass
class Optimisation:
    """What a step needs besides the model.

    Attributes:
        optimizer: AdamW over the model's parameters.
        scheduler: per-step warm-up + cosine schedule.
        criterion: cross-entropy (class-weighted with ``imbalance: weighted_loss``).
        amp_dtype: autocast dtype on CUDA with ``training.amp``, else None.
        scaler: gradient scaler for float16 autocast, else None.
        steps_per_epoch: optimiser steps in one epoch (this process).
    """

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    criterion: torch.nn.Module
    amp_dtype: torch.dtype | None
    scaler: Any
    steps_per_epoch: int

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision where it is on, else nothing."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def step(self, forward: Callable[[], torch.Tensor], loss_of: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """One optimisation step: ``loss_of(forward())`` (forward under autocast, loss in float32),
        backward (scaled for float16), optimiser and schedule step; returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = forward()
        loss = loss_of(logits.float())
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())


def class_weights(labels: np.ndarray, num_classes: int, device: torch.device) -> torch.Tensor:
    """Inverse-frequency weights ``n / (k * n_class)`` of the training labels."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return torch.tensor(len(labels) / (num_classes * counts), dtype=torch.float32, device=device)


def build_optimisation(
    model: torch.nn.Module,
    config: TrainConfig,
    device: torch.device,
    steps_per_epoch: int,
    class_weight: torch.Tensor | None = None,
) -> Optimisation:
    """AdamW with the recipe's learning rate and weight decay, the schedule over all epochs' steps,
    AMP on CUDA when asked (bfloat16 where supported, else float16 with a gradient scaler)."""
    training = config.training
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    schedule = warmup_cosine(steps_per_epoch * training.warmup_epochs, steps_per_epoch * training.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    amp_dtype, scaler = None, None
    if device.type == "cuda" and training.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
    criterion = torch.nn.CrossEntropyLoss(weight=class_weight)
    return Optimisation(optimizer, scheduler, criterion, amp_dtype, scaler, steps_per_epoch)
