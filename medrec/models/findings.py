"""Finding-map models: a fully convolutional network gives a logit per voxel; the study score pools it.

A whole-volume classifier must discover where a small finding is from one label per study; a
finding-map model is told where it is (a lesion mask or lesion marks rasterised as spheres) and
learns a per-voxel logit. The study logit is the pooled map (``max``: one finding decides;
``topk_mean``: the mean of the ``top_k`` highest voxel logits, less noisy; ``lse``: a smooth
maximum, log-mean-exp), so a finding anywhere makes the study positive whatever the volume size.

Volumes are handled in 2.5D: every axial slice with ``context`` neighbours on each side as
channels goes through a 2D network at the plan's in-plane resolution, which is far cheaper on a
CPU than a 3D network at the same resolution and trains on slice batches (many optimiser steps per
volume pass). Radiographs (2D inputs) go through the same 2D network directly.

Hand-written because MONAI's segmentation networks (``BasicUNet``, ``SegResNet``) are several
times heavier per slice than a small detector needs on a CPU, and none of them pools a map into a
study score.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from medrec.errors import ModelError
from medrec.models.aggregation import stack_slice_context
from medrec.models.normal_reference import FEATURE_SMOOTHING, FeatureDistance, smooth
from medrec.models.registry import register_model

POOLINGS: tuple[str, ...] = ("max", "topk_mean", "lse")

# The map's initial bias: a voxel starts at probability sigmoid(-4) ~ 0.018, the prior of a rare
# finding, so the first steps are not spent pushing the background down (as in RetinaNet).
_PRIOR_LOGIT = -4.0


def _conv(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FindingNet2d(nn.Module):
    """A small dilated fully convolutional net: ``(N, C, X, Y)`` images -> ``(N, 1, X, Y)`` logit maps.

    One full-resolution convolution, one stride-2 convolution, then dilated convolutions at half
    resolution (dilations 1, 2, 4, 1: a receptive field of about 38 input pixels) and a 1x1 head;
    the map is upsampled back to the input size (bilinear). Lesions of three or more pixels across
    stay visible at half resolution.

    Args:
        in_channels: input channels (slices x image channels in 2.5D).
        channels: widths of the six convolutions.
    """

    DILATIONS: tuple[int, ...] = (1, 2, 4, 1)

    def __init__(self, in_channels: int, channels: tuple[int, ...] = (24, 32, 48, 48, 64, 64)) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 2 + len(self.DILATIONS) or min(channels) < 1:
            raise ModelError(
                f"finding_fcn: channels must list {2 + len(self.DILATIONS)} positive widths, got {list(channels)}")
        layers = [_conv(in_channels, channels[0]), _conv(channels[0], channels[1], stride=2)]
        for index, dilation in enumerate(self.DILATIONS):
            layers.append(_conv(channels[1 + index], channels[2 + index], dilation=dilation))
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels[-1], 1, 1)
        nn.init.constant_(self.head.bias, _PRIOR_LOGIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last activations: oneDNN's convolutions run ~10 % faster in training and ~30 %
        # faster in inference on a CPU (measured on 16 x 3 x 112 x 88 slice batches, 2 cores).
        logits = self.head(self.features(x.contiguous(memory_format=torch.channels_last)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def layer_features(self, x: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
        """The outputs of the convolutions ``layers`` (indices into :attr:`features`), at half
        resolution, concatenated and averaged over a small neighbourhood (for
        :class:`~medrec.models.normal_reference.FeatureDistance`)."""
        picked, h = [], x.contiguous(memory_format=torch.channels_last)
        for index, block in enumerate(self.features):
            h = block(h)
            if index in layers:
                picked.append(h)
            if index >= max(layers):
                break
        size = picked[-1].shape[-2:]
        picked = [F.adaptive_avg_pool2d(p, size) if p.shape[-2:] != size else p for p in picked]
        return smooth(torch.cat(picked, dim=1), FEATURE_SMOOTHING)

    def fused(self) -> FindingNet2d:
        """An inference copy with each batch norm folded into its convolution (~20 % faster on a CPU)."""
        if self.training:
            raise ModelError("finding_fcn: only a network in eval mode can fold its batch norms")
        copy = deepcopy(self)
        for block in copy.features:
            block[0] = fuse_conv_bn_eval(block[0], block[1])
            block[1] = nn.Identity()
        return copy


def pool_map(maps: torch.Tensor, pooling: str = "max", top_k: int = 8) -> torch.Tensor:
    """Pool ``(B, 1, ...)`` logit maps into ``(B,)`` study logits (see the module docstring)."""
    flat = maps.reshape(maps.shape[0], -1)
    if pooling == "max":
        return flat.amax(dim=1)
    if pooling == "topk_mean":
        return flat.topk(min(top_k, flat.shape[1]), dim=1).values.mean(dim=1)
    if pooling == "lse":
        return torch.logsumexp(flat, dim=1) - torch.log(torch.tensor(float(flat.shape[1]), device=flat.device))
    raise ModelError(f"finding map pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


class FindingMapModel(nn.Module):
    """A finding-map network for volumes (2.5D slices) or 2D images, with a pooled study logit.

    ``forward(x)`` returns ``(B, 2)`` study logits ``(-s / 2, s / 2)`` where ``s`` is the pooled map,
    so the softmax probability of the positive class is ``sigmoid(s)`` and the model drops into
    the classification pipeline (validation, temperature calibration, scoring) unchanged.
    ``forward(stacks, dense=True)`` runs the 2D network on ``(N, C', X, Y)`` slice stacks and
    returns their ``(N, 1, X, Y)`` logit maps (the dense training path; through ``forward`` so that
    DistributedDataParallel sees it). :meth:`finding_map` gives the map of whole inputs.

    Args:
        spatial_dims: 3 (volumes ``(B, C, X, Y, Z)``, axial slices along the last axis) or 2.
        in_channels: image channels.
        context: 2.5D neighbours on each side stacked as channels (volumes only).
        pooling: ``max``, ``topk_mean`` or ``lse``.
        top_k: voxels averaged by ``topk_mean``.
        channels: widths of :class:`FindingNet2d`.
        chunk_size: slices per forward chunk when mapping a volume (bounds memory).
        distance_layers: ``training.anomaly_method: features``: the convolutions (indices 0-5) whose
            features the Gaussian of normal voxels describes (:class:`~medrec.models.normal_reference.FeatureDistance`).
        positive_output: which of the two study logits is the finding's (the positive class's index
            in the run's classes: 0 when it sorts first, as ``anomaly`` before ``normal``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        context: int = 1,
        pooling: str = "max",
        top_k: int = 8,
        channels: tuple[int, ...] = (24, 32, 48, 48, 64, 64),
        chunk_size: int = 32,
        distance_layers: tuple[int, ...] = (),
        positive_output: int = 1,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ModelError(f"finding_fcn: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if pooling not in POOLINGS:
            raise ModelError(f"finding_fcn: pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        for label, value, lowest in (("context", context, 0), ("top_k", top_k, 1), ("chunk_size", chunk_size, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ModelError(f"finding_fcn: {label} must be an integer >= {lowest}, got {value!r}")
        if positive_output not in (0, 1):
            raise ModelError(f"finding_fcn: positive_output must be 0 or 1, got {positive_output!r}")
        self.positive_output = positive_output
        self.spatial_dims = spatial_dims
        self.context = context if spatial_dims == 3 else 0
        self.pooling = pooling
        self.top_k = top_k
        self.chunk_size = chunk_size
        self.net = FindingNet2d(in_channels * (2 * self.context + 1), channels)
        self.distance_layers = tuple(int(layer) for layer in distance_layers)
        if any(not 0 <= layer < len(channels) for layer in self.distance_layers):
            raise ModelError(f"finding_fcn: distance_layers must index the {len(channels)} convolutions, got "
                             f"{list(distance_layers)}")
        # training.anomaly_method features: once fitted, the map is the features' Mahalanobis distance.
        self.distance = (FeatureDistance(sum(int(channels[layer]) for layer in self.distance_layers))
                         if self.distance_layers else None)

    @property
    def slice_channels(self) -> int:
        """Channels of one slice stack (what the dense path takes)."""
        return int(self.net.features[0][0].in_channels)

    def finding_map(self, x: torch.Tensor) -> torch.Tensor:
        """Logit maps of whole inputs: ``(B, C, X, Y, Z)`` -> ``(B, 1, X, Y, Z)``, or 2D ``(B, 1, X, Y)``."""
        # Inference without gradients (validation, hard-slice search, scoring) runs a copy with the
        # batch norms folded into the convolutions: the same map, computed faster.
        net = self.net if self.training or torch.is_grad_enabled() else self.net.fused()
        if self.spatial_dims == 2:
            if x.ndim != 4:
                raise ModelError(f"finding_fcn (2D): expected (B, C, X, Y) images, got shape {tuple(x.shape)}")
            return self._map(net, x)
        stacks = stack_slice_context(x, self.context)  # (B, Z, C', X, Y)
        batch, depth = stacks.shape[:2]
        flat = stacks.reshape(batch * depth, *stacks.shape[2:])
        chunks = range(0, flat.shape[0], self.chunk_size)
        maps = torch.cat([self._map(net, flat[start : start + self.chunk_size]) for start in chunks])
        return maps.reshape(batch, depth, 1, *maps.shape[-2:]).permute(0, 2, 3, 4, 1)

    def _map(self, net: nn.Module, stacks: torch.Tensor) -> torch.Tensor:
        """The logit map of ``(N, C', X, Y)`` slice stacks: the head's, or the fitted feature distance."""
        if self.distance is None or not bool(self.distance.fitted):
            return net(stacks)
        distance = self.distance(net.layer_features(stacks, self.distance_layers))
        return F.interpolate(distance, size=stacks.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, dense: bool = False) -> torch.Tensor:
        if dense:
            return self.net(x)
        score = pool_map(self.finding_map(x), self.pooling, self.top_k)
        pair = (-score / 2, score / 2) if self.positive_output == 1 else (score / 2, -score / 2)
        return torch.stack(pair, dim=1)

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, context={self.context}, pooling={self.pooling!r}, top_k={self.top_k}"


@register_model(
    "finding_fcn",
    family="finding-map",
    description="2.5D fully convolutional finding map, study score = pooled map; needs lesion annotations",
    params_m={2: 0.107, 3: 0.107},
)
def finding_fcn(spatial_dims: int, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    if num_classes != 2:
        raise ModelError(f"finding_fcn scores one finding per study: it needs exactly 2 classes, got {num_classes}")
    return FindingMapModel(spatial_dims, in_channels, **kwargs)


def is_finding_model(model: nn.Module) -> bool:
    """True for finding-map models (unwrapping DistributedDataParallel)."""
    return isinstance(getattr(model, "module", model), FindingMapModel)
