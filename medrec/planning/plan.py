"""The :class:`Plan`: a resolved, json-serialisable preprocessing recipe with the reason for each choice."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medrec.transforms.config import AugmentConfig

PLAN_VERSION = 2  # 2: anti_aliasing (plans of version 1 resampled without it)


class Plan(BaseModel):
    """A resolved preprocessing recipe: everything :func:`medrec.transforms.build_transforms` needs.

    Json-serialisable (``plan.model_dump(mode="json")``, ``Plan.model_validate(data)``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(PLAN_VERSION, description="Plan format version.")
    preset: Literal["ct", "mr", "xr"] = Field(description="Intensity preset.")
    spatial_dims: Literal[2, 3] = Field(description="Dimensions of the preprocessed input (2: images, 3: volumes).")
    mode: Literal["3d", "2d", "2.5d"] = Field(description="Network dimensionality (2d / 2.5d on volumes: per slice).")
    slice_context: int = Field(0, ge=0, description="2.5d: neighbouring slices on each side as channels.")
    spacing: tuple[float, ...] = Field(description="Target spacing in mm along RAS axes (x, y[, z]).")
    input_size: tuple[int, ...] = Field(description="Fixed input size in voxels (x, y[, z]).")
    ct_window: tuple[float, float] | None = Field(None, description="CT: [lower, upper] HU mapped to [0, 1].")
    ct_window_name: str | None = Field(None, description="CT: the window's name, or 'custom'.")
    intensity_percentiles: tuple[float, float] | None = Field(
        None, description="MR: clip percentiles before the z-score; XR: percentiles mapped to [0, 1]."
    )
    anti_aliasing: bool = Field(
        True, description="Gaussian smoothing (sigma = (factor - 1) / 2 voxels) before resampling to a coarser spacing."
    )
    crop_foreground: bool = Field(True, description="Crop to the foreground before resampling.")
    crop_margin: int = Field(4, ge=0, description="Voxels kept around the foreground.")
    foreground_threshold: float | None = Field(
        None, description="CT: HU above which a voxel is body (MR uses Otsu's threshold, XR does not crop)."
    )
    augment: AugmentConfig | None = Field(None, description="Training augmentation, or None for none.")
    reasons: tuple[str, ...] = Field((), description="Why each choice was made.")
    fingerprint: dict[str, Any] = Field(default_factory=dict, description="The data fingerprint the plan came from.")

    @model_validator(mode="before")
    @classmethod
    def _version_1_had_no_anti_aliasing(cls, data: Any) -> Any:
        # a run trained before plans recorded anti_aliasing must be scored as it was trained
        if isinstance(data, dict) and data.get("version", PLAN_VERSION) < 2 and "anti_aliasing" not in data:
            return {**data, "anti_aliasing": False}
        return data

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`medrec.models.create_model` that match this plan's inputs.

        Examples:
            >>> model = create_model("resnet18", in_channels=1, num_classes=2, **plan.model_kwargs())
        """
        if self.spatial_dims == 3 and self.mode in ("2d", "2.5d"):
            return {"spatial_dims": 3, "slice_mode": self.mode, "context": self.slice_context}
        return {"spatial_dims": self.spatial_dims}
