"""DICOMweb INPUT without a server: the address, the filters, credentials, and error wording."""

from __future__ import annotations

from datetime import date

import pytest
import requests

from medrec.errors import ConfigError
from medrec.index.dicomweb import (
    DicomwebFilters,
    describe_url,
    explain_http_error,
    is_uid,
    open_session,
    parse_date,
    service_url,
    timeout_s,
)


def test_service_url_strips_the_scheme_and_refuses_credentials_in_the_address():
    assert service_url("dicomweb:https://pacs.example.org/dicom-web/") == "https://pacs.example.org/dicom-web"
    with pytest.raises(ConfigError, match="credentials do not belong on the command line") as caught:
        service_url("dicomweb:https://alice:s3cret@pacs.example.org/dicom-web")
    assert "s3cret" not in str(caught.value) and "alice" not in str(caught.value)
    for bad in ("dicomweb:ftp://pacs/dicom-web", "dicomweb:pacs/dicom-web", "dicomweb:https:///dicom-web"):
        with pytest.raises(ConfigError, match="expected dicomweb:http"):
            service_url(bad)


def test_describe_url_keeps_host_port_and_path_only():
    assert describe_url("https://pacs:8443/dicom-web?token=abc") == "https://pacs:8443/dicom-web"


def test_filters_make_one_study_query_per_combination_with_dicom_date_ranges():
    filters = DicomwebFilters(patient_id=("P1", "P2"), modality=("CT",), since=date(2026, 1, 2))
    assert filters.study_queries() == [
        {"PatientID": "P1", "ModalitiesInStudy": "CT", "StudyDate": "20260102-"},
        {"PatientID": "P2", "ModalitiesInStudy": "CT", "StudyDate": "20260102-"},
    ]
    assert DicomwebFilters(until=date(2026, 3, 4)).study_queries() == [{"StudyDate": "-20260304"}]
    both = DicomwebFilters(since=date(2026, 1, 1), until=date(2026, 1, 31))
    assert both.study_queries() == [{"StudyDate": "20260101-20260131"}]
    assert DicomwebFilters().study_queries() == [{}]
    with pytest.raises(ConfigError, match="after"):
        DicomwebFilters(since=date(2026, 2, 1), until=date(2026, 1, 1))


def test_parse_date_takes_iso_and_dicom_forms():
    assert parse_date("2026-11-30", "--since") == parse_date("20261130", "--since") == date(2026, 11, 30)
    assert parse_date(None, "--since") is None
    with pytest.raises(ConfigError, match="--until '30/11/2026'"):
        parse_date("30/11/2026", "--until")


def test_credentials_come_from_the_environment(monkeypatch):
    for name in ("MEDREC_DICOMWEB_TOKEN", "MEDREC_DICOMWEB_USER", "MEDREC_DICOMWEB_PASSWORD",
                 "MEDREC_DICOMWEB_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    plain = open_session("https://pacs/dicom-web")
    assert plain.auth is None and "Authorization" not in plain.headers and plain.verify is True
    monkeypatch.setenv("MEDREC_DICOMWEB_USER", "alice")
    monkeypatch.setenv("MEDREC_DICOMWEB_PASSWORD", "pw")
    assert open_session("https://pacs/dicom-web").auth == ("alice", "pw")
    monkeypatch.setenv("MEDREC_DICOMWEB_TOKEN", "tok")
    bearer = open_session("https://pacs/dicom-web")
    assert bearer.headers["Authorization"] == "Bearer tok" and bearer.auth is None
    monkeypatch.setenv("MEDREC_DICOMWEB_CA_BUNDLE", "/etc/hospital-ca.pem")
    assert open_session("https://pacs/dicom-web").verify == "/etc/hospital-ca.pem"


def test_netrc_supplies_basic_credentials_when_the_environment_has_none(monkeypatch, tmp_path):
    """With no MEDREC_DICOMWEB_* credentials, requests reads the host's netrc entry (checked on a prepared request)."""
    for name in ("MEDREC_DICOMWEB_TOKEN", "MEDREC_DICOMWEB_USER", "MEDREC_DICOMWEB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pacs.example.org login bob password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    session = open_session("https://pacs.example.org/dicom-web")
    request = session.prepare_request(requests.Request("GET", "https://pacs.example.org/dicom-web/studies"))
    import base64

    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"bob:hunter2").decode()


def test_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv("MEDREC_DICOMWEB_TIMEOUT", raising=False)
    assert timeout_s() == 60.0
    monkeypatch.setenv("MEDREC_DICOMWEB_TIMEOUT", "2.5")
    assert timeout_s() == 2.5
    monkeypatch.setenv("MEDREC_DICOMWEB_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="MEDREC_DICOMWEB_TIMEOUT='soon'"):
        timeout_s()


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response.reason = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 503: "Service Unavailable"}[status]
    return requests.HTTPError(response=response)


@pytest.mark.parametrize(("status", "words"), [
    (401, "refused the credentials (HTTP 401); set MEDREC_DICOMWEB_TOKEN"),
    (403, "no access to this service (HTTP 403)"),
    (404, "no DICOMweb service at this address (HTTP 404)"),
    (503, "answered HTTP 503 (Service Unavailable)"),
])
def test_http_errors_are_explained_in_one_line(status, words):
    text = explain_http_error("https://pacs:8443/dicom-web?x=1", _http_error(status))
    assert text.startswith("https://pacs:8443/dicom-web: ") and words in text and "\n" not in text


def test_connection_errors_name_the_server():
    text = explain_http_error("http://127.0.0.1:9/dicom-web", requests.ConnectionError("Connection refused"))
    assert text == "http://127.0.0.1:9/dicom-web: cannot reach the server (Connection refused)"
    assert "no answer within" in explain_http_error("http://h/dicom-web", requests.ReadTimeout("read timed out"))


def test_index_and_score_refuse_study_filters_for_a_folder(tmp_path, medrec_cli):
    code, _, err = medrec_cli("index", tmp_path, "-o", tmp_path / "idx", "--patient-id", "P1")
    assert code != 0 and "select studies of a dicomweb:URL INPUT" in err
    code, _, err = medrec_cli("score", tmp_path / "run", tmp_path, "-o", tmp_path / "p.csv", "--modality", "CT")
    assert code != 0 and "selects studies of a dicomweb:URL INPUT" in err


def test_only_valid_uids_name_cache_folders():
    assert is_uid("1.2.826.0.1.3680043.8.498.1") and is_uid("2.25.1234")
    for bad in ("..", "../../etc", "1.2/3", "1..2", ".1", "1.2.", "", "1" * 65, "1.2.abc"):
        assert not is_uid(bad), bad
