"""Index a scan folder: from DICOM / NIfTI files to ``manifest.csv`` and ``qc.csv``.

Stages (one module each): :mod:`~medrec.index.headers` walks the folder and reads headers
(pixels are never decoded), :mod:`~medrec.index.nifti` checks NIfTI files,
:mod:`~medrec.index.series` groups DICOM files into series and checks their geometry,
:mod:`~medrec.index.selection` picks the series to use per study, :mod:`~medrec.index.labels`
attaches labels, :mod:`~medrec.index.indexer` runs them in order and writes the tables, and
:mod:`~medrec.index.summary` counts what it did.

Every input file ends up either in a manifest row (through its series' ``files`` list, or as
the NIfTI ``path``) or in ``qc.csv`` with a reason, except operating-system clutter
(``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, AppleDouble ``._*`` files, ``__MACOSX`` folders),
which is skipped and only counted, plus the output folder and the labels file when they lie
inside the scan folder.

The public names are loaded on first use: header-reading worker processes import this package
and should not pay for pandas and pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medrec.index.indexer import IndexResult, index_folder
    from medrec.index.labels import read_labels
    from medrec.index.selection import SelectionRules
    from medrec.index.series import parse_age
    from medrec.index.summary import index_summary_rows, print_index_summary

_EXPORTS: dict[str, str] = {
    "IndexResult": "medrec.index.indexer",
    "index_folder": "medrec.index.indexer",
    "index_summary_rows": "medrec.index.summary",
    "print_index_summary": "medrec.index.summary",
    "read_labels": "medrec.index.labels",
    "SelectionRules": "medrec.index.selection",
    "parse_age": "medrec.index.series",
}

# spelled out, not sorted(_EXPORTS): ruff and mypy read __all__ without running the module
__all__ = [
    "IndexResult",
    "SelectionRules",
    "index_folder",
    "index_summary_rows",
    "parse_age",
    "print_index_summary",
    "read_labels",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medrec.index' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
