"""The PACS fixtures themselves: Orthanc stores, lists and serves what it is sent; each proxy fault does what it
says."""

from __future__ import annotations

import time
import warnings
from collections import Counter
from pathlib import Path

import pydicom
import pytest
import requests

from medrec.synth import SynthCohort, generate_cohort

from .orthanc import OrthancServer
from .proxy import Fault, FaultProxy

SERIES_ACCEPT = {"Accept": 'multipart/related; type="application/dicom"', "Accept-Encoding": "identity"}
NUMBER_OF_SERIES_RELATED_INSTANCES = "00201209"
RETRIEVE_URL = "00081190"


@pytest.fixture(scope="module")
def ct_scans(tmp_path_factory: pytest.TempPathFactory) -> SynthCohort:
    """Two CT studies of 18 slices of 32 x 32 (36 files)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return generate_cohort(tmp_path_factory.mktemp("pacs") / "scans", kind="ct-lesion", patients=2, fmt="dicom",
                               seed=1, image_size=32, slice_thickness=10.0, follow_up_fraction=0.0)


@pytest.fixture
def stored(empty_orthanc: OrthancServer, ct_scans: SynthCohort) -> list[Path]:
    """The files of ``ct_scans``, STOWed into an empty Orthanc."""
    files = sorted(ct_scans.out_dir.rglob("*.dcm"))
    empty_orthanc.stow(files)
    return files


def series_url(base: str, dataset: pydicom.Dataset) -> str:
    return f"{base}/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"


def instance_url(base: str, dataset: pydicom.Dataset) -> str:
    return f"{series_url(base, dataset)}/instances/{dataset.SOPInstanceUID}"


def test_stow_then_qido_lists_exactly_the_series_of_the_files(orthanc: OrthancServer, stored: list[Path]) -> None:
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in stored]
    expected = Counter((ds.StudyInstanceUID, ds.SeriesInstanceUID) for ds in headers)

    listed = orthanc.client().search_for_series()

    found = {(series["0020000D"]["Value"][0], series["0020000E"]["Value"][0]):
             int(series[NUMBER_OF_SERIES_RELATED_INSTANCES]["Value"][0]) for series in listed}
    assert found == dict(expected)


def test_wado_returns_the_source_pixels(orthanc: OrthancServer, stored: list[Path]) -> None:
    source = pydicom.dcmread(stored[5])

    retrieved = orthanc.client().retrieve_instance(source.StudyInstanceUID, source.SeriesInstanceUID,
                                                   source.SOPInstanceUID)

    assert retrieved.SOPInstanceUID == source.SOPInstanceUID
    assert retrieved.PixelData == source.PixelData


def test_clear_empties_the_pacs(orthanc: OrthancServer, stored: list[Path]) -> None:
    orthanc.clear()

    assert orthanc.client().search_for_studies() == []


@pytest.mark.parametrize("auth", [None, ("medrec", "wrong password")], ids=["no credentials", "wrong password"])
def test_orthanc_refuses_requests_without_the_session_credentials(orthanc: OrthancServer,
                                                                  auth: tuple[str, str] | None) -> None:
    assert requests.get(orthanc.dicomweb_url + "/studies", auth=auth, timeout=10).status_code == 401


def test_proxy_without_faults_passes_through(orthanc: OrthancServer, stored: list[Path],
                                             pacs_proxy: FaultProxy) -> None:
    direct = orthanc.client().search_for_series()

    proxied = orthanc.client(pacs_proxy.dicomweb_url).search_for_series()

    assert [series["0020000E"] for series in proxied] == [series["0020000E"] for series in direct]
    assert [request.fault for request in pacs_proxy.seen] == [None]
    # the client's Host header reaches Orthanc, which builds RetrieveURLs from it: they point at the
    # proxy (dicomweb_client 0.61 sends Host without the port, so its RetrieveURLs lack one: never follow them)
    listed = orthanc.session().get(pacs_proxy.dicomweb_url + "/series", timeout=10).json()
    assert all(series[RETRIEVE_URL]["Value"][0].startswith(pacs_proxy.dicomweb_url + "/studies/") for series in listed)


@pytest.mark.parametrize("status", [401, 403, 503])
def test_status_fault_answers_that_status_until_cleared(orthanc: OrthancServer, pacs_proxy: FaultProxy,
                                                        status: int) -> None:
    http = orthanc.session()
    pacs_proxy.faults = f"status:{status}"

    assert http.get(pacs_proxy.dicomweb_url + "/studies", timeout=10).status_code == status
    assert http.post(pacs_proxy.dicomweb_url + "/studies", data=b"", timeout=10).status_code == status

    pacs_proxy.faults = None
    assert http.get(pacs_proxy.dicomweb_url + "/studies", timeout=10).status_code == 200


def test_truncate_wado_cuts_retrievals_in_half_without_a_length(orthanc: OrthancServer, stored: list[Path],
                                                                pacs_proxy: FaultProxy) -> None:
    http = orthanc.session()
    source = pydicom.dcmread(stored[0], stop_before_pixels=True)
    pacs_proxy.faults = "truncate_wado"

    for url in (instance_url, series_url):
        direct = http.get(url(orthanc.dicomweb_url, source), headers=SERIES_ACCEPT, timeout=10)
        cut = http.get(url(pacs_proxy.dicomweb_url, source), headers=SERIES_ACCEPT, timeout=10)

        seen = pacs_proxy.seen[-1]
        assert (cut.status_code, seen.fault) == (200, "truncate_wado")
        assert "Content-Length" not in cut.headers
        assert len(cut.content) == seen.sent_bytes < len(direct.content)
        # Orthanc gives a length for one instance and streams a series until it closes
        assert seen.upstream_length == (len(direct.content) if url is instance_url else None)
        boundary = cut.headers["Content-Type"].split("boundary=")[1].strip('"').encode()
        assert cut.content.startswith(b"--" + boundary) and b"--" + boundary + b"--" not in cut.content

    metadata = http.get(series_url(pacs_proxy.dicomweb_url, source) + "/metadata", timeout=10)
    assert (metadata.status_code, pacs_proxy.seen[-1].fault) == (200, None)
    assert len(metadata.json()) == sum(1 for path in stored if pydicom.dcmread(
        path, stop_before_pixels=True).SeriesInstanceUID == source.SeriesInstanceUID)


def test_slow_fault_delays_the_answer(orthanc: OrthancServer, pacs_proxy: FaultProxy) -> None:
    http = orthanc.session()
    pacs_proxy.faults = "slow:0.4"

    started = time.monotonic()
    answer = http.get(pacs_proxy.dicomweb_url + "/studies", timeout=10)

    assert answer.status_code == 200
    assert time.monotonic() - started >= 0.4


def test_vanish_series_hides_one_series_from_wado_only(orthanc: OrthancServer, stored: list[Path],
                                                       pacs_proxy: FaultProxy) -> None:
    http = orthanc.session()
    by_series = {ds.SeriesInstanceUID: ds for ds in (pydicom.dcmread(path, stop_before_pixels=True) for path in stored)}
    gone, kept = (by_series[uid] for uid in sorted(by_series))
    pacs_proxy.faults = f"vanish_series:{gone.SeriesInstanceUID}"

    assert http.get(series_url(pacs_proxy.dicomweb_url, gone), headers=SERIES_ACCEPT, timeout=10).status_code == 404
    assert http.get(instance_url(pacs_proxy.dicomweb_url, gone), headers=SERIES_ACCEPT, timeout=10).status_code == 404
    assert http.get(series_url(pacs_proxy.dicomweb_url, gone) + "/metadata", timeout=10).status_code == 404
    assert http.get(series_url(pacs_proxy.dicomweb_url, kept), headers=SERIES_ACCEPT, timeout=10).status_code == 200

    listed = orthanc.client(pacs_proxy.dicomweb_url).search_for_series()
    assert gone.SeriesInstanceUID in {series["0020000E"]["Value"][0] for series in listed}
    instances = http.get(series_url(pacs_proxy.dicomweb_url, gone) + "/instances", timeout=10)
    assert instances.status_code == 200 and len(instances.json()) > 0


@pytest.mark.parametrize(("spec", "message"), [
    ("truncate_wad", "did you mean 'truncate_wado'"),
    ("status:200", "4xx or 5xx"),
    ("slow:soon", "got seconds 'soon'"),
    ("vanish_series", "got no series UID"),
])
def test_fault_specs_are_checked_when_set(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fault.parse(spec)
