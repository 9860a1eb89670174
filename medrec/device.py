"""Where tensors live: one resolver for training and scoring (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""

from __future__ import annotations

import re

import torch

from medrec.errors import ConfigError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def check_device_name(name: str, setting: str = "--device") -> str:
    """``name`` when it is a device medrec knows (without asking the hardware).

    Raises:
        ConfigError: any other name, with ``setting`` (e.g. ``training.device``) in the message.
    """
    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise ConfigError(f"{setting} must be {DEVICE_CHOICES}, got {name!r}")
    return name


def resolve_device(name: str = "auto", setting: str = "--device") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu`` / ``cuda`` / ``cuda:N`` as given.

    Args:
        name: the requested device.
        setting: where it was requested (``--device``, ``training.device``), for the message.

    Raises:
        ConfigError: an unknown name, CUDA asked for but not available, or ``cuda:N`` beyond the
            devices present.
    """
    check_device_name(name, setting)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{setting} {name}: CUDA is not available on this machine; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{setting} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
