"""Loading samples: a manifest row (DICOM series or NIfTI file) to a MONAI MetaTensor.

Public API:
    load_sample(row, max_bytes=None) -> MetaTensor   channel-first float32, RAS affine
    LoadSampled(keys=("image",), max_bytes=None)     MONAI MapTransform, first in every chain
    content_hash(row, max_bytes=None) -> str         SHA-256 of the decoded voxels
    load_volume(row, max_bytes=None) -> Volume       the numpy result, without torch

The public names are loaded on first use: worker processes that only hash pixel content
import :mod:`medrec.loader.rows` and should not pay for torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medrec.budget import DEFAULT_MAX_BYTES, MAX_BYTES_ENV, resolve_max_bytes
    from medrec.loader.dicom import read_dicom_series
    from medrec.loader.nifti import read_nifti
    from medrec.loader.rows import content_hash, load_volume
    from medrec.loader.sample import load_sample
    from medrec.loader.transforms import LoadSampled
    from medrec.loader.volume import LPS_TO_RAS, Volume

_EXPORTS: dict[str, str] = {
    "DEFAULT_MAX_BYTES": "medrec.budget",
    "MAX_BYTES_ENV": "medrec.budget",
    "resolve_max_bytes": "medrec.budget",
    "read_dicom_series": "medrec.loader.dicom",
    "read_nifti": "medrec.loader.nifti",
    "content_hash": "medrec.loader.rows",
    "load_volume": "medrec.loader.rows",
    "load_sample": "medrec.loader.sample",
    "LoadSampled": "medrec.loader.transforms",
    "LPS_TO_RAS": "medrec.loader.volume",
    "Volume": "medrec.loader.volume",
}

# spelled out, not sorted(_EXPORTS): ruff and mypy read __all__ without running the module
__all__ = [
    "DEFAULT_MAX_BYTES",
    "LPS_TO_RAS",
    "LoadSampled",
    "MAX_BYTES_ENV",
    "Volume",
    "content_hash",
    "load_sample",
    "load_volume",
    "read_dicom_series",
    "read_nifti",
    "resolve_max_bytes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medrec.loader' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
