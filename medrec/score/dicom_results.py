"""Scores back to the hospital as DICOM: one TID 1500 SR per study, a SEG per finding map, optionally stored (STOW-RS).

``medrec score ... --dicom-out DIR [--store dicomweb:URL]`` calls :func:`write_dicom_results` after
scoring. It reads what scoring wrote (the predictions, their sidecar, the index the samples came
from) and keeps a ledger, ``DIR/dicom_out.csv`` (one row per study: the objects written, whether
they were stored, or why not), so a rerun writes and sends only the studies whose results changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medrec.errors import InputError, ModelError, OutputError
from medrec.runinfo import read_run_info

LEDGER = "dicom_out.csv"
LEDGER_COLUMNS = ("study_uid", "samples", "fingerprint", "sr", "seg", "stored", "error")


@dataclass
class DicomOutResult:
    """What one call wrote: studies with new objects, studies unchanged since the last call, failures."""

    folder: Path
    written: int = 0
    unchanged: int = 0
    stored: int = 0
    not_dicom: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def rows(self) -> list[tuple[str, Any]]:
        """The summary table rows."""
        out: list[tuple[str, Any]] = [("studies written (SR)", self.written), ("studies unchanged", self.unchanged)]
        if self.stored:
            out.append(("studies stored (STOW-RS)", self.stored))
        if self.not_dicom:
            out.append(("samples not from DICOM (no SR)", self.not_dicom))
        out += [("studies failed", len(self.failures)), ("DICOM folder", self.folder)]
        return out


def _algorithm(record: Mapping[str, Any]) -> Any:
    from medrec import __version__
    from medrec.dicomout import Algorithm

    run_dir = Path(str((record.get("input") or {}).get("run_dir") or ""))
    try:
        name = read_run_info(run_dir).architecture.name
    except ModelError:  # the run folder moved or is gone: the results still name the weights by sha256
        name = "medrec model"
    return Algorithm(name=name, version=str(record.get("medrec_version") or __version__),
                     weights_sha256=str(record["model_sha256"]), threshold=float(record["threshold"]),
                     threshold_source=str(record.get("threshold_source") or ""),
                     positive_class=str(record.get("positive_class") or "positive"))


def _manifest_of(record: Mapping[str, Any], output: Path) -> pd.DataFrame:
    from medrec.manifest import read_manifest

    source = record.get("input") or {}
    if source.get("index_dir"):
        path = Path(str(source.get("index_dir"))) / "manifest.csv"
    else:
        path = Path(str(source.get("path")))
    if not path.is_file():
        raise InputError(
            f"{output}: the manifest it was scored from ({path}) is gone; DICOM results need the source files")
    return read_manifest(path)


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value else None


def _finding(row: Mapping[str, Any]) -> Any:
    from medrec.dicomout import Finding

    values = [_number(row.get(name)) for name in
              ("finding_x", "finding_y", "finding_z", "finding_diameter_mm", "finding_probability")]
    if any(value is None for value in values):
        return None
    x, y, z, diameter, probability = values
    return Finding(x=x, y=y, z=z, diameter_mm=diameter, probability=probability)


def _read_ledger(folder: Path) -> dict[str, dict[str, str]]:
    path = folder / LEDGER
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {row["study_uid"]: row for row in frame.to_dict("records")}


def _write_ledger(folder: Path, ledger: Mapping[str, Mapping[str, str]]) -> None:
    from medrec.atomicio import write_csv

    write_csv(folder / LEDGER, pd.DataFrame([dict(row) for _, row in sorted(ledger.items())],
                                            columns=list(LEDGER_COLUMNS)))


def write_dicom_results(
    output: str | Path,
    folder: str | Path,
    *,
    store: str | None = None,
    explain_dir: str | Path | None = None,
) -> DicomOutResult:
    """Write (and optionally store) the DICOM results of a predictions file.

    Args:
        output: the predictions CSV ``medrec score`` wrote (its sidecar and index are read too).
        folder: where the objects go (``SR_<uid>.dcm``, ``SEG_<uid>.dcm``) with the ledger ``dicom_out.csv``.
        store: ``dicomweb:URL`` to send the objects to (STOW-RS); a study whose objects could not be
            sent is retried on the next call.
        explain_dir: the folder of finding maps (``<sample_id>.nii.gz``); a map there becomes a SEG.

    Returns:
        A :class:`DicomOutResult`.

    Raises:
        OutputError: the predictions have no sidecar (not written by ``medrec score``).
        InputError: the manifest they were scored from is gone.
    """
    from medrec.dicomout import SeriesResult, finding_seg, study_sr, write_dataset
    from medrec.manifest import series_files
    from medrec.score.layout import samples_path
    from medrec.score.writer import read_rows, read_sidecar

    output, folder = Path(output), Path(folder)
    record = read_sidecar(output)
    if record is None:
        raise OutputError(f"{output}: has no sidecar; DICOM results are written from 'medrec score' output")
    if not record.get("positive_class"):
        raise OutputError(f"{output}: a multi-class run; the DICOM SR writes a binary finding (present / absent)")
    algorithm = _algorithm(record)
    manifest = _manifest_of(record, output).set_index("sample_id", drop=False)
    level = record.get("level") or "series"
    _, rows = read_rows(output if level == "series" else samples_path(output))
    study_scores: dict[str, float] = {}
    if level == "study":
        study_scores = {row["study_uid"]: score for row in read_rows(output)[1]
                        if (score := _number(row.get("score"))) is not None}
    folder.mkdir(parents=True, exist_ok=True)
    ledger = _read_ledger(folder)
    result = DicomOutResult(folder=folder)
    client = None
    by_study: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if _number(row.get("score")) is None or row.get("error"):
            continue
        sample = manifest.loc[row["sample_id"]] if row["sample_id"] in manifest.index else None
        if sample is None or str(sample.get("format", "")).lower() != "dicom":
            result.not_dicom += 1
            continue
        by_study.setdefault(row["study_uid"], []).append(row)
    for study_uid, members in sorted(by_study.items()):
        fingerprint = hashlib.sha256(json.dumps(
            [algorithm.weights_sha256, algorithm.threshold, study_scores.get(study_uid),
             sorted((m["sample_id"], m["score"], *(m.get(c, "") for c in ("finding_x", "finding_y", "finding_z")))
                    for m in members)]).encode()).hexdigest()[:16]
        previous = ledger.get(study_uid)
        if (previous and previous.get("fingerprint") == fingerprint and not previous.get("error")
                and all((folder / name).is_file() for name in _names(previous))
                and (store is None or previous.get("stored") == "yes")):
            result.unchanged += 1
            continue
        entry = {"study_uid": study_uid, "samples": " ".join(m["sample_id"] for m in members),
                 "fingerprint": fingerprint, "sr": "", "seg": "", "stored": "", "error": ""}
        try:
            results = [SeriesResult(sample_id=m["sample_id"], source_files=[Path(f) for f in
                                                                              series_files(manifest.loc[m["sample_id"]])],
                                    score=float(m["score"]), finding=_finding(m)) for m in members]
            objects = [study_sr(results, algorithm, study_score=study_scores.get(study_uid))]
            for item in results:
                finding_map = Path(explain_dir) / f"{item.sample_id}.nii.gz" if explain_dir else None
                if finding_map is not None and finding_map.is_file() and item.finding is not None:
                    objects.append(finding_seg(item, finding_map, algorithm))
            paths = [write_dataset(ds, folder) for ds in objects]
            entry["sr"] = paths[0].name
            entry["seg"] = " ".join(p.name for p in paths[1:])
            result.written += 1
            if store is not None:
                client = client or _store_client(store)
                _store(client, store, objects)
                entry["stored"] = "yes"
                result.stored += 1
        except StoreUnavailable:
            entry["error"] = "not stored: the server could not be reached or refused the request"
            ledger[study_uid] = entry
            _write_ledger(folder, ledger)
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, InputError, OutputError) as e:
            message = str(e) if isinstance(e, (InputError, OutputError)) else f"{type(e).__name__}: {e}"
            entry["error"] = message.splitlines()[0][:300]
            result.failures.append((study_uid, entry["error"]))
        ledger[study_uid] = entry
        _write_ledger(folder, ledger)
    return result


class StoreUnavailable(InputError):
    """The STOW-RS server cannot be reached or refuses the credentials: no later study would fare better."""


def _names(entry: Mapping[str, str]) -> list[str]:
    return [name for name in [entry.get("sr", ""), *entry.get("seg", "").split()] if name]


def _store_client(store: str) -> Any:
    from medrec.index.dicomweb import open_client, service_url

    return open_client(service_url(store))


def _store(client: Any, store: str, objects: Sequence[Any]) -> None:
    """STOW-RS the objects; a refusal is an InputError naming the server and the reason."""
    import requests

    from medrec.index.dicomweb import explain_http_error, service_url

    try:
        response = client.store_instances(list(objects))
    except requests.HTTPError as e:
        status = e.response.status_code if e.response is not None else 0
        if status in (401, 403) or status >= 500:
            raise StoreUnavailable(explain_http_error(service_url(store), e)) from e
        raise InputError(explain_http_error(service_url(store), e)) from e
    except requests.RequestException as e:
        raise StoreUnavailable(explain_http_error(service_url(store), e)) from e
    failed = getattr(response, "FailedSOPSequence", None)
    if failed:
        reasons = sorted({str(getattr(item, "FailureReason", "?")) for item in failed})
        raise InputError(f"{store}: the server refused {len(failed)} object(s) (failure reason {', '.join(reasons)})")


def write_report_dicom(
    predictions: str | Path,
    report_pdf: str | Path,
    folder: str | Path,
    *,
    title: str,
    manifest: str | Path | None = None,
    run_dir: str | Path | None = None,
) -> Path:
    """The validation report as an Encapsulated PDF object in ``folder``, linked to the studies it describes.

    The studies are those of the predictions' scored DICOM samples, less the run's training and
    validation samples (which a report leaves out): the object's Source Instance Sequence lists one
    instance of each scored series.

    Returns:
        The written file.

    Raises:
        InputError: no scored DICOM sample (nothing for the object to describe), or the manifest is gone.
    """
    from medrec.dicomout import encapsulated_pdf, write_dataset
    from medrec.manifest import read_manifest, series_files
    from medrec.score.writer import read_rows, read_sidecar

    predictions = Path(predictions)
    record = read_sidecar(predictions) or {}
    frame = read_manifest(manifest) if manifest is not None else _manifest_of(record, predictions)
    frame = frame.set_index("sample_id", drop=False)
    run = Path(run_dir) if run_dir is not None else Path(str((record.get("input") or {}).get("run_dir") or ""))
    seen = set()
    if run_dir is not None or (record.get("input") or {}).get("run_dir"):
        splits = run / "splits.csv"
        if splits.is_file():
            table = pd.read_csv(splits, dtype=str, keep_default_na=False)
            seen = set(table.loc[table["split"].isin(["train", "val"]), "sample_id"])
    level = record.get("level") or "series"
    from medrec.score.layout import samples_path

    rows = read_rows(predictions if level == "series" else samples_path(predictions))[1]
    sources: list[Path] = []
    for row in rows:
        sample_id = row.get("sample_id", "")
        if _number(row.get("score")) is None or sample_id in seen or sample_id not in frame.index:
            continue
        sample = frame.loc[sample_id]
        if str(sample.get("format", "")).lower() == "dicom":
            files = series_files(sample)
            if files:
                sources.append(Path(files[0]))
    if not sources:
        raise InputError(f"{predictions}: no scored DICOM sample to link the report to; the Encapsulated PDF "
                         "describes DICOM studies")
    Path(folder).mkdir(parents=True, exist_ok=True)
    return write_dataset(encapsulated_pdf(Path(report_pdf), sources, title), Path(folder))


def store_objects(store: str, paths: Sequence[Path]) -> None:
    """STOW-RS files already written (e.g. the report's Encapsulated PDF) to ``dicomweb:URL``."""
    import pydicom

    _store(_store_client(store), store, [pydicom.dcmread(path) for path in paths])
