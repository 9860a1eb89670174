"""The ``model`` section: the network by registry name, its slice mode and factory arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from medrec.config.base import ResolvedPath, _Section
from medrec.errors import ModelError

MODEL_MODES: tuple[str, ...] = ("3d", "2d", "2.5d")
# The validation error type of ``model.kwargs`` keys that the named network does not take.
UNKNOWN_MODEL_ARGUMENT = "unknown_model_argument"


class ModelConfig(_Section):
    """The network, by registry name (see ``medrec models``).

    Attributes:
        name: registry name, e.g. ``cnn_small``, ``resnet18``.
        spatial_dims: 2 or 3; default from the preprocessing plan.
        mode: ``3d`` (a 3D network), ``2d`` / ``2.5d`` (a 2D network per slice of a volume,
            pooled per study); default from the plan.
        aggregation: slice modes: ``max``, ``mean`` or ``topk_mean``.
        top_k: slice modes with ``topk_mean``.
        context: ``2.5d``: neighbouring slices on each side stacked as channels (0 means 1).
        pretrained: local safetensors weights to start from (never downloaded).
        kwargs: extra arguments for the network factory (e.g. ``dropout: 0.2``).
    """

    name: str = "cnn_small"
    spatial_dims: Literal[2, 3] | None = None
    mode: Literal["3d", "2d", "2.5d"] | None = None
    aggregation: Literal["max", "mean", "topk_mean"] = "max"
    top_k: int = Field(3, ge=1)
    context: int = Field(0, ge=0)
    pretrained: ResolvedPath | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from medrec.models import resolve_model_name

        try:
            return resolve_model_name(value)
        except ModelError as e:
            raise ValueError(str(e)) from e

    @field_validator("kwargs")
    @classmethod
    def _network_arguments(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if not value or name is None:
            return value  # an unknown model name is reported on its own
        from medrec.models.registry import model_kwargs

        accepted = model_kwargs(name)
        if accepted is not None:
            accepted = (*accepted, "slice_chunk")  # create_model's own: slices per chunk in slice modes
        unknown = [str(key) for key in value if accepted is not None and key not in accepted]
        if unknown:
            raise PydanticCustomError(
                UNKNOWN_MODEL_ARGUMENT,
                "{model} takes no argument(s) {keys}; it accepts: {accepted}",
                {"model": name, "keys": unknown, "accepted": list(accepted or ())},
            )
        return value

    @field_validator("pretrained")
    @classmethod
    def _safetensors_only(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix != ".safetensors":
            raise ValueError(f"{value}: only .safetensors weights are accepted (never a pickle / .pt)")
        return value
