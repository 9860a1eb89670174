"""A PACS that misbehaves: each fault is a one-line error or a qc row; the batch goes on and nothing scored is lost."""

from __future__ import annotations

import socket
import warnings

import pandas as pd
import pydicom
import pytest


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory) -> dict:
    """Three small CT studies as DICOM files."""
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("pacs_faults")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate_cohort(root / "scans", kind="ct-lesion", patients=3, fmt="dicom", seed=4, image_size=32,
                        slice_thickness=10.0, follow_up_fraction=0.0)
    files = sorted((root / "scans").rglob("*.dcm"))
    series: dict[str, list] = {}
    for path in files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        series.setdefault(header.SeriesInstanceUID, []).append(path)
    return {"root": root, "files": files, "series": series}


@pytest.fixture
def loaded(empty_orthanc, small_ct, monkeypatch):
    """The small cohort in an empty PACS, its credentials in the environment."""
    empty_orthanc.stow(small_ct["files"])
    monkeypatch.delenv("MEDREC_DICOMWEB_TOKEN", raising=False)
    monkeypatch.setenv("MEDREC_DICOMWEB_USER", empty_orthanc.user)
    monkeypatch.setenv("MEDREC_DICOMWEB_PASSWORD", empty_orthanc.password)
    monkeypatch.setenv("MEDREC_DICOMWEB_TIMEOUT", "5")
    return empty_orthanc


def _one_error_line(err: str) -> str:
    """The one ``error:`` line (progress lines may precede it); no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _qc(out) -> pd.DataFrame:
    return pd.read_csv(out / "qc.csv", dtype=str, keep_default_na=False)


def test_a_pacs_that_is_down_is_one_line_naming_it(medrec_cli, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = medrec_cli("index", f"dicomweb:http://127.0.0.1:{port}/dicom-web", "-o", tmp_path / "idx")
    assert code != 0
    assert _one_error_line(err) == (f"error: http://127.0.0.1:{port}/dicom-web: cannot reach the server "
                                    "(Connection refused)")


@pytest.mark.parametrize(("status", "words"), [(401, "refused the credentials (HTTP 401)"),
                                                (403, "no access to this service (HTTP 403)")])
def test_refused_credentials_are_one_line(loaded, pacs_proxy, medrec_cli, tmp_path, status, words):
    pacs_proxy.faults = f"status:{status}"
    code, _, err = medrec_cli("index", f"dicomweb:{pacs_proxy.dicomweb_url}", "-o", tmp_path / "idx")
    assert code != 0 and words in _one_error_line(err)


def test_wrong_password_reaches_orthanc_as_401(loaded, medrec_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDREC_DICOMWEB_PASSWORD", "Xq9-not-it")
    code, _, err = medrec_cli("index", f"dicomweb:{loaded.dicomweb_url}", "-o", tmp_path / "idx")
    assert code != 0 and "HTTP 401" in _one_error_line(err) and "Xq9-not-it" not in err


def test_a_series_that_vanishes_between_qido_and_wado_is_a_qc_row(loaded, pacs_proxy, small_ct, medrec_cli,
                                                                    tmp_path):
    gone = sorted(small_ct["series"])[0]
    pacs_proxy.faults = f"vanish_series:{gone}"
    code, _, err = medrec_cli("index", f"dicomweb:{pacs_proxy.dicomweb_url}", "-o", tmp_path / "idx")
    assert code == 0, err
    qc = _qc(tmp_path / "idx")
    row = qc[qc["code"] == "dicomweb_series_gone"]
    assert list(row["series_uid"]) == [gone] and row["path"].iloc[0].endswith(f"/series/{gone}")
    manifest = pd.read_csv(tmp_path / "idx" / "manifest.csv", dtype=str)
    assert gone not in set(manifest["series_uid"]) and len(manifest) >= 2  # the other studies went on

    # the next run fetches only what is missing: the series that is back now
    pacs_proxy.faults = None
    code, _, err = medrec_cli("index", f"dicomweb:{pacs_proxy.dicomweb_url}", "-o", tmp_path / "idx")
    assert code == 0, err
    wado = [r for r in pacs_proxy.seen if "/series/" in r.path and r.method == "GET"
            and not r.path.endswith(("/series", "/metadata"))]
    assert {r.path.split("/series/")[1].split("/")[0] for r in wado[-1:]} == {gone}
    assert gone in set(pd.read_csv(tmp_path / "idx" / "manifest.csv", dtype=str)["series_uid"])
    assert "dicomweb_series_gone" not in set(_qc(tmp_path / "idx")["code"])


def test_a_truncated_answer_is_a_qc_row_and_nothing_half_read_is_kept(loaded, pacs_proxy, medrec_cli, tmp_path):
    pacs_proxy.faults = "truncate_wado"
    code, _, err = medrec_cli("index", f"dicomweb:{pacs_proxy.dicomweb_url}", "-o", tmp_path / "idx")
    assert code != 0
    line = _one_error_line(err)
    assert "no series could be fetched" in line and ("cut short" in line or "could not be read" in line), line
    assert not list((tmp_path / "idx" / "dicomweb").rglob("*.dcm"))  # no partial series was cached


def test_a_slow_server_times_out_in_one_line(loaded, pacs_proxy, medrec_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDREC_DICOMWEB_TIMEOUT", "1")
    pacs_proxy.faults = "slow:3"
    code, _, err = medrec_cli("index", f"dicomweb:{pacs_proxy.dicomweb_url}", "-o", tmp_path / "idx")
    assert code != 0 and "no answer within 1 s (MEDREC_DICOMWEB_TIMEOUT)" in _one_error_line(err)


def test_an_instance_that_fails_qc_is_a_qc_row_like_a_folder(empty_orthanc, small_ct, monkeypatch, medrec_cli,
                                                               tmp_path):
    """A header-only image instance arrives whole from the PACS and gets the folder's qc code."""
    broken = pydicom.dcmread(small_ct["files"][0])
    del broken.PixelData
    broken.SeriesInstanceUID = pydicom.uid.generate_uid()
    broken.SOPInstanceUID = pydicom.uid.generate_uid()
    path = tmp_path / "header_only.dcm"
    broken.save_as(path, enforce_file_format=True)
    empty_orthanc.stow([*small_ct["files"], path])
    monkeypatch.setenv("MEDREC_DICOMWEB_USER", empty_orthanc.user)
    monkeypatch.setenv("MEDREC_DICOMWEB_PASSWORD", empty_orthanc.password)
    code, _, err = medrec_cli("index", f"dicomweb:{empty_orthanc.dicomweb_url}", "-o", tmp_path / "idx")
    assert code == 0, err
    qc = _qc(tmp_path / "idx")
    from_pacs = list(qc.loc[qc["series_uid"] == broken.SeriesInstanceUID, "code"])
    folder = tmp_path / "folder"
    folder.mkdir()
    path.rename(folder / path.name)
    code, _, err = medrec_cli("index", folder, "-o", tmp_path / "folder_idx")
    assert code != 0 or True  # a folder of one unusable file still writes its qc.csv
    from_folder = list(_qc(tmp_path / "folder_idx")["code"])
    assert from_pacs == from_folder == ["truncated"]  # header-only: 'file ends before the pixel data'
    assert len(pd.read_csv(tmp_path / "idx" / "manifest.csv", dtype=str)) == 3  # the good studies went on


def test_filters_select_studies_on_the_server(loaded, small_ct, medrec_cli, tmp_path):
    first = pydicom.dcmread(small_ct["files"][0], stop_before_pixels=True)
    code, _, err = medrec_cli("index", f"dicomweb:{loaded.dicomweb_url}", "-o", tmp_path / "idx",
                              "--patient-id", first.PatientID, "--modality", "CT")
    assert code == 0, err
    manifest = pd.read_csv(tmp_path / "idx" / "manifest.csv", dtype=str)
    assert set(manifest["patient_id"]) == {first.PatientID}
    code, _, err = medrec_cli("index", f"dicomweb:{loaded.dicomweb_url}", "-o", tmp_path / "none",
                              "--since", "2100-01-01")
    assert code != 0 and "no study matches since=2100-01-01" in _one_error_line(err)
