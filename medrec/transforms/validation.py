"""Refuse, before loading, a manifest row that a plan cannot preprocess.

A 2D image run through a 3D chain (or a volume through a 2D one) fails deep inside resampling
with an error that names neither the sample nor the cause; an MR series windowed as CT is
"preprocessed" without any error at all. The manifest row already says how many slices the
sample has and what its modality is, so both are checked against the plan first.

Channels need no check: the loader turns colour (RGB, YBR, palette) into one luminance channel,
so every sample reaches the chain with the single channel every plan expects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from monai.transforms import Transform

from medrec.errors import InputError
from medrec.transforms.modalities import MODALITY_PRESETS

if TYPE_CHECKING:
    from medrec.planning import Plan


def _slice_count(row: Mapping[str, Any]) -> int | None:
    value = row.get("n_slices")
    if value is None:
        return None
    try:
        count = float(value)
    except (TypeError, ValueError):
        return None
    return int(count) if math.isfinite(count) and count >= 1 else None


def plan_input_problem(
    row: Mapping[str, Any], spatial_dims: int, mode: str, preset: str, plan_modalities: frozenset[str]
) -> str | None:
    """Why the plan cannot take this manifest row, or None when it can (or the row does not say).

    Args:
        row: a manifest row (``n_slices``, ``modality``, ``path``, ``sample_id``).
        spatial_dims: the plan's input dimensions (2: single images, 3: volumes).
        mode: the plan's network mode (``3d``, ``2d``, ``2.5d``), for the message.
        preset: the plan's intensity preset (``ct``, ``mr``, ``xr``).
        plan_modalities: modalities of the cohort the plan was made from; they are always accepted.

    Returns:
        A one-line reason naming the file, what the plan takes and what the sample is.
    """
    where = f"{row.get('path') or '?'}: sample {row.get('sample_id') or '?'}"
    n_slices = _slice_count(row)
    if n_slices == 1 and spatial_dims == 3:
        return (
            f"{where} is a 2D image (1 slice) but the plan takes 3D volumes (spatial_dims 3, mode {mode}); "
            "score it with a run trained on 2D images"
        )
    if n_slices is not None and n_slices > 1 and spatial_dims == 2:
        return (
            f"{where} is a volume of {n_slices} slices but the plan takes 2D images (spatial_dims 2, mode {mode}); "
            "score it with a run trained on volumes"
        )
    modality = str(row.get("modality") or "").strip().upper()
    modality_preset = MODALITY_PRESETS.get(modality)
    if modality_preset is not None and modality_preset != preset and modality not in plan_modalities:
        made_from = ", ".join(sorted(plan_modalities)) or "unknown modalities"
        return (
            f"{where} is {modality} but the plan preprocesses {preset} (made from {made_from}); "
            f"score {modality} with a run trained on {modality}"
        )
    return None


class CheckPlanInputd(Transform):
    """Raise :class:`InputError` for a manifest row the plan cannot take (see :func:`plan_input_problem`).

    Goes before ``LoadSampled``: nothing is read from disk for a refused row. Rows without
    ``n_slices`` / ``modality`` (in-memory dicts) pass. The row itself is returned unchanged.

    Args:
        plan: the preprocessing plan the chain is built from.
    """

    def __init__(self, plan: Plan) -> None:
        self.spatial_dims = int(plan.spatial_dims)
        self.mode = str(plan.mode)
        self.preset = str(plan.preset)
        modalities = (plan.fingerprint or {}).get("modalities") or {}
        self.plan_modalities = frozenset(str(m).strip().upper() for m in modalities if m and m != "unknown")

    def __call__(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return ``data`` when the plan can take it."""
        problem = plan_input_problem(data, self.spatial_dims, self.mode, self.preset, self.plan_modalities)
        if problem is not None:
            raise InputError(problem)
        return data
