"""Validation during training: the model's validation logits and their metrics (AUC, loss, accuracy)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from medrec.data.dataset import CachedImageDataset
from medrec.train.calibration import negative_log_likelihood
from medrec.train.ddp import DistributedContext, all_gather_objects


def classification_auc(labels: np.ndarray, probabilities: np.ndarray, positive_index: int | None) -> float:
    """ROC AUC: binary on the positive class, else macro one-vs-rest over all classes.

    Args:
        labels: (n,) class indices.
        probabilities: (n, n_classes) rows summing to 1.
        positive_index: the positive class (binary) or None (multi-class).

    Returns:
        The AUC, or NaN when a class needed for it is absent from ``labels``.
    """
    targets = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if positive_index is not None:
        positives = targets == positive_index
        if positives.all() or not positives.any():
            return float("nan")
        return float(roc_auc_score(positives, probs[:, positive_index]))
    n_classes = probs.shape[1]
    if len(np.unique(targets)) < n_classes:
        return float("nan")
    return float(roc_auc_score(targets, probs, multi_class="ovr", average="macro", labels=list(range(n_classes))))


def validation_summary(logits: np.ndarray, labels: np.ndarray, positive_index: int | None) -> dict[str, float]:
    """AUC, mean cross-entropy and argmax accuracy of validation logits."""
    values = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(labels, dtype=np.int64)
    shifted = values - values.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return {
        "auc": classification_auc(targets, probabilities, positive_index),
        "loss": negative_log_likelihood(values, targets),
        "accuracy": float((probabilities.argmax(axis=1) == targets).mean()),
        "n": int(len(targets)),
    }


@torch.no_grad()
def validation_logits(
    model: torch.nn.Module,
    dataset: CachedImageDataset,
    batch_size: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    context: DistributedContext,
    sharded: bool,
) -> np.ndarray:
    """The logits of every validation sample in ``dataset`` order (model put in eval mode).

    With ``sharded`` under torchrun each rank scores its share and the shares are gathered onto
    every rank, so all ranks take the same early-stopping decision.
    """
    model = model.eval()
    positions = list(range(len(dataset)))
    if sharded and context.enabled:
        positions = positions[context.rank :: context.world_size]
    outputs: list[tuple[int, list[float]]] = []
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        images = torch.stack([dataset[i][0] for i in chunk]).to(device)
        with autocast():
            logits = model(images).float().cpu().numpy()
        outputs.extend(zip(chunk, logits.astype(np.float64).tolist(), strict=True))
    if sharded and context.enabled:
        outputs = [item for part in all_gather_objects(context, outputs) for item in part]
    ordered = sorted(outputs, key=lambda item: item[0])
    return np.asarray([logits for _, logits in ordered], dtype=np.float64)
