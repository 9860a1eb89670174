"""Fixtures for tests against a real PACS: one Orthanc per session, emptied on demand, and a fault proxy."""

from __future__ import annotations

import atexit
from collections.abc import Iterator

import pytest

from .orthanc import OrthancServer, missing_pacs_files
from .proxy import FaultProxy

SKIP_REASON = ("PACS tests need Debian packages orthanc + orthanc-dicomweb "
               "(scripts/install-pacs-deps.sh installs them)")

_started: list[OrthancServer] = []


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A started Orthanc with DICOMweb on a free loopback port; see :class:`OrthancServer` for its attributes.

    Shared by the whole session: a test that needs a known content asks for ``empty_orthanc``.
    """
    missing = missing_pacs_files()
    if missing:
        pytest.skip(f"{SKIP_REASON}; missing: {', '.join(map(str, missing))}")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    # atexit covers a session that ends without teardown; the process also dies with pytest (PDEATHSIG)
    atexit.register(server.stop)
    server.start()
    _started.append(server)
    try:
        yield server
    finally:
        server.stop()
        _started.remove(server)


@pytest.fixture
def empty_orthanc(orthanc: OrthancServer) -> OrthancServer:
    """The session's Orthanc with every patient deleted first."""
    orthanc.clear()
    return orthanc


@pytest.fixture
def pacs_proxy(orthanc: OrthancServer) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the session's Orthanc, with no fault until the test sets ``faults``."""
    with FaultProxy(orthanc.url) as proxy:
        yield proxy


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the end of Orthanc's log to the report of a failed test that used it (the console stays quiet)."""
    report = yield
    if report.failed and "orthanc" in getattr(item, "fixturenames", ()):
        for server in _started:
            report.sections.append((f"Orthanc log {server.log_path} (last 30 lines)", server.log_tail()))
    return report
