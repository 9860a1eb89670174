"""Where the report's scans came from: whether ``medrec synth`` generated them (its ``synth.json``
beside the scans), so that the report can say its data are synthetic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

SYNTH_RECORD = "synth.json"  # what 'medrec synth' writes beside the cohort it generates
SYNTH_SEARCH_DEPTH = 3  # folders above the scans' common folder searched for it


def _synth_record(folder: Path) -> dict | None:
    """The ``synth.json`` in ``folder`` when 'medrec synth' wrote it (its settings name the generator)."""
    path = folder / SYNTH_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    settings = record.get("settings") if isinstance(record, dict) else None
    if not isinstance(settings, dict) or not str(settings.get("generator") or "").startswith("medrec"):
        return None
    return settings


def synthetic_origin(manifest: pd.DataFrame | None, folders: Sequence[Path | None] = ()) -> dict | None:
    """Whether the scans came from ``medrec synth``: its ``synth.json`` in the scans' folder or a folder above.

    Looked for in ``folders`` (the scan folder the predictions were scored from) and in the
    common folder of the manifest's sample paths, each with up to :data:`SYNTH_SEARCH_DEPTH`
    folders above it.

    Returns:
        ``{"synthetic": True, "evidence": str, "generator", "kind", "patients", "seed"}`` (no path),
        or None when no such record was found.
    """
    starts = [Path(folder) for folder in folders if folder is not None]
    if manifest is not None and "path" in manifest.columns:
        paths = [path for path in manifest["path"].astype(str) if path and os.path.isabs(path)]
        if paths:
            try:
                common = Path(os.path.commonpath(paths))
            except ValueError:  # paths on different drives
                common = None
            if common is not None:
                starts.append(common if common.is_dir() else common.parent)
    seen: set[Path] = set()
    for start in starts:
        for folder in [start, *list(start.parents)[:SYNTH_SEARCH_DEPTH]]:
            if folder in seen:
                continue
            seen.add(folder)
            settings = _synth_record(folder)
            if settings is None:
                continue
            details = ", ".join(text for key, text in (("kind", f"kind {settings.get('kind')}"),
                                                       ("patients", f"{settings.get('patients')} patients"),
                                                       ("seed", f"seed {settings.get('seed')}"))
                                if settings.get(key) is not None)
            return {"synthetic": True,
                    "evidence": f"{details}; {SYNTH_RECORD} of {settings.get('generator')} beside the scans",
                    "generator": settings.get("generator"), "kind": settings.get("kind"),
                    "patients": settings.get("patients"), "seed": settings.get("seed")}
    return None
