"""Voxel maps of how far a study departs from normal, besides the finding-map head.

Two scorers of an anomaly run (``task: anomaly``) that learn normal studies without labelled
positives, each giving a map in logit units so that the finding-map pipeline (pooling, sigmoid
probabilities, calibration, thresholds, ``--explain``) handles them as it handles the head's map:

- :class:`FeatureDistance` (``training.anomaly_method: features``, after PaDiM, Defard et al.
  2021): a Gaussian of the finding network's own features (layers trained on synthetic
  anomalies, :mod:`medrec.transforms.anomaly`), fitted on the normal training slices; each voxel
  is scored by the Mahalanobis distance of its locally averaged feature vector. One Gaussian for
  every position (scans are not aligned the way PaDiM's product photographs are), with a strong
  ridge on the covariance (``normal_reference.DISTANCE_RIDGE``: a small network has many
  near-constant features that would otherwise decide).
- :class:`ResidualMapNet` (``training.anomaly_method: reconstruction``, model ``anomaly_autoencoder``):
  a small convolutional autoencoder learns to redraw normal slices through a narrow bottleneck
  (1/8 of the resolution, 16 channels); each voxel is scored by its locally averaged absolute
  reconstruction error. The classic baseline of unsupervised anomaly detection in medical images.

Both maps are standardised on normal training voxels (:mod:`medrec.models.normal_reference`).
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medrec.errors import ModelError
from medrec.models.findings import FindingMapModel
from medrec.models.normal_reference import NormalReference, smooth
from medrec.models.registry import register_model

# Reconstruction errors are averaged over this many pixels square (a voxel's noise is not a finding).
RESIDUAL_SMOOTHING = 5


def _block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ResidualMapNet(NormalReference):
    """A small 2D autoencoder of slice stacks: :meth:`reconstruct` redraws ``(N, C, X, Y)`` stacks,
    ``forward`` gives the ``(N, 1, X, Y)`` logit map of the locally averaged absolute error.

    Args:
        in_channels: slice-stack channels.
        widths: encoder widths (each halves the resolution; the decoder mirrors them).
        bottleneck: channels at the narrowest point.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (32, 48, 64), bottleneck: int = 16) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1 or bottleneck < 1:
            raise ModelError(f"anomaly_autoencoder: widths and bottleneck must be positive, got {widths}, {bottleneck}")
        encoder, previous = [], in_channels
        for width in widths:
            encoder.append(_block(previous, width, stride=2))
            previous = width
        encoder.append(nn.Conv2d(previous, bottleneck, 1))
        decoder: list[nn.Module] = [_block(bottleneck, widths[-1])]
        for width in (*reversed(widths[:-1]), widths[0]):
            decoder += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), _block(previous, width)]
            previous = width
        decoder.append(nn.Conv2d(previous, in_channels, 1))
        self.encoder, self.decoder = nn.Sequential(*encoder), nn.Sequential(*decoder)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        redrawn = self.decoder(self.encoder(x))
        return F.interpolate(redrawn, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The raw score: the channel-mean absolute error, averaged over a neighbourhood."""
        return smooth((x - self.reconstruct(x)).abs().mean(dim=1, keepdim=True), RESIDUAL_SMOOTHING)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardise(self.residual(x))

    def fused(self) -> ResidualMapNet:
        """The inference copy (nothing folded: the autoencoder is small)."""
        return deepcopy(self)


class AutoencoderMapModel(FindingMapModel):
    """The reconstruction baseline as a finding-map model: ``forward(stacks, dense=True)`` returns the
    reconstruction (what training fits), the map is :class:`ResidualMapNet`'s.

    Args:
        spatial_dims, in_channels, context, pooling, top_k, chunk_size, positive_output: as
            :class:`FindingMapModel`.
        widths, bottleneck: as :class:`ResidualMapNet`.
    """

    def __init__(self, spatial_dims: int, in_channels: int, context: int = 1, pooling: str = "max", top_k: int = 8,
                 widths: tuple[int, ...] = (32, 48, 64), bottleneck: int = 16, chunk_size: int = 32,
                 positive_output: int = 1) -> None:
        super().__init__(spatial_dims, in_channels, context=context, pooling=pooling, top_k=top_k,
                         chunk_size=chunk_size, positive_output=positive_output)
        self.net = ResidualMapNet(in_channels * (2 * self.context + 1), widths, bottleneck)  # type: ignore[assignment]

    @property
    def slice_channels(self) -> int:
        return int(self.net.encoder[0][0].in_channels)

    def forward(self, x: torch.Tensor, dense: bool = False) -> torch.Tensor:
        if dense:
            return self.net.reconstruct(x)  # type: ignore[operator]
        return super().forward(x)


@register_model(
    "anomaly_autoencoder",
    family="finding-map",
    description="2.5D convolutional autoencoder, voxel score = reconstruction error (task: anomaly baseline)",
    params_m={2: 0.104, 3: 0.104},
)
def anomaly_autoencoder(spatial_dims: int, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    if num_classes != 2:
        raise ModelError(f"anomaly_autoencoder scores one finding per study: it needs exactly 2 classes, got "
                         f"{num_classes}")
    return AutoencoderMapModel(spatial_dims, in_channels, **kwargs)
