"""WADO-RS: fetch the matching series into a cache folder, then index the cache as a scan folder.

A series is cached only when it arrived whole (it is written into a ``.partial`` folder and
renamed), so an interrupted or failed fetch is retried on the next run and a series already cached
is never fetched twice.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrec.errors import InputError
from medrec.index.dicomweb.query import _MODALITY, _N_INSTANCES, _SERIES_UID, DicomwebFilters, _value, find_series
from medrec.index.dicomweb.service import (
    SCHEME,
    _first_line,
    describe_url,
    explain_http_error,
    open_client,
    service_url,
)
from medrec.index.problems import FileProblem
from medrec.index.sop_classes import NON_IMAGE_MODALITIES


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
