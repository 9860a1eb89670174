"""PreprocessConfig: frozen, strict, and errors that name the key and the allowed values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from medrec.errors import ConfigError
from medrec.transforms import CT_WINDOWS, AugmentConfig, PreprocessConfig, parse_preprocess_config


def test_defaults_are_automatic() -> None:
    config = PreprocessConfig()
    assert (config.preset, config.ct_window, config.spacing, config.input_size, config.mode) == (
        "auto", "auto", "auto", "auto", "auto")
    assert config.augment and isinstance(config.augmentation, AugmentConfig)


def test_window_presets_follow_width_and_level() -> None:
    # [L - W/2, L + W/2]
    for name, (width, level) in {"abdomen": (400, 40), "liver": (150, 30), "lung": (1500, -600),
                                 "brain": (80, 40), "bone": (1500, 300), "mediastinum": (350, 50)}.items():
        assert CT_WINDOWS[name] == (level - width / 2, level + width / 2)


def test_named_and_custom_windows() -> None:
    assert PreprocessConfig(ct_window="Lung").ct_window == "lung"
    assert PreprocessConfig(ct_window=[-100, 200]).ct_window == (-100.0, 200.0)


def test_frozen() -> None:
    config = PreprocessConfig()
    with pytest.raises(ValidationError):
        config.preset = "ct"  # type: ignore[misc]


def test_json_round_trip() -> None:
    config = PreprocessConfig(preset="mr", spacing=[1, 1, 3], input_size=[64, 64, 32], ct_window=[-50, 50])
    assert PreprocessConfig.model_validate_json(config.model_dump_json()) == config


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"preset": "cta"}, ["preprocessing.preset", "'ct'", "'mr'", "'xr'"]),
        ({"ct_window": "lungs"}, ["preprocessing.ct_window", "abdomen", "lung", "[lower, upper]"]),
        ({"ct_window": [200, -100]}, ["preprocessing.ct_window", "lower must be below upper"]),
        ({"mode": "4d"}, ["preprocessing.mode", "'2.5d'"]),
        ({"spacing": [1, 2, 3, 4]}, ["preprocessing.spacing"]),
        ({"spacing": [1, 1], "input_size": [8, 8, 8]}, ["same length"]),
        ({"mr_percentiles": [99, 1]}, ["preprocessing.mr_percentiles", "0 <= low < high <= 100"]),
        ({"wndow": "lung"}, ["preprocessing.wndow", "unknown key", "ct_window"]),
        ({"augmentation": {"flip_prob": 2}}, ["preprocessing.augmentation.flip_prob", "less than or equal to 1"]),
        ({"augmentation": {"contrast_gamma": [2, 1]}}, ["preprocessing.augmentation.contrast_gamma"]),
        ({"augmentation": {"flip_axes": [3]}}, ["preprocessing.augmentation.flip_axes"]),
    ],
)
def test_errors_name_the_key(data: dict, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_preprocess_config(data)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_parse_accepts_none_and_configs() -> None:
    assert parse_preprocess_config(None) == PreprocessConfig()
    config = PreprocessConfig(preset="ct")
    assert parse_preprocess_config(config) is config


def test_parse_rejects_non_mappings() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_preprocess_config(["ct"])  # type: ignore[arg-type]
