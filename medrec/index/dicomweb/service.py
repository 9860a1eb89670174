"""The DICOMweb service: its ``dicomweb:URL`` address, an authenticated session, and why a request failed.

Credentials never go on the command line: ``MEDREC_DICOMWEB_TOKEN`` (a bearer token), or
``MEDREC_DICOMWEB_USER`` and ``MEDREC_DICOMWEB_PASSWORD`` (basic), else the host's entry in
``~/.netrc`` (or the file ``$NETRC`` names). TLS certificates are always verified (against
``MEDREC_DICOMWEB_CA_BUNDLE`` when set, else the system's store). ``MEDREC_DICOMWEB_TIMEOUT``
(seconds, default 60) bounds every request.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

from medrec.errors import ConfigError

SCHEME = "dicomweb:"
DEFAULT_TIMEOUT_S = 60.0


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
