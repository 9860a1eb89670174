"""The network a run trains: its architecture record (what ``model.json`` keeps) and the module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from medrec.config import TrainConfig
from medrec.errors import ConfigError
from medrec.planning import Plan


def architecture(
    config: TrainConfig, plan: Plan, input_shape: tuple[int, ...], num_classes: int, findings: bool,
    positive_index: int | None = None,
) -> dict[str, Any]:
    """The registry name, dimensions and options of the network for inputs of ``input_shape``.

    A 3D plan with a 2D model (``model.spatial_dims: 2`` or mode ``2d`` / ``2.5d``) scores slices
    and aggregates them; a finding-map model slices volumes itself (2.5D).

    Raises:
        ConfigError: ``model.spatial_dims`` that does not fit the plan's inputs.
    """
    model_config = config.model
    kwargs: dict[str, Any] = dict(model_config.kwargs)
    spatial_dims = len(input_shape) - 1
    if model_config.spatial_dims is not None and model_config.spatial_dims != spatial_dims:
        if not (spatial_dims == 3 and model_config.spatial_dims == 2):
            raise ConfigError(
                f"model.spatial_dims {model_config.spatial_dims} does not fit the {spatial_dims}D inputs of the plan"
            )
    mode = model_config.mode or plan.mode
    if findings:
        # A finding-map model slices volumes itself (2.5D); its options are its own kwargs.
        if spatial_dims == 3:
            kwargs.setdefault("context", model_config.context or plan.slice_context or 1)
        mode = "2.5d" if spatial_dims == 3 else "2d"
        # The finding's logit goes where the positive class is (medrec's choice, never the recipe's).
        kwargs.pop("positive_output", None)
        if positive_index == 0:
            kwargs["positive_output"] = 0
        if config.task == "anomaly" and config.training.anomaly_method == "features":
            from medrec.train.feature_fit import DISTANCE_LAYERS

            kwargs.setdefault("distance_layers", list(DISTANCE_LAYERS))
    elif spatial_dims == 3 and (mode in ("2d", "2.5d") or model_config.spatial_dims == 2):
        mode = mode if mode in ("2d", "2.5d") else "2d"
        kwargs["slice_mode"] = mode
        kwargs["aggregation"] = model_config.aggregation
        kwargs["top_k"] = model_config.top_k
        if mode == "2.5d":
            kwargs["context"] = model_config.context or plan.slice_context or 1
    else:
        mode = "3d" if spatial_dims == 3 else "2d"
    return {
        "name": model_config.name,
        "spatial_dims": spatial_dims,
        "in_channels": int(input_shape[0]),
        "num_classes": num_classes,
        "mode": mode,
        "kwargs": kwargs,
    }


def build_model(
    arch: dict[str, Any], config: TrainConfig, device: torch.device, log: Callable[[str], None]
) -> torch.nn.Module:
    """The network of ``arch`` on ``device``, with the recipe's pretrained weights when it names them."""
    from medrec.models import create_model, load_pretrained

    model = create_model(
        arch["name"], arch["spatial_dims"], arch["in_channels"], arch["num_classes"], **arch["kwargs"])
    if config.model.pretrained is not None:
        missing, unexpected = load_pretrained(model, config.model.pretrained)
        log(f"pretrained weights: {len(missing)} missing and {len(unexpected)} unexpected keys")
    return model.to(device)
