"""The registered networks: a small CNN baseline and MONAI's classification networks, in 2D and 3D.

Every factory builds from scratch (``pretrained=False``): nothing is ever downloaded. Local
weights are loaded afterwards with :func:`medrec.models.load_pretrained` (safetensors only).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks import nets
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

from medrec.errors import ModelError
from medrec.models.registry import register_model


class SmallCNN(nn.Module):
    """A few conv-norm-act blocks with 2x pooling, then global avg+max pooling and a linear head.

    Hand-written because MONAI's ``Classifier`` / ``Regressor`` need the input shape at build
    time and end in a flattening layer; this one takes any input size. The head concatenates
    global average and global max pooling: a small lesion is a few voxels of a big volume, and
    average pooling alone dilutes its evidence by the volume size.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output logits.
        channels: output channels of each block (each block halves the resolution).
        convs_per_block: convolutions per block.
        dropout: dropout probability before the linear head.
        norm: MONAI norm name (``batch``, ``instance``, ...).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        channels: tuple[int, ...] = (16, 32, 64, 128),
        convs_per_block: int = 2,
        dropout: float = 0.2,
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if not channels:
            raise ModelError("cnn_small: channels must list at least one block width")
        blocks: list[nn.Module] = []
        previous = in_channels
        for index, width in enumerate(channels):
            layers: list[nn.Module] = []
            for conv_index in range(convs_per_block):
                layers.append(
                    Convolution(
                        spatial_dims,
                        previous if conv_index == 0 else width,
                        width,
                        kernel_size=3,
                        act=("relu", {"inplace": True}),
                        norm=norm,
                    )
                )
            # The last block keeps its resolution: global pooling follows.
            if index < len(channels) - 1:
                layers.append(Pool[Pool.MAX, spatial_dims](kernel_size=2, ceil_mode=True))
            blocks.append(nn.Sequential(*layers))
            previous = width
        self.features = nn.Sequential(*blocks)
        self.avg_pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.max_pool = Pool[Pool.ADAPTIVEMAX, spatial_dims](1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        pooled = torch.cat([self.avg_pool(features).flatten(1), self.max_pool(features).flatten(1)], dim=1)
        return self.classifier(self.dropout(pooled))


@register_model(
    "cnn_small",
    family="cnn",
    description="4-block CNN with avg+max pooling head; fast CPU baseline",
    params_m={2: 0.295, 3: 0.880},
)
def cnn_small(spatial_dims: int, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    return SmallCNN(spatial_dims, in_channels, num_classes, **kwargs)


def _resnet(depth: int, spatial_dims: int, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    # Stem choice: keep MONAI's 7-wide, stride-2 first convolution but drop the max pool. Inputs here
    # are small (64^3-96^3 after resampling), and the default stem (stride 2 + max pool) shrinks
    # them 4x before the first residual stage, so a 5 mm lesion at 2 mm spacing is about one voxel
    # by then. A stride-1 3-wide stem would keep full resolution but run layer1 on 8x more voxels
    # in 3D, too slow for CPU training. Pass conv1_t_size / conv1_t_stride / no_max_pool to change it.
    options: dict[str, Any] = {"conv1_t_size": 7, "conv1_t_stride": 2, "no_max_pool": True}
    options.update(kwargs)
    factory = getattr(nets, f"resnet{depth}")
    return factory(
        pretrained=False,
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        num_classes=num_classes,
        **options,
    )


_RESNETS = (
    (10, "smallest residual net", {2: 4.901, 3: 14.357}),
    (18, "residual net", {2: 11.172, 3: 33.162}),
    (34, "deeper residual net", {2: 21.280, 3: 63.472}),
    (50, "bottleneck residual net", {2: 23.510, 3: 46.163}),
)
for _depth, _text, _params in _RESNETS:

    def _factory(spatial_dims: int, in_channels: int, num_classes: int, _depth: int = _depth, **kwargs: Any):
        return _resnet(_depth, spatial_dims, in_channels, num_classes, **kwargs)

    _factory.__name__ = f"resnet{_depth}"
    _factory.__doc__ = f"MONAI ResNet-{_depth} (7-wide stride-2 stem, no max pool), random init."
    register_model(
        f"resnet{_depth}", family="resnet", description=f"MONAI ResNet-{_depth}: {_text}", params_m=_params
    )(_factory)


@register_model(
    "densenet121",
    family="densenet",
    description="MONAI DenseNet-121; strong but slow in 3D on CPU",
    params_m={2: 6.950, 3: 11.245},
)
def densenet121(spatial_dims: int, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    return nets.DenseNet121(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes, pretrained=False, **kwargs
    )


@register_model(
    "seresnet50",
    family="senet",
    description="MONAI SE-ResNet-50 (squeeze-and-excitation); heavy",
    params_m={2: 26.037, 3: 48.690},
)
def seresnet50(spatial_dims: int, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    return nets.SEResNet50(
        spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, pretrained=False, **kwargs
    )


@register_model(
    "efficientnet_b0",
    family="efficientnet",
    description="MONAI EfficientNet-B0; few parameters",
    params_m={2: 4.010, 3: 4.691},
)
def efficientnet_b0(spatial_dims: int, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    return nets.EfficientNetBN(
        "efficientnet-b0",
        pretrained=False,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=num_classes,
        **kwargs,
    )
