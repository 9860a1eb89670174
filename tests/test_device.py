"""One device resolver for training and scoring (medrec.device)."""

from __future__ import annotations

import pytest
import torch

from medrec.config import TrainingConfig
from medrec.device import resolve_device
from medrec.errors import ConfigError


def test_cpu_and_auto_resolve_without_a_gpu_check() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", "mps", "cuda:"])
def test_unknown_names_are_refused_naming_the_setting(name: str) -> None:
    with pytest.raises(ConfigError, match=r"training\.device must be auto, cpu, cuda or cuda:N"):
        resolve_device(name, "training.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_clear_error(name: str) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device(name)


def test_a_recipe_takes_what_scoring_takes() -> None:
    for name in ("auto", "cpu", "cuda", "cuda:1"):
        assert TrainingConfig(device=name).device == name
    with pytest.raises(ValueError, match="device"):
        TrainingConfig(device="gpu")
