"""A fault-injecting HTTP reverse proxy in front of the test PACS.

Hand-written because the failures a PACS client must survive are specific to DICOMweb (a WADO-RS
body cut short, a series QIDO lists but WADO no longer serves) and no kept library injects them;
it forwards with ``http.client`` so bodies pass through byte for byte, gzip and all.

A test sets :attr:`FaultProxy.faults` between calls::

    pacs_proxy.faults = "status:503"                       # every request answers 503
    pacs_proxy.faults = ["slow:0.5", "truncate_wado"]      # several at once
    pacs_proxy.faults = None                               # pass through
"""

from __future__ import annotations

import difflib
import http.client
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

DICOMWEB_ROOT = "/dicom-web"
FAULT_FORMS = {
    "status": "status:CODE (4xx or 5xx, answered to every request)",
    "truncate_wado": "truncate_wado (WADO-RS series / instance bodies cut in half, no Content-Length)",
    "slow": "slow:SECONDS (sleep before answering)",
    "vanish_series": "vanish_series:SERIES_UID (404 for WADO-RS of that series, QIDO still lists it)",
}
# headers of one connection, not of the message (RFC 9110 section 7.6.1): never forwarded
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "proxy-connection"})
QIDO_RESOURCES = frozenset({"studies", "series", "instances"})
COPY_CHUNK = 64 * 1024
UPSTREAM_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Fault:
    """One parsed fault: ``kind`` is a key of ``FAULT_FORMS``; ``status``, ``seconds``, ``series_uid`` its argument."""

    kind: str
    status: int = 0
    seconds: float = 0.0
    series_uid: str = ""

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Parse ``status:503``, ``truncate_wado``, ``slow:1.5`` or ``vanish_series:1.2.3``.

        Raises:
            ValueError: unknown kind (with the nearest valid one) or a bad argument.
        """
        kind, _, argument = spec.partition(":")
        if kind not in FAULT_FORMS:
            nearest = difflib.get_close_matches(kind, FAULT_FORMS, n=1)
            hint = f"did you mean {nearest[0]!r}? " if nearest else ""
            raise ValueError(f"proxy fault {spec!r}: unknown kind {kind!r}; {hint}"
                             f"expected one of: {'; '.join(FAULT_FORMS.values())}")
        if kind == "truncate_wado":
            if argument:
                raise ValueError(f"proxy fault {spec!r}: truncate_wado takes no argument; write 'truncate_wado'")
            return cls(kind)
        if kind == "status":
            if not (argument.isdigit() and 400 <= int(argument) <= 599):
                raise ValueError(f"proxy fault {spec!r}: expected {FAULT_FORMS[kind]}, got code {argument!r}")
            return cls(kind, status=int(argument))
        if kind == "slow":
            try:
                seconds = float(argument)
            except ValueError:
                seconds = -1.0
            if not seconds >= 0:
                raise ValueError(f"proxy fault {spec!r}: expected {FAULT_FORMS[kind]}, got seconds {argument!r}")
            return cls(kind, seconds=seconds)
        if not argument:
            raise ValueError(f"proxy fault {spec!r}: expected {FAULT_FORMS[kind]}, got no series UID")
        return cls(kind, series_uid=argument)


@dataclass(frozen=True)
class ProxiedRequest:
    """What the proxy saw and answered.

    ``fault``: the kind that changed the answer, or None. ``upstream_length``: the Content-Length
    Orthanc gave (None when it streamed until close, or was not asked). ``sent_bytes``: the body
    bytes the client was sent.
    """

    method: str
    path: str
    status: int
    fault: str | None
    upstream_length: int | None = None
    sent_bytes: int = 0


def first_fault(faults: Sequence[Fault], kind: str) -> Fault | None:
    """The first of ``faults`` of ``kind``, if any."""
    return next((fault for fault in faults if fault.kind == kind), None)


def wado_segments(path: str, root: str = DICOMWEB_ROOT) -> list[str] | None:
    """The path segments after the DICOMweb root when ``path`` is a WADO-RS retrieval, else None.

    QIDO-RS searches end in a resource type (``/studies``, ``.../series``, ``.../instances``);
    every other path under ``/studies/`` retrieves something (an instance, a series, metadata,
    frames, a rendering).
    """
    path = urlsplit(path).path
    if not path.startswith(root + "/"):
        return None
    segments = path[len(root) + 1:].rstrip("/").split("/")
    if segments[0] != "studies" or segments[-1] in QIDO_RESOURCES:
        return None
    return segments


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a client's idle keep-alive connection must not hold up stop()

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-answer (a timeout a test set on purpose) is not an error of the proxy."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FaultProxy:
    """A reverse proxy on a free loopback port that forwards to ``upstream_url`` and injects :attr:`faults`.

    Attributes:
        url: ``http://127.0.0.1:PORT`` (after :meth:`start`).
        dicomweb_url: ``url + "/dicom-web"``.
        seen: every request answered, in order (a :class:`ProxiedRequest` each); reading it waits for
            the requests still being answered (a client may hold the whole answer before the handler
            thread has recorded it).
    """

    def __init__(self, upstream_url: str, dicomweb_root: str = DICOMWEB_ROOT) -> None:
        self.upstream_url = upstream_url
        self.dicomweb_root = dicomweb_root
        self._seen: list[ProxiedRequest] = []
        self._faults: tuple[Fault, ...] = ()
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self._in_flight = 0

    @property
    def seen(self) -> list[ProxiedRequest]:
        with self._answered:
            self._answered.wait_for(lambda: self._in_flight == 0, timeout=10)
            return list(self._seen)

    def begin(self) -> None:
        """A request arrived (counted until its handler ends: see :attr:`seen`)."""
        with self._lock:
            self._in_flight += 1

    def end(self) -> None:
        with self._answered:
            self._in_flight -= 1
            self._answered.notify_all()

    @property
    def faults(self) -> tuple[Fault, ...]:
        return self._faults

    @faults.setter
    def faults(self, specs: str | Sequence[str] | None) -> None:
        """Set the faults: None (pass through), one spec or several (see ``FAULT_FORMS``)."""
        if specs is None:
            specs = ()
        elif isinstance(specs, str):
            specs = (specs,)
        self._faults = tuple(Fault.parse(spec) for spec in specs)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultProxy.url read before start(); call start() or use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def dicomweb_url(self) -> str:
        return self.url + self.dicomweb_root

    def record(self, request: ProxiedRequest) -> None:
        with self._lock:
            self._seen.append(request)

    def start(self) -> FaultProxy:
        server = _ProxyServer(("127.0.0.1", 0), _handler_class(self))
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="pacs-fault-proxy",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _handler_class(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    upstream = urlsplit(proxy.upstream_url)

    class ProxyHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.forward()

        do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

        def log_message(self, format: str, *args: object) -> None:
            """Silent: what the proxy answered is in ``proxy.seen``."""

        def forward(self) -> None:
            proxy.begin()
            try:
                self.answer_request()
            finally:
                proxy.end()

        def answer_request(self) -> None:
            body = self.read_request_body()
            faults = proxy.faults  # one reading per request: a test may change them meanwhile
            slow = first_fault(faults, "slow")
            if slow is not None:
                time.sleep(slow.seconds)
            status = first_fault(faults, "status")
            if status is not None:
                self.answer(status.status, f"injected by the test proxy: status {status.status}", "status")
                return
            segments = wado_segments(self.path, proxy.dicomweb_root) if self.command == "GET" else None
            vanish = first_fault(faults, "vanish_series")
            if vanish is not None and segments is not None and segments[2:4] == ["series", vanish.series_uid]:
                self.answer(404, f"injected by the test proxy: series {vanish.series_uid} vanished", "vanish_series")
                return
            truncate = (first_fault(faults, "truncate_wado") is not None and segments is not None
                        and segments[2:3] == ["series"] and segments[-1] != "metadata")
            try:
                connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=UPSTREAM_TIMEOUT_S)
                connection.request(self.command, self.path, body=body, headers=self.upstream_headers(body))
                response = connection.getresponse()
            except OSError as error:
                self.answer(502, f"test proxy: upstream {proxy.upstream_url} unreachable: {error}", None)
                return
            try:
                if truncate and response.status == 200:
                    self.send_truncated(response)
                else:
                    self.relay(response)
            finally:
                connection.close()

        def read_request_body(self) -> bytes | None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return b"".join(self.read_chunks())
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else None

        def read_chunks(self) -> Iterator[bytes]:
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield self.rfile.read(size)
                self.rfile.readline()

        def upstream_headers(self, body: bytes | None) -> dict[str, str]:
            # Host stays the client's, so Orthanc's RetrieveURLs point back at the proxy
            headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
            headers.pop("Content-Length", None)
            if body is not None:
                headers["Content-Length"] = str(len(body))
            return headers

        def send_response_headers(self, response: http.client.HTTPResponse, *, drop_length: bool) -> None:
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() in HOP_BY_HOP or (drop_length and name.lower() == "content-length"):
                    continue
                self.send_header(name, value)

        def relay(self, response: http.client.HTTPResponse) -> None:
            """Stream the answer back; a body without Content-Length (Orthanc's WADO-RS series) ends at close."""
            has_length = response.getheader("Content-Length") is not None
            self.send_response_headers(response, drop_length=False)
            if not has_length:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            sent = 0
            if self.command != "HEAD":
                while chunk := response.read(COPY_CHUNK):
                    self.wfile.write(chunk)
                    sent += len(chunk)
            proxy.record(ProxiedRequest(self.command, self.path, response.status, None,
                                        _length(response), sent))

        def send_truncated(self, response: http.client.HTTPResponse) -> None:
            """Headers as Orthanc sent them less Content-Length, half the body, then close: a silent cut."""
            body = response.read()
            self.send_response_headers(response, drop_length=True)
            self.send_header("Connection", "close")
            self.close_connection = True
            self.end_headers()
            half = body[:len(body) // 2]
            self.wfile.write(half)
            proxy.record(ProxiedRequest(self.command, self.path, response.status, "truncate_wado",
                                        _length(response), len(half)))

        def answer(self, status: int, message: str, fault: str | None) -> None:
            payload = message.encode() + b"\n"
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="medrec test proxy"')
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            proxy.record(ProxiedRequest(self.command, self.path, status, fault,
                                        sent_bytes=0 if self.command == "HEAD" else len(payload)))

    return ProxyHandler


def _length(response: http.client.HTTPResponse) -> int | None:
    length = response.getheader("Content-Length")
    return int(length) if length is not None and length.isdigit() else None
