"""QIDO-RS: which studies to fetch (the filters) and the series of every matching study."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from medrec.errors import ConfigError, InputError
from medrec.index.dicomweb.service import explain_http_error

# QIDO attribute tags (DICOM JSON keys)
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_MODALITY = "00080060"
_N_INSTANCES = "00201209"  # NumberOfSeriesRelatedInstances


@dataclass(frozen=True)
class DicomwebFilters:
    """Which studies to fetch: every filter given must match (repeated values of one filter: any of them)."""

    study_uid: tuple[str, ...] = ()
    patient_id: tuple[str, ...] = ()
    accession: tuple[str, ...] = ()
    modality: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise ConfigError(f"--since {self.since} is after --until {self.until}")

    def study_queries(self) -> list[dict[str, str]]:
        """The QIDO study searches (one per combination of repeated values)."""
        dates = ""
        if self.since or self.until:
            dates = f"{self.since:%Y%m%d}" if self.since else ""
            dates += "-" + (f"{self.until:%Y%m%d}" if self.until else "")
        axes = [[("StudyInstanceUID", v) for v in self.study_uid] or [None],
                [("PatientID", v) for v in self.patient_id] or [None],
                [("AccessionNumber", v) for v in self.accession] or [None],
                [("ModalitiesInStudy", v) for v in self.modality] or [None],
                [("StudyDate", dates)] if dates else [None]]
        return [dict(pair for pair in combo if pair is not None) for combo in itertools.product(*axes)]

    def describe(self) -> dict[str, Any]:
        """The filters given, for the sidecar / summary."""
        out: dict[str, Any] = {name: list(getattr(self, name)) for name in
                               ("study_uid", "patient_id", "accession", "modality") if getattr(self, name)}
        if self.since:
            out["since"] = self.since.isoformat()
        if self.until:
            out["until"] = self.until.isoformat()
        return out


def _value(item: dict[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def find_series(client: Any, url: str, filters: DicomwebFilters) -> dict[str, list[dict[str, Any]]]:
    """QIDO-RS: the series of every matching study, ``{study_uid: [series item, ...]}``.

    Raises:
        InputError: the service cannot be reached, refuses the credentials, or is not a DICOMweb service.
    """
    import requests

    studies: dict[str, list[dict[str, Any]]] = {}
    try:
        for query in filters.study_queries():
            for item in _all_pages(client.search_for_studies, _STUDY_UID, search_filters=query):
                studies.setdefault(_value(item, _STUDY_UID), [])
        for study_uid in studies:
            studies[study_uid] = _all_pages(
                client.search_for_series, _SERIES_UID, study_instance_uid=study_uid,
                fields=["Modality", "NumberOfSeriesRelatedInstances", "SeriesDescription"])
    except (requests.RequestException, ValueError) as e:
        raise InputError(explain_http_error(url, e)) from e
    studies.pop("", None)
    return studies


def _all_pages(search: Callable[..., list[dict[str, Any]]], key: str, **query: Any) -> list[dict[str, Any]]:
    """Every result of a QIDO search, page by page, until a page brings nothing new.

    Not ``get_remaining``: some servers (Orthanc 1.10 with ModalitiesInStudy) ignore ``offset`` and
    answer every page with the same results, which would page forever.
    """
    found: dict[str, dict[str, Any]] = {}
    while True:
        page = search(offset=len(found), **query)
        new = {uid: item for item in page if (uid := _value(item, key)) and uid not in found}
        if not new:
            return list(found.values())
        found.update(new)


def parse_date(text: str | None, option: str) -> date | None:
    """``--since`` / ``--until`` values: ISO (2026-01-31) or DICOM (20260131) dates."""
    if text is None or not text.strip():
        return None
    cleaned = text.strip()
    for candidate in (cleaned, f"{cleaned[:4]}-{cleaned[4:6]}-{cleaned[6:]}" if cleaned.isdigit() else ""):
        try:
            return date.fromisoformat(candidate)
        except ValueError:
            continue
    raise ConfigError(f"{option} {text!r}: expected a date as YYYY-MM-DD or YYYYMMDD")
