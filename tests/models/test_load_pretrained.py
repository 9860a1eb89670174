"""load_pretrained: safetensors only, prefixes stripped, mismatches reported, pickles never opened."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medrec.errors import ModelError
from medrec.models import create_model, create_slice_model, load_pretrained


def _state_with_prefix(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{key}": value.clone().contiguous() for key, value in model.state_dict().items()}


@pytest.mark.parametrize("prefix", ["", "module.", "model.", "module.model."])
def test_round_trip_with_prefix_reports_only_the_extra_key(tmp_path: Path, prefix: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    source = create_model("cnn_small", 2, 1, 2, channels=(4, 8))
    tensors = _state_with_prefix(source, prefix)
    tensors[f"{prefix}extra.weight"] = torch.ones(3)
    path = tmp_path / "weights.safetensors"
    save_file(tensors, str(path))

    torch.manual_seed(1)
    target = create_model("cnn_small", 2, 1, 2, channels=(4, 8))
    with caplog.at_level(logging.INFO, logger="medrec.models"):
        missing, unexpected = load_pretrained(target, path)
    assert missing == []
    assert unexpected == [f"{prefix}extra.weight"]
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    assert "loaded" in caplog.text and "weights.safetensors" in caplog.text


def test_resnet_round_trip_through_ddp_prefix(tmp_path: Path) -> None:
    source = create_model("resnet10", 3, 1, 2)
    path = tmp_path / "resnet.safetensors"
    save_file(_state_with_prefix(source, "module."), str(path))
    target = create_model("resnet10", 3, 1, 2)
    assert load_pretrained(target, path, strict=True) == ([], [])
    torch.testing.assert_close(target.fc.weight, source.fc.weight)


def test_shape_mismatch_is_reported_and_not_loaded(tmp_path: Path) -> None:
    source = create_model("cnn_small", 2, 1, 5, channels=(4, 8))
    path = tmp_path / "five_classes.safetensors"
    save_file(_state_with_prefix(source, ""), str(path))
    target = create_model("cnn_small", 2, 1, 2, channels=(4, 8))
    head_before = target.classifier.weight.clone()
    missing, unexpected = load_pretrained(target, path)
    assert unexpected == ["classifier.bias", "classifier.weight"]
    assert missing == ["classifier.bias", "classifier.weight"]
    torch.testing.assert_close(target.classifier.weight, head_before)
    torch.testing.assert_close(target.features[0][0].conv.weight, source.features[0][0].conv.weight)


def test_strict_raises_on_any_difference(tmp_path: Path) -> None:
    model = create_model("cnn_small", 2, 1, 2, channels=(4,))
    tensors = _state_with_prefix(model, "")
    tensors["surplus"] = torch.zeros(1)
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ModelError, match="1 unexpected key"):
        load_pretrained(model, path, strict=True)


def test_2d_weights_into_a_slice_model(tmp_path: Path) -> None:
    plain = create_model("cnn_small", 2, 3, 2, channels=(4, 8))
    path = tmp_path / "slice.safetensors"
    save_file(_state_with_prefix(plain, "slice_model."), str(path))
    wrapped = create_slice_model("cnn_small", in_channels=1, num_classes=2, context=1, channels=(4, 8))
    assert load_pretrained(wrapped, path) == ([], [])


class _Payload:
    """Unpickling this creates a marker file: proof that a pickle was opened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["evil.pt", "evil.pth", "evil.bin", "evil.ckpt", "evil.pkl",
                                  "evil.safetensors", "evil"])
def test_pickles_are_never_opened(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Payload(marker)))
    model = create_model("cnn_small", 2, 1, 2, channels=(4,))
    with pytest.raises(ModelError) as info:
        load_pretrained(model, path)
    assert not marker.exists()
    if not name.endswith(".safetensors"):
        assert "convert" in str(info.value).lower() and "safetensors" in str(info.value)


def test_torch_save_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(create_model("cnn_small", 2, 1, 2, channels=(4,)).state_dict(), path)
    with pytest.raises(ModelError, match="refusing"):
        load_pretrained(create_model("cnn_small", 2, 1, 2, channels=(4,)), path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_pretrained(create_model("cnn_small", 2, 1, 2), tmp_path / "absent.safetensors")
