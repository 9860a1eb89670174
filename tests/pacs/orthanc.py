"""A throw-away Orthanc PACS for the tests: its own port, storage, password and log, gone when stopped.

Hand-written because no kept library starts a real Orthanc for pytest (the Orthanc team's
integration tests drive a server someone else started); this is the thinnest wrapper that gives
each test session a private, authenticated DICOMweb server on loopback.
"""

from __future__ import annotations

import ctypes
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PACS_USER = "medrec"
DICOMWEB_ROOT = "/dicom-web"
LOG_NAME = "orthanc.log"
CONFIG_NAME = "orthanc.json"

# what Orthanc 1.10 logs when its HTTP port is taken (another process won the race for the free port)
_PORT_IN_USE = "already in use"
_PORT_ATTEMPTS = 5
_PR_SET_PDEATHSIG = 1


class OrthancStartError(RuntimeError):
    """Orthanc did not start, or did not answer ``GET /system`` in time."""


def missing_pacs_files(binary: Path = ORTHANC_BINARY, plugin: Path = DICOMWEB_PLUGIN) -> list[Path]:
    """The files of the Debian packages ``orthanc`` and ``orthanc-dicomweb`` that this machine lacks."""
    return [path for path in (binary, plugin) if not path.is_file()]


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller retries if another process takes it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """Child side of ``Popen``: have Linux SIGTERM Orthanc when pytest dies, even by SIGKILL (no atexit then)."""
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class OrthancServer:
    """One Orthanc process with the DICOMweb plugin, HTTP on a free port, basic auth, storage in a temp folder.

    Orthanc 1.10 has no option to choose the HTTP bind address: it listens on all interfaces and,
    with ``RemoteAccessAllowed`` false, refuses every client that is not on loopback. The DICOM
    (DIMSE) server is off, so only the HTTP port is opened.

    Attributes (after :meth:`start`):
        url: ``http://127.0.0.1:PORT``.
        dicomweb_url: ``url + "/dicom-web"`` (QIDO-RS, WADO-RS and STOW-RS).
        user, password: the one registered user; the password is new for each server.
        work_dir: holds the configuration, the storage and ``orthanc.log``.
    """

    def __init__(self, work_dir: Path | None = None, *, start_timeout: float = 30.0,
                 binary: Path = ORTHANC_BINARY, plugin: Path = DICOMWEB_PLUGIN) -> None:
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.start_timeout = start_timeout
        self.binary = binary
        self.plugin = plugin
        self.user = PACS_USER
        self.password = secrets.token_urlsafe(18)
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._owns_work_dir = work_dir is None

    @property
    def url(self) -> str:
        if self.port is None:
            raise OrthancStartError(
                "OrthancServer.url read before start(); call start() or use it as a context manager")
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return self.url + DICOMWEB_ROOT

    @property
    def log_path(self) -> Path:
        return self._work_dir() / LOG_NAME

    def _work_dir(self) -> Path:
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="medrec-orthanc-"))
        return self.work_dir

    def config(self, port: int) -> dict[str, object]:
        """The Orthanc configuration for ``port`` (written to ``work_dir/orthanc.json`` by :meth:`start`)."""
        storage = str(self._work_dir() / "storage")
        return {
            "Name": "medrec-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "StorageCompression": False,
            "HttpPort": port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "DicomServerEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "SaveJobs": False,
            "Plugins": [str(self.plugin)],
            "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT + "/", "EnableWado": False},
        }

    def start(self) -> OrthancServer:
        """Start Orthanc and wait until ``GET /system`` answers.

        Returns:
            self, started.

        Raises:
            OrthancStartError: the binary or plugin is missing, Orthanc exited, or it did not
                answer within ``start_timeout`` seconds; the message ends with the log's last 30 lines.
        """
        missing = missing_pacs_files(self.binary, self.plugin)
        if missing:
            raise OrthancStartError(f"cannot start Orthanc: {', '.join(map(str, missing))} missing; "
                                    "run scripts/install-pacs-deps.sh (Debian packages orthanc, orthanc-dicomweb)")
        if self._process is not None:
            raise OrthancStartError(f"Orthanc already running on {self.url}; stop() it before starting again")
        for _attempt in range(_PORT_ATTEMPTS):
            self.port = free_loopback_port()
            self._launch(self.port)
            if self._wait_until_ready():
                return self
            self.stop()
            if _PORT_IN_USE not in self.log_tail():
                break
        raise OrthancStartError(f"Orthanc did not start on port {self.port} within {self.start_timeout:g} s "
                                f"(log {self.log_path}); last lines:\n{self.log_tail()}")

    def _launch(self, port: int) -> None:
        config_path = self._work_dir() / CONFIG_NAME
        config_path.write_text(json.dumps(self.config(port), indent=2))
        with self.log_path.open("wb") as log:  # one attempt per log: a retry starts it anew
            # a session of its own: Ctrl-C reaches pytest only, whose teardown then stops Orthanc in order
            self._process = subprocess.Popen([str(self.binary), str(config_path)], stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, cwd=self._work_dir(),
                                             start_new_session=True, preexec_fn=_die_with_parent)

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        with self.session() as http:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    return False
                try:
                    if http.get(self.url + "/system", timeout=2).status_code == 200:
                        return True
                except requests.ConnectionError:
                    pass
                time.sleep(0.05)
        return False

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of Orthanc's log (empty before the first start)."""
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate Orthanc (SIGTERM, then SIGKILL after 10 s); safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def remove(self) -> None:
        """Stop Orthanc and delete the work folder if this server created it."""
        self.stop()
        if self._owns_work_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def session(self) -> requests.Session:
        """A ``requests`` session that sends this server's basic-auth credentials."""
        return create_session_from_user_pass(self.user, self.password)

    def client(self, url: str | None = None) -> DICOMwebClient:
        """A DICOMweb client of ``url`` (default :attr:`dicomweb_url`; pass a proxy's) with the credentials."""
        return DICOMwebClient(url or self.dicomweb_url, session=self.session())

    def stow(self, files: Sequence[Path]) -> list[str]:
        """Store ``files`` with one STOW-RS request.

        Returns:
            The SOPInstanceUIDs Orthanc reports as stored, in its order.

        Raises:
            RuntimeError: Orthanc refused some instances (its FailedSOPSequence is in the message).
        """
        datasets = [pydicom.dcmread(path) for path in files]
        answer = self.client().store_instances(datasets)
        failed = answer.get("FailedSOPSequence")
        if failed:
            reasons = [(item.ReferencedSOPInstanceUID, item.get("FailureReason")) for item in failed]
            raise RuntimeError(f"STOW-RS to {self.dicomweb_url}: {len(failed)} of {len(datasets)} instances refused "
                               f"(uid, failure reason): {reasons}")
        return [item.ReferencedSOPInstanceUID for item in answer.get("ReferencedSOPSequence", [])]

    def clear(self) -> None:
        """Delete every patient (and so every study, series and instance) through the REST API."""
        with self.session() as http:
            patients = http.get(self.url + "/patients", timeout=30)
            patients.raise_for_status()
            for patient_id in patients.json():
                http.delete(f"{self.url}/patients/{patient_id}", timeout=30).raise_for_status()
