"""Studies from a PACS over DICOMweb: QIDO-RS finds the series, WADO-RS fetches them into a cache folder.

``dicomweb:URL`` is accepted wherever a scan folder is (``medrec index``, ``medrec score``). The
series are written as ordinary DICOM files into a cache folder (``<study>/<series>/<instance>.dcm``)
and indexed from there, so a study from the PACS and the same study exported to disk give the same
manifest row and the same score. A series is cached only when it arrived whole (it is written into
a ``.partial`` folder and renamed), so an interrupted or failed fetch is retried on the next run and
a series already cached is never fetched twice.

Credentials never go on the command line: ``MEDREC_DICOMWEB_TOKEN`` (a bearer token), or
``MEDREC_DICOMWEB_USER`` and ``MEDREC_DICOMWEB_PASSWORD`` (basic), else the host's entry in
``~/.netrc`` (or the file ``$NETRC`` names). TLS certificates are always verified (against
``MEDREC_DICOMWEB_CA_BUNDLE`` when set, else the system's store). ``MEDREC_DICOMWEB_TIMEOUT``
(seconds, default 60) bounds every request.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from medrec.errors import ConfigError, InputError
from medrec.index.problems import FileProblem
from medrec.index.sop_classes import NON_IMAGE_MODALITIES

SCHEME = "dicomweb:"
DEFAULT_TIMEOUT_S = 60.0

# QIDO attribute tags (DICOM JSON keys)
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_MODALITY = "00080060"
_N_INSTANCES = "00201209"  # NumberOfSeriesRelatedInstances


def is_dicomweb(source: str | Path) -> bool:
    """Whether an INPUT names a DICOMweb service (``dicomweb:https://pacs/dicom-web``)."""
    return str(source).startswith(SCHEME)


def service_url(source: str) -> str:
    """The HTTP(S) address of a ``dicomweb:URL`` INPUT, checked.

    Raises:
        ConfigError: not http(s), no host, or credentials written into the URL.
    """
    url = source[len(SCHEME):] if source.startswith(SCHEME) else source
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source}: expected dicomweb:http(s)://HOST[:PORT]/PATH, e.g. dicomweb:https://pacs/dicom-web")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"dicomweb:{parts.scheme}://{parts.hostname}...: credentials do not belong on the command line (they "
            "end up in shell histories and process lists); set MEDREC_DICOMWEB_TOKEN, or MEDREC_DICOMWEB_USER and "
            "MEDREC_DICOMWEB_PASSWORD, or add the host to ~/.netrc"
        )
    return url.rstrip("/")


def describe_url(url: str) -> str:
    """The address as recorded in sidecars and qc rows (no query string, never credentials)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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


@dataclass
class FetchResult:
    """What a fetch did: series fetched now, found in the cache, left out (with qc rows)."""

    url: str
    cache: Path
    studies: int = 0
    fetched: int = 0
    cached: int = 0
    skipped_studies: int = 0
    instances: int = 0
    problems: list[FileProblem] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """For the sidecar and the summary table."""
        return {"url": self.url, "cache": str(self.cache.resolve()), "studies": self.studies,
                "series_fetched": self.fetched, "series_cached": self.cached,
                "studies_skipped": self.skipped_studies, "instances_fetched": self.instances,
                "series_failed": len({p.series_uid for p in self.problems if p.code != "non_image_object"})}


def timeout_s() -> float:
    """The request timeout from ``MEDREC_DICOMWEB_TIMEOUT`` (seconds)."""
    text = os.environ.get("MEDREC_DICOMWEB_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"MEDREC_DICOMWEB_TIMEOUT={text!r}: expected a number of seconds > 0")
    return value


def open_session(url: str) -> Any:
    """A ``requests`` session with the credentials of the environment (or ~/.netrc) and TLS verification."""
    import requests

    session = requests.Session()
    token = os.environ.get("MEDREC_DICOMWEB_TOKEN", "").strip()
    user = os.environ.get("MEDREC_DICOMWEB_USER", "")
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif user:
        session.auth = (user, os.environ.get("MEDREC_DICOMWEB_PASSWORD", ""))
    # with neither, requests reads the host's ~/.netrc ($NETRC) entry itself
    session.verify = os.environ.get("MEDREC_DICOMWEB_CA_BUNDLE") or True
    return session


def open_client(url: str) -> Any:
    """A ``dicomweb_client.DICOMwebClient`` on ``url`` (an http(s) address)."""
    from dicomweb_client import DICOMwebClient

    timeout = timeout_s()
    client = DICOMwebClient(url, session=open_session(url), timeout=(min(timeout, 10.0), timeout))
    # a busy server (429 / 503 / 504) is asked again after 0.5, 1 and 2 s, then the error stands
    client.set_http_retry_params(max_attempts=4, wait_exponential_multiplier=250)
    return client


def explain_http_error(url: str, error: Exception) -> str:
    """One line saying why a request to the DICOMweb service failed and what to do."""
    import requests

    where = describe_url(url)
    if isinstance(error, requests.HTTPError) and error.response is not None:
        status = error.response.status_code
        if status == 401:
            return (f"{where}: the server refused the credentials (HTTP 401); set MEDREC_DICOMWEB_TOKEN, or "
                    "MEDREC_DICOMWEB_USER and MEDREC_DICOMWEB_PASSWORD, or add the host to ~/.netrc")
        if status == 403:
            return f"{where}: the account has no access to this service (HTTP 403)"
        if status == 404:
            return f"{where}: no DICOMweb service at this address (HTTP 404); the URL usually ends in /dicom-web"
        return f"{where}: the server answered HTTP {status} ({error.response.reason})"
    if isinstance(error, requests.exceptions.SSLError):
        return (f"{where}: TLS certificate check failed ({_first_line(error)}); point MEDREC_DICOMWEB_CA_BUNDLE at "
                "the hospital's CA certificates")
    if isinstance(error, requests.Timeout):
        return f"{where}: no answer within {timeout_s():g} s (MEDREC_DICOMWEB_TIMEOUT)"
    if isinstance(error, requests.ConnectionError):
        return f"{where}: cannot reach the server ({_socket_reason(error)})"
    return f"{where}: {_first_line(error)}"


def _socket_reason(error: BaseException) -> str:
    """The operating system's words for a failed connection ('Connection refused'), not urllib3's wrapping."""
    import re

    text = str(error)
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found.group(1).strip()
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


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


def is_uid(text: str) -> bool:
    """A valid DICOM UID: at most 64 characters, digit groups separated by single dots."""
    return len(text) <= 64 and _UID.fullmatch(text) is not None


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _series_address(url: str, study_uid: str, series_uid: str) -> str:
    return f"{SCHEME}{describe_url(url)}/studies/{study_uid}/series/{series_uid}"


def fetch(
    source: str,
    cache: str | Path,
    filters: DicomwebFilters | None = None,
    skip_studies: Sequence[str] = (),
    include_non_image: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> FetchResult:
    """Fetch the matching studies of a DICOMweb service into ``cache`` (WADO-RS, whole series, original encoding).

    Args:
        source: ``dicomweb:URL``.
        cache: the cache folder (``<study_uid>/<series_uid>/<sop_uid>.dcm``); series already in it are not fetched.
        filters: which studies (default: every study the service lists).
        skip_studies: studies not to fetch (e.g. those already scored).
        include_non_image: fetch SR / SEG / PR / KO / RT ... series too (default: listed as non_image_object).
        progress: called with ``(series done, series total)``.

    Returns:
        A :class:`FetchResult`; a series that could not be fetched whole is a problem (qc row), not an error.

    Raises:
        InputError: the service cannot be reached or refuses the credentials (before or during the fetch).
    """
    url = service_url(source)
    filters = filters or DicomwebFilters()
    root = Path(cache)
    root.mkdir(parents=True, exist_ok=True)
    client = open_client(url)
    studies = find_series(client, url, filters)
    result = FetchResult(url=describe_url(url), cache=root, studies=len(studies))
    skip = set(skip_studies)
    wanted_modalities = {m.upper() for m in filters.modality}
    todo: list[tuple[str, dict[str, Any]]] = []
    for study_uid, series_items in sorted(studies.items()):
        if study_uid in skip:
            result.skipped_studies += 1
            continue
        for item in series_items:
            series_uid, modality = _value(item, _SERIES_UID), _value(item, _MODALITY).upper()
            address = _series_address(url, study_uid, series_uid)
            if not series_uid:
                continue
            if not (is_uid(study_uid) and is_uid(series_uid)):
                # the UIDs name cache folders: '..' or '/' from a faulty server must not leave the cache
                result.problems.append(FileProblem(
                    address, "dicomweb_fetch_failed", "the server listed a study / series UID that is not a valid "
                                                      "DICOM UID (digits and dots): not fetched", series_uid))
                continue
            if modality in NON_IMAGE_MODALITIES and not include_non_image:
                result.problems.append(FileProblem(
                    address, "non_image_object",
                    f"{modality} series, not an image: not fetched (--include-non-image fetches it)", series_uid))
                continue
            if wanted_modalities and modality not in wanted_modalities:
                continue
            if (root / study_uid / series_uid).is_dir():
                result.cached += 1
                continue
            todo.append((study_uid, item))
    for done, (study_uid, item) in enumerate(todo):
        series_uid = _value(item, _SERIES_UID)
        problem = _fetch_series(client, url, root, study_uid, series_uid, _expected_count(item), result)
        if problem is not None:
            result.problems.append(problem)
        if progress is not None:
            progress(done + 1, len(todo))
    return result


def _expected_count(item: dict[str, Any]) -> int | None:
    text = _value(item, _N_INSTANCES)
    return int(text) if text.isdigit() else None


def _fetch_series(client: Any, url: str, root: Path, study_uid: str, series_uid: str, expected: int | None,
                  result: FetchResult) -> FileProblem | None:
    """WADO-RS one series into ``root/study/series`` (via ``.partial``); a problem when it did not arrive whole."""
    import requests

    address = _series_address(url, study_uid, series_uid)
    final = root / study_uid / series_uid
    partial = root / study_uid / f".partial-{series_uid}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    received = 0
    try:
        for dataset in _retrieve(client, study_uid, series_uid):
            short = _short_pixel_data(dataset)
            if short:
                shutil.rmtree(partial, ignore_errors=True)
                return FileProblem(address, "dicomweb_incomplete", f"an instance arrived cut short ({short})",
                                   series_uid)
            sop_uid = str(getattr(dataset, "SOPInstanceUID", "") or f"instance{received:06d}")
            dataset.save_as(partial / f"{_safe(sop_uid)}.dcm", enforce_file_format=True)
            received += 1
    except requests.HTTPError as e:
        shutil.rmtree(partial, ignore_errors=True)
        status = e.response.status_code if e.response is not None else None
        if status in (401, 403):
            raise InputError(explain_http_error(url, e)) from e
        if status == 404:
            return FileProblem(address, "dicomweb_series_gone",
                               "listed by the server (QIDO) but gone when fetched (WADO: HTTP 404)", series_uid)
        return FileProblem(address, "dicomweb_fetch_failed", explain_http_error(url, e), series_uid)
    except requests.ConnectionError as e:
        shutil.rmtree(partial, ignore_errors=True)
        if not isinstance(e, requests.Timeout) and "refused" in str(e).lower():
            raise InputError(explain_http_error(url, e)) from e
        return FileProblem(address, "dicomweb_fetch_failed", explain_http_error(url, e), series_uid)
    except (requests.RequestException, ValueError, TypeError, EOFError, OSError, AttributeError, KeyError) as e:
        # a truncated or malformed multipart answer, or a part that is not a DICOM instance
        shutil.rmtree(partial, ignore_errors=True)
        return FileProblem(address, "dicomweb_fetch_failed",
                           f"the server's answer could not be read ({_first_line(e)})", series_uid)
    if expected is not None and received < expected:
        shutil.rmtree(partial, ignore_errors=True)
        return FileProblem(address, "dicomweb_incomplete",
                           f"{received} of the {expected} instances the server lists arrived (answer cut short?)",
                           series_uid)
    if received == 0:
        shutil.rmtree(partial, ignore_errors=True)
        return FileProblem(address, "dicomweb_incomplete", "the server sent no instance of this series", series_uid)
    partial.rename(final)
    result.fetched += 1
    result.instances += received
    return None


def _short_pixel_data(dataset: Any) -> str:
    """Why an instance's native pixel data is shorter than its header says ('' when whole, compressed or absent).

    A WADO-RS series answer has no length (the server closes the connection at its end), so a cut
    answer parses as a last instance whose pixel data stops early; the count check misses it.
    """
    if "PixelData" not in dataset or dataset.file_meta.get("TransferSyntaxUID", "") not in _NATIVE_SYNTAXES:
        return ""
    try:
        expected = (int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel", 1))
                    * int(dataset.get("NumberOfFrames", 1) or 1) * int(dataset.BitsAllocated)) // 8
    except (AttributeError, TypeError, ValueError):
        return ""
    got = len(dataset.PixelData)
    return f"{got} of {expected} pixel bytes" if got < expected else ""


_NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})


def _retrieve(client: Any, study_uid: str, series_uid: str) -> Iterator[Any]:
    """The instances of a series in their stored encoding (``transfer-syntax=*``: no transcoding on the server)."""
    return client.iter_series(study_uid, series_uid, media_types=(("application/dicom", "*"),))


def _safe(uid: str) -> str:
    """A UID as a file name (UIDs are digits and dots; anything else is replaced)."""
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in uid)[:128] or "instance"


def fetch_and_index(
    source: str,
    out_dir: str | Path,
    cache: str | Path,
    filters: DicomwebFilters | None = None,
    skip_studies: Sequence[str] = (),
    show_progress: bool = True,
    **index_options: Any,
) -> tuple[Any, FetchResult]:
    """Fetch the matching studies into ``cache``, then index the cache as a scan folder into ``out_dir``.

    The series the service could not deliver become qc.csv rows beside the index's own. ``index_options``
    go to :func:`medrec.index.index_folder` (labels, match_on, rules, workers, lesions, ...).

    Returns:
        ``(IndexResult, FetchResult)``.

    Raises:
        InputError: the service cannot be reached, no study matches, or no series could be fetched at all.
    """
    from medrec.console import console
    from medrec.index.indexer import index_folder

    rules = index_options.get("rules")
    include_non_image = bool(getattr(rules, "include_non_image", False))
    where = describe_url(service_url(source))
    console.print(f"Fetching from {where} into {cache} ...")
    reporter = _progress_printer() if show_progress else None
    result = fetch(source, cache, filters, skip_studies=skip_studies, include_non_image=include_non_image,
                   progress=reporter)
    if result.studies == 0:
        described = ", ".join(f"{k}={v}" for k, v in (filters or DicomwebFilters()).describe().items())
        raise InputError(f"{where}: no study matches {described or 'any filter (the server lists none)'}")
    if not any(path.is_file() for path in Path(cache).rglob("*.dcm")):
        failed = [p for p in result.problems if p.code != "non_image_object"] or result.problems
        if failed:
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise InputError(f"{where}: no series could be fetched: {failed[0].path}: {failed[0].reason}{more}")
        raise InputError(f"{where}: every matching study was skipped (already scored) and the cache {cache} is empty")
    index = index_folder(cache, out_dir, extra_problems=result.problems, show_progress=show_progress,
                         **index_options)
    return index, result


def _progress_printer() -> Callable[[int, int], None]:
    from medrec.console import console

    def report(done: int, total: int) -> None:
        if done == total or done % 10 == 0:
            console.print(f"  fetched {done} / {total} series")

    return report


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
