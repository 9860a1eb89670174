"""Load one manifest row (a DICOM series or a NIfTI file) as a MONAI MetaTensor."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import MetaKeys, SpaceKeys

from medrec.loader.rows import load_volume, row_text


def load_sample(row: Mapping, max_bytes: int | None = None) -> MetaTensor:
    """Load a manifest row as a channel-first float32 MetaTensor with its RAS affine.

    Args:
        row: a dict or pandas Series with the manifest columns (``sample_id``, ``format``,
            ``path``, ``files``, ``modality``, ...).
        max_bytes: memory budget for the decoded float32 array; ``None`` reads
            ``$MEDREC_MAX_BYTES`` (default 8 GiB). Checked from the headers before any voxel
            is allocated.

    Returns:
        ``MetaTensor`` of shape ``(1, I, J, K)`` (volume) or ``(1, I, J)`` (single 2D image), float32
        real-world values (CT in HU); ``.affine`` is the 4x4 float64 voxel-to-RAS matrix. ``.meta`` holds
        ``sample_id``, ``format``, ``modality``, ``spacing`` (mm per spatial axis), ``space`` = "RAS",
        ``original_affine``, ``spatial_shape``, ``original_channel_dim`` = 0, ``filename_or_obj`` (the
        sample id, so nothing derived from paths leaks into saved file names), ``photometric`` and
        ``notes`` (``'; '``-joined, empty when nothing was noticed).

    Raises:
        ManifestError: the row's format is unknown or it lists no files.
        DicomError, NiftiError: the files cannot be decoded (names the file and the reason).
        ResourceBudgetError: the headers claim more than the budget.
    """
    volume = load_volume(row, max_bytes)
    array = np.ascontiguousarray(volume.array, dtype=np.float32)[None]
    affine = np.asarray(volume.affine_ras, dtype=np.float64)
    meta = {
        "sample_id": row_text(row, "sample_id"),
        "format": row_text(row, "format").strip().lower(),
        "modality": volume.modality,
        "spacing": volume.spacing.astype(np.float64),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(volume.array.shape, dtype=np.int64),
        MetaKeys.ORIGINAL_CHANNEL_DIM: 0,
        "filename_or_obj": row_text(row, "sample_id"),
        "photometric": volume.photometric,
        "notes": "; ".join(volume.notes),
        "loader_info": json.dumps(volume.extra, sort_keys=True),
    }
    return MetaTensor(torch.from_numpy(array), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)
