"""Studies from a PACS over DICOMweb: QIDO-RS finds the series, WADO-RS fetches them into a cache folder.

``dicomweb:URL`` is accepted wherever a scan folder is (``medrec index``, ``medrec score``). The
series are written as ordinary DICOM files into a cache folder (``<study>/<series>/<instance>.dcm``)
and indexed from there, so a study from the PACS and the same study exported to disk give the same
manifest row and the same score.

One module per step: :mod:`~medrec.index.dicomweb.service` checks the address, opens an
authenticated session and words the errors, :mod:`~medrec.index.dicomweb.query` finds the series
of the matching studies (QIDO-RS), and :mod:`~medrec.index.dicomweb.retrieve` fetches them into
the cache (WADO-RS) and indexes it.
"""

from __future__ import annotations

from medrec.index.dicomweb.query import DicomwebFilters, find_series, parse_date
from medrec.index.dicomweb.retrieve import FetchResult, fetch, fetch_and_index, is_uid
from medrec.index.dicomweb.service import (
    DEFAULT_TIMEOUT_S,
    SCHEME,
    describe_url,
    explain_http_error,
    is_dicomweb,
    open_client,
    open_session,
    service_url,
    timeout_s,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "SCHEME",
    "DicomwebFilters",
    "FetchResult",
    "describe_url",
    "explain_http_error",
    "fetch",
    "fetch_and_index",
    "find_series",
    "is_dicomweb",
    "is_uid",
    "open_client",
    "open_session",
    "parse_date",
    "service_url",
    "timeout_s",
]
