"""The hospital round trip against a real PACS (Orthanc on loopback): studies in over DICOMweb, results back as DICOM.

STOW a synthetic CT cohort into Orthanc, score it from there with a finding-map run, send SR + SEG
back, query them with QIDO, and check the scores equal scoring the same files from a folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings

import pandas as pd
import pydicom
import pytest

pytestmark = pytest.mark.slow  # trains the session's finding-map run when no earlier test did


@pytest.fixture(scope="module")
def ct_dicom(tmp_path_factory) -> dict:
    """Six CT studies as DICOM, like the annotated cohort the session's finding-map run learned from."""
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("pacs_ct")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = generate_cohort(root / "scans", kind="ct-lesion", patients=6, fmt="dicom", seed=11, image_size=64,
                                 slice_thickness=10.0, follow_up_fraction=0.0, lesion_diameter_mm=(30.0, 45.0),
                                 contrast=(70.0, 110.0), noise=0.6)
    files = sorted(p for p in (root / "scans").rglob("*.dcm"))
    return {"root": root, "cohort": cohort, "files": files}


@pytest.fixture
def pacs_env(monkeypatch, orthanc):
    """The PACS credentials in the environment, as a user would set them."""
    monkeypatch.delenv("MEDREC_DICOMWEB_TOKEN", raising=False)
    monkeypatch.setenv("MEDREC_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("MEDREC_DICOMWEB_PASSWORD", orthanc.password)
    monkeypatch.setenv("MEDREC_DICOMWEB_TIMEOUT", "30")
    return orthanc


def _series(orthanc, modality: str) -> list[dict]:
    return orthanc.client().search_for_series(search_filters={"Modality": modality})


def _uid(item: dict, tag: str) -> str:
    return item[tag]["Value"][0]


def test_pacs_round_trip_scores_equal_folder_scoring_and_results_come_back(
        empty_orthanc, pacs_env, ct_dicom, annotated_ct_run, medrec_cli, tmp_path):
    orthanc = empty_orthanc
    orthanc.stow(ct_dicom["files"])
    source = f"dicomweb:{orthanc.dicomweb_url}"
    out = tmp_path / "pacs.csv"

    code, _, err = medrec_cli("score", annotated_ct_run, source, "-o", out, "--workers", "0",
                              "--dicom-out", tmp_path / "dicom", "--store", source)
    assert code == 0, err
    code, _, err = medrec_cli("score", annotated_ct_run, ct_dicom["root"] / "scans", "-o", tmp_path / "folder.csv",
                              "--workers", "0")
    assert code == 0, err

    # the same rows and the same scores, to the last digit, as scoring the files from a folder
    pacs = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("sample_id")
    folder = pd.read_csv(tmp_path / "folder.csv", dtype=str, keep_default_na=False).set_index("sample_id")
    assert len(pacs) == 6 and sorted(pacs.index) == sorted(folder.index)
    compared = [c for c in folder.columns if c != "error"]
    pd.testing.assert_frame_equal(pacs.loc[folder.index, compared], folder[compared])
    assert (pacs["error"] == "").all()

    # one SR per study and one SEG per finding map went back to the PACS, referencing the scored series
    srs, segs = _series(orthanc, "SR"), _series(orthanc, "SEG")
    studies = set(pacs["study_uid"])
    assert {_uid(item, "0020000D") for item in srs} == studies and len(srs) == 6
    assert len(segs) == 6
    manifest = pd.read_csv(tmp_path / "pacs.index" / "manifest.csv", dtype=str, keep_default_na=False)
    scored_series = set(manifest["series_uid"])
    for path in sorted((tmp_path / "dicom").glob("SR_*.dcm")):
        sr = pydicom.dcmread(path)
        referenced = {s.SeriesInstanceUID for item in sr.CurrentRequestedProcedureEvidenceSequence
                      for s in item.ReferencedSeriesSequence}
        assert referenced and referenced <= scored_series
        row = pacs[pacs["study_uid"] == sr.StudyInstanceUID].iloc[0]
        assert row["study_uid"] == sr.StudyInstanceUID
        fetched = next((tmp_path / "pacs.dicomweb" / sr.StudyInstanceUID).rglob("*.dcm"))
        source_header = pydicom.dcmread(fetched, stop_before_pixels=True)
        assert sr.PatientID == source_header.PatientID and sr.PatientName == source_header.PatientName
    ledger = pd.read_csv(tmp_path / "dicom" / "dicom_out.csv", dtype=str, keep_default_na=False)
    assert set(ledger["study_uid"]) == studies and (ledger["stored"] == "yes").all() and (ledger["error"] == "").all()

    # a rerun fetches nothing (every study is scored), writes nothing new and keeps every row
    before = out.read_text()
    code, stdout, err = medrec_cli("score", annotated_ct_run, source, "-o", out, "--workers", "0",
                                   "--dicom-out", tmp_path / "dicom", "--store", source)
    assert code == 0, err
    assert out.read_text() == before
    sidecar = json.loads((tmp_path / "pacs.csv.json").read_text())
    assert sidecar["input"]["dicomweb"]["studies_skipped"] == 6 and sidecar["input"]["dicomweb"]["series_fetched"] == 0
    assert "studies unchanged" in stdout + err and len(_series(orthanc, "SR")) == 6

    # the report goes back too, as an Encapsulated PDF linked to the scored studies
    code, stdout, err = medrec_cli("report", out, "-o", tmp_path / "report", "--bootstrap", "50",
                                   "--labels", ct_dicom["cohort"].labels_csv,
                                   "--dicom-out", tmp_path / "dicom", "--store", source)
    assert code == 0, err
    docs = _series(orthanc, "DOC")
    assert len(docs) == 1
    pdf = pydicom.dcmread(next((tmp_path / "dicom").glob("DOC_*.dcm")))
    linked = {item.ReferencedSOPInstanceUID for item in pdf.SourceInstanceSequence}
    assert len(linked) == 6


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (Debian package dicom3tools) is not installed; scripts/install-pacs-deps.sh")
def test_every_object_the_round_trip_writes_passes_dciodvfy(tmp_path, ct_dicom, annotated_ct_run, medrec_cli):
    """SR, SEG and the report's Encapsulated PDF, as the pipeline writes them, validate without errors."""
    out = tmp_path / "folder.csv"
    code, _, err = medrec_cli("score", annotated_ct_run, ct_dicom["root"] / "scans", "-o", out, "--workers", "0",
                              "--dicom-out", tmp_path / "dicom")
    assert code == 0, err
    code, _, err = medrec_cli("report", out, "-o", tmp_path / "report", "--bootstrap", "50",
                              "--labels", ct_dicom["cohort"].labels_csv, "--dicom-out", tmp_path / "dicom")
    assert code == 0, err
    written = sorted((tmp_path / "dicom").glob("*.dcm"))
    kinds = {path.name.split("_")[0] for path in written}
    assert kinds == {"SR", "SEG", "DOC"}, kinds
    for path in written:
        check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def test_a_pacs_failing_mid_batch_loses_nothing_already_scored(
        empty_orthanc, pacs_env, pacs_proxy, ct_dicom, annotated_ct_run, medrec_cli, tmp_path):
    """Scored rows survive a PACS that then refuses (401) or loses a series; the next good run completes the batch."""
    orthanc = empty_orthanc
    studies = sorted({pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in ct_dicom["files"]})
    first = [p for p in ct_dicom["files"] if pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID
             in studies[:3]]
    orthanc.stow(first)
    source = f"dicomweb:{pacs_proxy.dicomweb_url}"
    out = tmp_path / "pacs.csv"
    code, _, err = medrec_cli("score", annotated_ct_run, source, "-o", out, "--workers", "0")
    assert code == 0, err
    scored = out.read_text()
    assert len(pd.read_csv(out)) == 3

    orthanc.stow([p for p in ct_dicom["files"] if p not in first])  # three more studies arrive
    pacs_proxy.faults = "status:401"
    code, _, err = medrec_cli("score", annotated_ct_run, source, "-o", out, "--workers", "0")
    assert code != 0 and "HTTP 401" in err
    assert out.read_text() == scored  # nothing lost, nothing half-written

    pacs_proxy.faults = None
    before = len(pacs_proxy.seen)
    code, _, err = medrec_cli("score", annotated_ct_run, source, "-o", out, "--workers", "0")
    assert code == 0, err
    done = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(done) == 6 and (done["error"] == "").all()
    assert out.read_text().startswith(scored)  # the first rows kept as they were, the new ones appended
    fetched = [r.path for r in pacs_proxy.seen[before:] if r.method == "GET" and "/series/" in r.path
               and not r.path.endswith(("/series", "/metadata"))]
    assert fetched and all(any(study in path for study in studies[3:]) for path in fetched)  # no scored study again
