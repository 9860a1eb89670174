"""The preprocessing part of a recipe: validated, frozen configuration.

Every field defaults to ``"auto"`` (or a sensible constant); :func:`medrec.planning.make_plan`
fills the automatic ones from the data fingerprint and records why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medrec.errors import ConfigError
from medrec.transforms.presets import CT_WINDOWS

PRESETS: tuple[str, ...] = ("auto", "ct", "mr", "xr")
MODES: tuple[str, ...] = ("auto", "3d", "2d", "2.5d")


class AugmentConfig(BaseModel):
    """Random augmentation applied to training samples only (all MONAI ``Rand*d`` transforms)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flip_prob: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a flip along each axis in flip_axes.")
    flip_axes: tuple[int, ...] = Field(
        (0, 1, 2),
        description="Spatial axes that may be flipped (0 = left-right, 1 = anterior-posterior, 2 = head-foot); "
        "axes beyond a 2D image are ignored. Presence of a lesion does not depend on side.",
    )
    affine_prob: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a random rotation + scaling.")
    rotate_deg: float = Field(15.0, ge=0.0, le=180.0, description="Maximum rotation about each axis, degrees.")
    scale: float = Field(0.1, ge=0.0, lt=1.0, description="Maximum relative zoom in or out (0.1: 0.9x to 1.1x).")
    noise_prob: float = Field(0.2, ge=0.0, le=1.0, description="Probability of added Gaussian noise.")
    noise_std: float = Field(0.05, ge=0.0, description="Standard deviation of the noise, in normalised intensity.")
    contrast_prob: float = Field(0.2, ge=0.0, le=1.0, description="Probability of a random gamma contrast change.")
    contrast_gamma: tuple[float, float] = Field((0.8, 1.25), description="Range of the gamma exponent.")
    bias_field_prob: float = Field(
        0.2, ge=0.0, le=1.0, description="Probability of a smooth multiplicative bias field (MR only)."
    )
    bias_field_coeff: tuple[float, float] = Field((0.0, 0.3), description="Range of the bias field coefficients.")

    @field_validator("contrast_gamma", "bias_field_coeff")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError(f"range must be [low, high] with low <= high, got {list(value)}")
        return value

    @field_validator("contrast_gamma")
    @classmethod
    def _positive_gamma(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] <= 0:
            raise ValueError(f"gamma must be > 0, got {list(value)}")
        return value

    @field_validator("flip_axes")
    @classmethod
    def _axes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [axis for axis in value if axis not in (0, 1, 2)]
        if bad:
            raise ValueError(f"flip axes must be among 0, 1, 2, got {bad}")
        return tuple(sorted(set(value)))


class PreprocessConfig(BaseModel):
    """How scans become fixed-size network inputs; ``auto`` fields are decided by the planner.

    Examples:
        >>> PreprocessConfig(preset="ct", ct_window="lung", spacing=[1.5, 1.5, 3.0])
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: Literal["auto", "ct", "mr", "xr"] = Field(
        "auto", description="Intensity preset: ct (HU window), mr (percentile clip + z-score), "
        "xr (percentile scaling to [0, 1]); auto picks by the cohort's modality."
    )
    ct_window: str | tuple[float, float] = Field(
        "auto",
        description=f"CT window: auto (abdomen), a name ({', '.join(CT_WINDOWS)}) or [lower, upper] in HU.",
    )
    mr_percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="MR: clip intensities to these percentiles before the z-score."
    )
    xr_percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="XR: map these intensity percentiles to [0, 1]."
    )
    spacing: Literal["auto"] | tuple[float, ...] = Field(
        "auto", description="Target voxel spacing in mm, [x, y, z] (or [x, y] for 2D images), or auto."
    )
    input_size: Literal["auto"] | tuple[int, ...] = Field(
        "auto", description="Network input size in voxels, [x, y, z] (or [x, y]), or auto."
    )
    mode: Literal["auto", "3d", "2d", "2.5d"] = Field(
        "auto", description="3d: volumetric network; 2d / 2.5d: a 2D network per axial slice, pooled per study; "
        "auto: 2d for radiographs, 2.5d for thick-slice volumes, else 3d."
    )
    slice_context: int = Field(1, ge=1, le=4, description="2.5d: neighbouring slices on each side stacked as channels.")
    anti_aliasing: bool = Field(
        True,
        description="Gaussian smoothing before resampling to a coarser spacing (sigma = (factor - 1) / 2 voxels "
        "per axis), so that downsampling averages noise instead of sampling it.",
    )
    crop_foreground: bool = Field(True, description="Crop to the body / foreground before resizing.")
    crop_margin: int = Field(4, ge=0, le=64, description="Voxels kept around the foreground when cropping.")
    voxel_budget: Literal["auto"] | int = Field(
        "auto", description="Largest number of voxels per input; the spacing is coarsened to fit. "
        "auto: by the compute budget (cpu or gpu)."
    )
    finding_size_mm: float | None = Field(
        None, gt=0.0, description="Diameter of the smallest finding to detect, in mm: an automatic spacing is made "
        "fine enough that it spans at least 4 voxels on every axis, and is never coarsened past that to fit the "
        "voxel budget. Default: from the lesion annotations when a finding-map model trains on them, else none.",
    )
    augment: bool = Field(True, description="Apply random augmentation to training samples.")
    augmentation: AugmentConfig = Field(default_factory=AugmentConfig, description="Augmentation parameters.")

    @field_validator("ct_window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        if isinstance(value, str):
            key = value.strip().lower()
            if key != "auto" and key not in CT_WINDOWS:
                raise ValueError(
                    f"unknown CT window {value!r}; allowed: auto, {', '.join(CT_WINDOWS)} or [lower, upper] in HU"
                )
            return key
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"a custom CT window is [lower, upper] in HU, got {list(value)}")
            lower, upper = (float(v) for v in value)
            if not lower < upper:
                raise ValueError(f"CT window lower must be below upper, got [{lower}, {upper}]")
            return (lower, upper)
        raise ValueError(f"CT window must be a name or [lower, upper], got {value!r}")

    @field_validator("mr_percentiles", "xr_percentiles")
    @classmethod
    def _percentiles(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= value[0] < value[1] <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {list(value)}")
        return value

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if len(value) not in (2, 3) or any(v <= 0 for v in value):
            raise ValueError(f"spacing must be auto or 2-3 positive numbers in mm, got {list(value)}")
        return value

    @field_validator("input_size")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if len(value) not in (2, 3) or any(v < 1 for v in value):
            raise ValueError(f"input_size must be auto or 2-3 positive integers, got {list(value)}")
        return value

    @field_validator("voxel_budget")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        if value != "auto" and value < 8**2:
            raise ValueError(f"voxel_budget must be auto or at least 64 voxels, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PreprocessConfig:
        if self.spacing != "auto" and self.input_size != "auto" and len(self.spacing) != len(self.input_size):
            raise ValueError(
                f"spacing {list(self.spacing)} and input_size {list(self.input_size)} must have the same length"
            )
        return self


def _format_errors(error: ValidationError, where: str) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in (where, *item["loc"]) if part != "")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(PreprocessConfig.model_fields) if len(item["loc"]) == 1 else None
            message = "unknown key" + (f"; allowed keys: {allowed}" if allowed else "")
        parts.append(f"{location}: {message} (got {item.get('input')!r})")
    return "; ".join(parts)


def parse_preprocess_config(
    data: Mapping[str, Any] | PreprocessConfig | None, where: str = "preprocessing"
) -> PreprocessConfig:
    """Validate a mapping (e.g. the ``preprocessing:`` block of a YAML recipe) into a :class:`PreprocessConfig`.

    Args:
        data: the mapping, an existing config (returned unchanged), or None for the defaults.
        where: the key path used in error messages.

    Returns:
        The frozen config.

    Raises:
        ConfigError: naming each offending key with the allowed values.
    """
    if isinstance(data, PreprocessConfig):
        return data
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__} {data!r}")
    try:
        return PreprocessConfig.model_validate(dict(data or {}))
    except ValidationError as e:
        raise ConfigError(_format_errors(e, where)) from e
