"""Slice-wise (2D / 2.5D) classification of volumes: a 2D network per axial slice, pooled per study.

Hand-written because MONAI has no multiple-instance pooling wrapper for classification.
"""

from __future__ import annotations

import torch
from torch import nn

from medrec.errors import ModelError

AGGREGATIONS: tuple[str, ...] = ("max", "mean", "topk_mean")


def stack_slice_context(volume: torch.Tensor, context: int) -> torch.Tensor:
    """Turn a ``(B, C, X, Y, Z)`` volume into ``(B, Z, C * (2 * context + 1), X, Y)`` slice stacks.

    Slice ``k`` gets slices ``k - context ... k + context`` as channels, offset-major (all channels
    of slice ``k - context`` first); slices beyond either end repeat the edge slice.

    Args:
        volume: a 5D tensor.
        context: neighbours on each side (0: the slice alone).

    Returns:
        The stacked slices.
    """
    if volume.ndim != 5:
        raise ModelError(f"slice model: expected a (B, C, X, Y, Z) volume, got shape {tuple(volume.shape)}")
    slices = volume.permute(0, 4, 1, 2, 3)  # (B, Z, C, X, Y)
    if context == 0:
        return slices
    depth = slices.shape[1]
    index = torch.arange(depth, device=volume.device)
    neighbours = [slices[:, (index + offset).clamp(0, depth - 1)] for offset in range(-context, context + 1)]
    return torch.cat(neighbours, dim=2)


class SliceAggregator(nn.Module):
    """Apply a 2D network to every axial slice of a volume and pool the slice logits per study.

    Slices are folded into the batch dimension and run in chunks of ``chunk_size`` slices, so one
    forward pass handles a whole batch of volumes.

    Logits, not probabilities, are pooled, each class on its own (global max pooling of class
    scores, as in weakly supervised localisation). The study-level logits then go through the
    usual softmax / cross-entropy and temperature calibration like any other model's, and the
    gradient reaches the slices that carry the evidence. ``max`` says "positive if any slice is";
    ``topk_mean`` (mean of the ``top_k`` highest slice logits per class) is less noisy;
    ``mean`` suits diffuse findings.

    Args:
        model2d: a 2D network taking ``in_channels * (2 * context + 1)`` channels and returning
            ``(N, num_classes)`` logits.
        aggregation: ``max``, ``mean`` or ``topk_mean``.
        top_k: slices averaged by ``topk_mean`` (fewer if the volume has fewer slices).
        context: 2.5D neighbours on each side stacked as channels (0: plain 2D).
        chunk_size: slices per forward chunk.
    """

    def __init__(
        self,
        model2d: nn.Module,
        aggregation: str = "max",
        top_k: int = 3,
        context: int = 0,
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ModelError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        for label, value, lowest in (("top_k", top_k, 1), ("context", context, 0), ("chunk_size", chunk_size, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ModelError(f"SliceAggregator: {label} must be an integer >= {lowest}, got {value!r}")
        self.slice_model = model2d
        self.aggregation = aggregation
        self.top_k = top_k
        self.context = context
        self.chunk_size = chunk_size

    def slice_logits(self, volume: torch.Tensor) -> torch.Tensor:
        """Per-slice logits, shape ``(B, Z, num_classes)``."""
        stacks = stack_slice_context(volume, self.context)
        batch, depth = stacks.shape[:2]
        flat = stacks.reshape(batch * depth, *stacks.shape[2:])
        outputs = [self.slice_model(flat[start : start + self.chunk_size])
                   for start in range(0, flat.shape[0], self.chunk_size)]
        logits = torch.cat(outputs, dim=0)
        return logits.reshape(batch, depth, -1)

    def aggregate(self, slice_logits: torch.Tensor) -> torch.Tensor:
        """Pool ``(B, Z, K)`` slice logits over ``Z`` into ``(B, K)``."""
        if self.aggregation == "max":
            return slice_logits.amax(dim=1)
        if self.aggregation == "mean":
            return slice_logits.mean(dim=1)
        k = min(self.top_k, slice_logits.shape[1])
        return slice_logits.topk(k, dim=1).values.mean(dim=1)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.slice_logits(volume))

    def extra_repr(self) -> str:
        return f"aggregation={self.aggregation!r}, top_k={self.top_k}, context={self.context}"
