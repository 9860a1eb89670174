"""The memory budget every loader checks before it allocates a single voxel.

A header can claim any size: a 200-byte DICOM file may say Rows = Columns = 65535 with
thousands of frames, and a NIfTI header may multiply to terabytes. The loaders compute the
size of the decoded float32 array from the header alone and refuse it here first.
"""

from __future__ import annotations

import os
import re

from medrec.errors import ConfigError, ResourceBudgetError

MAX_BYTES_ENV = "MEDREC_MAX_BYTES"
DEFAULT_MAX_BYTES = 8 * 1024**3

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse ``"8589934592"``, ``"8GiB"``, ``"500 MB"`` into a number of bytes.

    Raises:
        ConfigError: the text is not a size.
    """
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"{MAX_BYTES_ENV}={text!r} is not a size; use bytes or a unit such as '8GiB' or '500MB'"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def resolve_max_bytes(max_bytes: int | None = None) -> int:
    """The budget to use: ``max_bytes`` when given, else ``$MEDREC_MAX_BYTES``, else 8 GiB.

    Raises:
        ConfigError: the budget is not a positive size.
    """
    if max_bytes is None:
        env_value = os.environ.get(MAX_BYTES_ENV, "").strip()
        max_bytes = parse_size(env_value) if env_value else DEFAULT_MAX_BYTES
    if int(max_bytes) <= 0:
        raise ConfigError(f"max_bytes must be positive, got {max_bytes}")
    return int(max_bytes)


def format_bytes(n_bytes: int) -> str:
    """Human-readable size with binary units (``8.0 GiB``)."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover - loop always returns


def check_budget(source: str, claimed_bytes: int, max_bytes: int, how: str) -> None:
    """Refuse an input whose decoded float32 array would exceed the budget.

    Args:
        source: the file (or series) named in the error.
        claimed_bytes: bytes the decoded float32 array would need, from the header.
        max_bytes: the budget.
        how: how the claim was computed (shown to the user).

    Raises:
        ResourceBudgetError: ``claimed_bytes > max_bytes``.
    """
    if claimed_bytes > max_bytes:
        raise ResourceBudgetError(
            f"{source}: header claims {claimed_bytes} bytes ({format_bytes(claimed_bytes)}; {how}) of decoded "
            f"float32 voxels, over the budget of {max_bytes} bytes ({format_bytes(max_bytes)}); if the input is "
            f"genuine, raise the budget with {MAX_BYTES_ENV} or max_bytes"
        )
