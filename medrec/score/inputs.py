"""What is scored: INPUT (a manifest CSV, a scan folder or a ``dicomweb:URL``) loaded as a manifest, with
the description and fingerprint of it that go into the sidecar."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medrec.console import console
from medrec.errors import ConfigError, InputError


def input_fingerprint(manifest: pd.DataFrame) -> str:
    """sha256 of the sorted sample list (ids, paths and file lists); changes when samples are added or moved."""
    lines = sorted(
        f"{row.get('sample_id', '')}\t{row.get('path', '')}\t{row.get('files', '')}"
        for row in manifest.to_dict("records")
    )
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def index_dir(output: str | Path) -> Path:
    """Where a scan folder given as INPUT is indexed: ``<output stem>.index/``."""
    target = Path(output)
    return target.with_name(f"{target.stem}.index")


def load_input(
    input_path: str | Path, output: str | Path, rules: Any = None, labels: str | Path | None = None,
    workers: int | None = None, match_on: str | None = None, filters: Any = None,
    skip_studies: Sequence[str] = (),
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The manifest to score: a manifest CSV as is, or a scan folder indexed into ``<output stem>.index/``.

    ``labels`` (and its key ``match_on``) label the samples of a scan folder, as ``medrec index --labels``.
    A ``dicomweb:URL`` INPUT is fetched (the studies ``filters`` select, except ``skip_studies``) into
    ``<output stem>.dicomweb/`` and indexed from there like a scan folder.

    Returns:
        ``(manifest, description)`` where description goes into the sidecar.

    Raises:
        InputError: INPUT does not exist, or is a file that is not a manifest CSV.
    """
    from medrec.index.dicomweb import is_dicomweb

    if is_dicomweb(input_path):
        return _load_dicomweb(str(input_path), output, rules, labels, workers, match_on, filters, skip_studies)
    if filters is not None:
        raise ConfigError("--study-uid / --patient-id / --modality / --accession / --since / --until select "
                          "studies of a dicomweb:URL INPUT")
    source = Path(input_path)
    if source.is_dir():
        from medrec.index import index_folder

        target = index_dir(output)
        console.print(f"Indexing {source} into {target} ...")
        result = index_folder(source, target, labels=labels, match_on=match_on, rules=rules, workers=workers)
        # absolute: 'medrec report' finds the scored manifest from any working directory
        description = {"kind": "folder", "path": str(source.resolve()), "index_dir": str(target.resolve()),
                       "rules": _describe_rules(rules)}
        if labels is not None:
            description["labels"] = {"file": Path(labels).name, "match_on": (result.summary.get("labels") or {})
                                     .get("match_on", match_on)}
        return result.manifest, description
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise InputError(
                f"{source}: INPUT must be a scan folder or a manifest CSV, got a {source.suffix or 'plain'} file"
            )
        if labels is not None or match_on is not None:
            raise ConfigError("--labels applies to a scan folder; a manifest already carries its label column")
        from medrec.manifest import read_manifest

        return read_manifest(source), {"kind": "manifest", "path": str(source.resolve())}
    raise InputError(f"{source}: INPUT not found; give a scan folder or a manifest CSV (from 'medrec index')")


def dicomweb_cache(output: str | Path) -> Path:
    """Where the studies of a ``dicomweb:URL`` INPUT are fetched: ``<output stem>.dicomweb/``."""
    target = Path(output)
    return target.with_name(f"{target.stem}.dicomweb")


def _load_dicomweb(source: str, output: str | Path, rules: Any, labels: str | Path | None, workers: int | None,
                   match_on: str | None, filters: Any,
                   skip_studies: Sequence[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    from medrec.index.dicomweb import fetch_and_index

    target, cache = index_dir(output), dicomweb_cache(output)
    index, fetched = fetch_and_index(source, target, cache, filters, skip_studies=skip_studies, labels=labels,
                                     match_on=match_on, rules=rules, workers=workers)
    description = {"kind": "dicomweb", "path": str(cache.resolve()), "index_dir": str(target.resolve()),
                   "dicomweb": {**fetched.describe(), "filters": filters.describe() if filters else {}},
                   "rules": _describe_rules(rules)}
    if labels is not None:
        description["labels"] = {"file": Path(labels).name, "match_on": (index.summary.get("labels") or {})
                                 .get("match_on", match_on)}
    return index.manifest, description


def _describe_rules(rules: Any) -> Any:
    if rules is None:
        return "SelectionRules defaults"
    for method in ("model_dump", "_asdict"):
        if hasattr(rules, method):
            return getattr(rules, method)()
    try:
        from dataclasses import asdict

        return asdict(rules)
    except TypeError:
        return repr(rules)
