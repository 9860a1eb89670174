"""Which intensity preset each modality gets (DICOM Modality, 0008,0060)."""

from __future__ import annotations

# Modality codes by preset.
MODALITY_PRESETS: dict[str, str] = {
    "CT": "ct",
    "PT": "ct",
    "MR": "mr",
    "DX": "xr",
    "CR": "xr",
    "DR": "xr",
    "MG": "xr",
    "XR": "xr",
    "RF": "xr",
    "IO": "xr",
    "PX": "xr",
}
PROJECTION_MODALITIES: frozenset[str] = frozenset(code for code, preset in MODALITY_PRESETS.items() if preset == "xr")
