"""Preprocessing as MONAI transform chains: configuration, intensity presets and chain building.

Examples:
    >>> from medrec.planning import fingerprint, make_plan
    >>> plan = make_plan(fingerprint(manifest), PreprocessConfig(preset="ct"))
    >>> deterministic, augment = build_transforms(plan)
"""

from __future__ import annotations

from medrec.transforms.config import (
    MODES,
    PRESETS,
    AugmentConfig,
    PreprocessConfig,
    parse_preprocess_config,
)
from medrec.transforms.presets import (
    CT_WINDOWS,
    AboveThreshold,
    OtsuForeground,
    PlanarAffined,
    build_augmentation,
    build_transforms,
    otsu_threshold,
)

__all__ = [
    "CT_WINDOWS",
    "MODES",
    "PRESETS",
    "AboveThreshold",
    "AugmentConfig",
    "OtsuForeground",
    "PlanarAffined",
    "PreprocessConfig",
    "build_augmentation",
    "build_transforms",
    "otsu_threshold",
    "parse_preprocess_config",
]
