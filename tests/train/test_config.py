from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from medrec.config import TrainConfig, dump_config, load_config, parse_config
from medrec.errors import ConfigError


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe" / "train.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_and_relative_paths(tmp_path):
    path = _write(tmp_path, {"data": {"manifest": "index/manifest.csv"}, "model": {"pretrained": "../w.safetensors"}})
    config = load_config(path)
    assert config.data.manifest == tmp_path / "recipe" / "index" / "manifest.csv"
    assert config.model.pretrained == tmp_path / "w.safetensors"
    assert config.training.lr > 0 and config.threshold.method == "youden"
    assert config.calibration.method == "temperature"
    # frozen
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.training.lr = 1.0  # type: ignore[misc]


def test_dump_round_trips(tmp_path):
    config = load_config(
        _write(tmp_path, {"data": {"manifest": "m.csv"}, "calibration": "none", "threshold": "youden"}))
    assert config.calibration.method == "none"
    again = _write(tmp_path / "other", yaml.safe_load(dump_config(config)))
    assert load_config(again) == config


def test_unknown_key_names_dotted_path_and_allowed_keys(tmp_path):
    path = _write(tmp_path, {"data": {"manifest": "m.csv"}, "training": {"lrr": 0.1}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "training.lrr" in message
    assert "did you mean 'lr'" in message
    assert "batch_size" in message  # allowed keys are listed
    assert str(path) in message


def test_unknown_nested_preprocessing_key():
    with pytest.raises(ConfigError, match=r"preprocessing\.spacingg"):
        parse_config({"data": {"manifest": "m.csv"}, "preprocessing": {"spacingg": [1, 1, 1]}})


def test_negative_lr():
    with pytest.raises(ConfigError, match=r"training\.lr.*greater than 0"):
        parse_config({"data": {"manifest": "m.csv"}, "training": {"lr": -0.01}})


def test_val_plus_test_at_least_one():
    with pytest.raises(ConfigError, match=r"split.*val \+ test must be < 1"):
        parse_config({"data": {"manifest": "m.csv"}, "split": {"val": 0.5, "test": 0.5}})


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError) as info:
        parse_config({"data": {"manifest": "m.csv"}, "training": {"imbalance": "oversample"}})
    assert "training.imbalance" in str(info.value)
    assert "weighted_loss" in str(info.value) and "balanced_sampler" in str(info.value)


def test_unknown_model_suggests_name():
    with pytest.raises(ConfigError, match=r"model\.name.*did you mean 'cnn_small'"):
        parse_config({"data": {"manifest": "m.csv"}, "model": {"name": "cnn_smal"}})


def test_missing_data_and_pickle_weights():
    with pytest.raises(ConfigError, match="'data' is required"):
        parse_config({})
    with pytest.raises(ConfigError, match="only .safetensors"):
        parse_config({"data": {"manifest": "m.csv"}, "model": {"pretrained": "w.pt"}})


def test_input_over_memory_budget_fails_at_load():
    with pytest.raises(ConfigError, match="memory_budget_gb"):
        parse_config(
            {
                "data": {"manifest": "m.csv"},
                "preprocessing": {"input_size": [512, 512, 512]},
                "training": {"batch_size": 16, "memory_budget_gb": 1},
            }
        )


def test_bad_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["data"])
    assert isinstance(parse_config({"data": {"manifest": "m.csv"}}), TrainConfig)


@pytest.mark.parametrize(("training", "match"), [
    ({"lesion_weight": -2.0}, r"lesion_weight must be a positive number or auto"),
    ({"lesion_weight": "big"}, r"training\.lesion_weight"),
    ({"selection_window": 0}, r"training\.selection_window"),
    ({"mil_start": 1.0}, r"training\.mil_start"),
    ({"mil_gate": 1.5}, r"training\.mil_gate"),
])
def test_finding_training_knobs_are_checked(training, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"data": {"manifest": "m.csv"}, "training": training})


def test_finding_training_knobs_parse():
    config = parse_config({"data": {"manifest": "m.csv"},
                           "training": {"lesion_weight": "auto", "selection_window": 3, "mil_start": 0.4}})
    training = config.training
    assert (training.lesion_weight, training.selection_window, training.mil_start) == ("auto", 3, 0.4)
    assert parse_config({"data": {"manifest": "m.csv"}}).training.lesion_weight == 1.0


def test_misspelt_model_kwarg_names_the_dotted_key_and_the_accepted_names():
    with pytest.raises(ConfigError) as info:
        parse_config({"data": {"manifest": "m.csv"},
                      "model": {"name": "cnn_small", "kwargs": {"chanels": [8, 16], "dropout": 0.1}}})
    message = str(info.value)
    assert "model.kwargs.chanels" in message and "did you mean 'channels'" in message
    assert "channels, convs_per_block, dropout, norm" in message
    assert "dropout'" not in message  # the accepted key is not reported


def test_model_kwargs_are_checked_against_the_named_network():
    config = parse_config({"data": {"manifest": "m.csv"},
                           "model": {"name": "resnet18", "kwargs": {"conv1_t_stride": 1, "no_max_pool": False}}})
    assert config.model.kwargs == {"conv1_t_stride": 1, "no_max_pool": False}
    with pytest.raises(ConfigError, match=r"model\.kwargs\.pooling.*resnet18 accepts: .*conv1_t_size"):
        parse_config({"data": {"manifest": "m.csv"}, "model": {"name": "resnet18", "kwargs": {"pooling": "max"}}})


def test_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data:\n  manifest: m.csv\nmodel: {name: cnn_small\n  kwargs: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and "<unicode string>" not in message
    assert message.startswith(f"{path}: not valid YAML at line 4, column 9:"), message
