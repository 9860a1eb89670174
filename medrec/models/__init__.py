"""Classification networks by registry name, slice-wise aggregation, and local weight loading.

Examples:
    >>> from medrec.models import create_model
    >>> model = create_model("resnet18", spatial_dims=3, in_channels=1, num_classes=2)
"""

from __future__ import annotations

from medrec.models import anomaly_maps as _anomaly_maps  # noqa: F401  (registers the reconstruction baseline)
from medrec.models import findings as _findings  # noqa: F401  (registers the finding-map models)
from medrec.models import networks as _networks  # noqa: F401  (registers the built-in models)
from medrec.models.aggregation import AGGREGATIONS, SliceAggregator, stack_slice_context
from medrec.models.pretrained import load_pretrained
from medrec.models.registry import (
    ModelInfo,
    count_parameters,
    create_model,
    create_slice_model,
    list_models,
    model_family,
    model_names,
    register_model,
    resolve_model_name,
)

__all__ = [
    "AGGREGATIONS",
    "ModelInfo",
    "SliceAggregator",
    "count_parameters",
    "create_model",
    "create_slice_model",
    "list_models",
    "model_family",
    "load_pretrained",
    "model_names",
    "resolve_model_name",
    "register_model",
    "stack_slice_context",
]
