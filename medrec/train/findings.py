"""Finding-map training: where the current model's maps peak, and the dense loss.

A positive study without annotation (label only) has no voxel target; it is used by multiple-
instance learning: once per epoch (from the second on) the current model picks the slice of each
such study holding its highest logit, and a ``mil_fraction`` share of the items are such slices,
whose target is "the maximum of this slice is a lesion" (cross-entropy of the slice's maximum
logit against 1). Negatives need no such term: their voxel target (all zeros) already says that
nothing in them is a lesion. The same peaks give the hard slices of studies whose target is known
(:mod:`medrec.train.slices`). The loss is the voxels' binary cross-entropy (see :func:`finding_loss`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medrec.data.dataset import SampleStore
from medrec.train.targets import MIL_TARGET, TopSlice


@torch.no_grad()
def top_slice_scores(model: torch.nn.Module, store: SampleStore, sample_ids: Sequence[str]) -> dict[str, TopSlice]:
    """Where each sample's finding map peaks: slice, logit and in-plane voxel (model in eval mode)."""
    inner = getattr(model, "module", model)
    was_training = inner.training
    inner.eval()
    parameter = next(inner.parameters())
    found: dict[str, TopSlice] = {}
    try:
        for sample_id in sample_ids:
            volume = torch.from_numpy(np.asarray(store.get(sample_id).array, dtype=np.float32))[None]
            maps = inner.finding_map(volume.to(parameter.device))[0, 0]
            if maps.ndim == 2:
                maps = maps[..., None]
            peak = np.unravel_index(int(maps.argmax()), tuple(maps.shape))
            found[sample_id] = TopSlice(int(peak[2]), float(maps[peak]), int(peak[0]), int(peak[1]))
    finally:
        inner.train(was_training)
    return found


def top_slices(model: torch.nn.Module, store: SampleStore, sample_ids: Sequence[str]) -> dict[str, int]:
    """The axial slice holding the highest logit of each sample's finding map (model in eval mode)."""
    return {sample_id: top.z for sample_id, top in top_slice_scores(model, store, sample_ids).items()}


def gated_top_slices(
    candidates: Mapping[str, TopSlice], lesion_free: Sequence[float], quantile: float
) -> dict[str, TopSlice]:
    """The peaks of the label-only positives that the model already finds more suspicious
    than lesion-free studies: highest logit above the ``quantile`` of ``lesion_free``'s highest
    logits (``quantile`` 0, or no lesion-free logits, keeps all).

    Training an unsure top slice towards "finding" teaches the model whatever it happens to
    look at there; gating keeps MIL to slices that are likely to hold the finding.
    """
    if quantile <= 0 or not len(lesion_free):
        return dict(candidates)
    bar = float(np.quantile(np.asarray(lesion_free, dtype=np.float64), quantile))
    return {sample_id: top for sample_id, top in candidates.items() if top.score > bar}


def finding_loss(logits: torch.Tensor, target: torch.Tensor, lesion_weight: float = 1.0,
                 mil_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy of the voxel logits, plus the MIL term of label-only slices.

    ``lesion_weight`` multiplies the cross-entropy of lesion voxels (``pos_weight``): small
    findings give few lesion voxels, and without it the background's gradient drowns them.
    ``mil_weight`` multiplies the MIL term. The dense term is a mean over every voxel of a slice,
    most of them easy background, so it is small; an unscaled MIL term (one cross-entropy per
    slice) outweighed it a hundredfold and, on partly annotated CT, raised every study's maximum
    until validation AUC fell to chance (datasets/synthetic_phantoms.md). The trainer passes the
    share of its slice that a lesion takes, so a top slice counts as one annotated lesion would.

    Items whose target is ``MIL_TARGET`` (top slices of label-only positives) add the cross-entropy
    of their maximum logit against 1, weighted by their share of the batch; the others add the
    mean voxel cross-entropy, weighted likewise.

    Measured against nnU-Net's Dice + cross-entropy and against an extra cross-entropy of each
    slice's maximum logit (40-patient CT cohort, 20 training studies, 400 steps of 16 slices): the
    plain voxel cross-entropy reached training AUC 1.0 after 200 steps, the others 0.91 and 0.98
    after 400. Batch Dice rewards a wide blob of moderately high probability around a lesion,
    which also raises the maxima of lesion-free studies that the study score is taken from.
    """
    weak = target.flatten(1)[:, 0] == MIL_TARGET
    pos_weight = None if lesion_weight == 1.0 else torch.tensor(lesion_weight, device=logits.device)
    if not bool(weak.any()):
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
    share = weak.float().mean()
    slice_maxima = logits[weak].flatten(1).amax(dim=1)
    mil = F.binary_cross_entropy_with_logits(slice_maxima, torch.ones_like(share).expand(int(weak.sum())))
    if bool(weak.all()):
        return mil_weight * mil
    dense = F.binary_cross_entropy_with_logits(logits[~weak], target[~weak], pos_weight=pos_weight)
    return (1 - share) * dense + share * mil_weight * mil

