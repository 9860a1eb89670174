"""What normal looks like to an anomaly scorer: the reference that turns raw voxel scores into logits.

A raw score (a Mahalanobis distance of features, a reconstruction error) has no natural zero.
:class:`NormalReference` keeps, as buffers saved with the weights, the median (``offset``) and the
standard deviation (``scale``) of the pooled study scores of normal training studies, and maps a
raw voxel score to ``(value - offset) / scale``: a study whose pooled map departs from the typical
normal study's by one normal spread scores logit 1, and the finding-map pipeline (pooling, sigmoid,
thresholds) reads the map as a head's logits. :class:`FeatureDistance` is the Gaussian of feature
vectors of ``training.anomaly_method: features`` (:mod:`medrec.models.anomaly_maps`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Feature vectors are averaged over this many pixels square before they are scored (PatchCore's
# local neighbourhood aggregation): a patch, not a pixel, departs from normal.
FEATURE_SMOOTHING = 3
# The Gaussian's ridge, a multiple of the features' mean variance. Many features of a small network
# barely vary on normal voxels, and an unregularised precision lets them decide: on the MR phantoms'
# validation split (one trained network) ridge 0.01 / 0.1 / 1 / 10 / 100 gave AUC 0.52 / 0.58 /
# 0.68 / 0.75 / 0.76.
DISTANCE_RIDGE = 100.0


def smooth(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.avg_pool2d(x, size, stride=1, padding=size // 2, count_include_pad=False)


class NormalReference(nn.Module):
    """Buffers that turn a raw score map into logits: ``(value - offset) / scale``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def standardise(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.offset) / self.scale

    def reset(self) -> None:
        """Raw scores as they are (offset 0, scale 1), marked fitted: the pass that measures them."""
        self.offset.zero_()
        self.scale.fill_(1.0)
        self.fitted.fill_(True)

    def set_reference(self, normal_study_scores: torch.Tensor) -> None:
        """Offset and scale from the raw pooled scores of normal training studies."""
        values = normal_study_scores.flatten().double()
        self.offset.copy_(values.median().to(self.offset.dtype))
        spread = values.std() if values.numel() > 1 else values.abs().mean()
        self.scale.copy_(spread.clamp_min(1e-6).to(self.scale.dtype))
        self.fitted.fill_(True)


class FeatureDistance(NormalReference):
    """A Gaussian of feature vectors; maps ``(N, F, X, Y)`` features to ``(N, 1, X, Y)`` logits.

    Args:
        features: the feature vector's length.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("precision", torch.eye(features))

    def fit(self, bank: torch.Tensor, ridge: float = DISTANCE_RIDGE) -> None:
        """Fit mean and precision on ``(n, F)`` normal feature vectors (covariance + ``ridge`` x its mean
        variance on the diagonal)."""
        data = bank.double()
        mean = data.mean(0)
        covariance = torch.cov(data.T)
        covariance += ridge * covariance.diagonal().mean().clamp_min(1e-12) * torch.eye(len(mean), dtype=data.dtype)
        self.mean.copy_(mean.float())
        self.precision.copy_(torch.linalg.inv(covariance).float())

    def squared_distance(self, features: torch.Tensor) -> torch.Tensor:
        centred = features.float() - self.mean[None, :, None, None]
        return torch.einsum("nfxy,fg,ngxy->nxy", centred, self.precision, centred)[:, None]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.standardise(self.squared_distance(features))
