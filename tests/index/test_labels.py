"""Labels files: key auto-detection, conflicts, unmatched rows, unlabeled samples, errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medrec.errors import LabelsError
from medrec.index import index_folder

from .builders import uid, write_series


@pytest.fixture
def cohort(scans: Path) -> dict[str, dict[str, str]]:
    """Three patients, one study each (P3 has two studies), 6-slice CT series."""
    studies = {}
    patient_study_accession = [("P1", "s1", "A1"), ("P2", "s2", "A2"), ("P3", "s3", "A3"), ("P3", "s4", "A4")]
    for patient, study_name, accession in patient_study_accession:
        study = uid("labels", study_name)
        write_series(scans / patient / study_name, n=6, study_uid=study, patient_id=patient, accession=accession)
        studies[study_name] = {"patient_id": patient, "study_uid": study, "accession": accession}
    return studies


def _write(path: Path, frame: pd.DataFrame, sep: str = ",") -> Path:
    frame.to_csv(path, index=False, sep=sep)
    return path


def _run(scans: Path, tmp_path: Path, labels: Path, **kw: object):
    return index_folder(scans, tmp_path / "out", labels=labels, show_progress=False, **kw)


def test_match_by_study_uid_autodetected_from_tsv(scans: Path, tmp_path: Path, cohort: dict) -> None:
    frame = pd.DataFrame(
        [
            {"StudyInstanceUID": cohort["s1"]["study_uid"], "label": "1"},
            {"StudyInstanceUID": cohort["s2"]["study_uid"], "label": "0"},
            {"StudyInstanceUID": cohort["s4"]["study_uid"], "label": "1"},
            {"StudyInstanceUID": "1.2.3.4.999", "label": "0"},
        ]
    )
    result = _run(scans, tmp_path, _write(tmp_path / "labels.tsv", frame, sep="\t"))
    labels = dict(zip(result.manifest["study_uid"], result.manifest["label"], strict=True))
    assert labels == {cohort["s1"]["study_uid"]: "1", cohort["s2"]["study_uid"]: "0",
                      cohort["s3"]["study_uid"]: "", cohort["s4"]["study_uid"]: "1"}
    summary = result.summary["labels"]
    assert summary["match_on"] == "study_uid"
    assert (summary["samples_labelled"], summary["samples_unlabelled"], summary["rows_unmatched"]) == (3, 1, 1)
    unmatched = pd.read_csv(tmp_path / "out" / "labels_unmatched.csv", dtype=str)
    assert list(unmatched["StudyInstanceUID"]) == ["1.2.3.4.999"] and list(unmatched["line"]) == ["5"]
    # indexing again without labels leaves no stale list of unmatched label rows behind
    index_folder(scans, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out" / "labels_unmatched.csv").exists()


def test_match_by_patient_id_with_conflict(scans: Path, tmp_path: Path, cohort: dict) -> None:
    frame = pd.DataFrame(
        [{"PatientID": "P1", "label": "1"}, {"PatientID": "P2", "label": "0"}, {"PatientID": "P2", "label": "0"},
         {"PatientID": "P3", "label": "1"}, {"PatientID": "P3", "label": "0"}]
    )
    result = _run(scans, tmp_path, _write(tmp_path / "labels.csv", frame))
    assert result.summary["labels"]["match_on"] == "patient_id"
    assert dict(zip(result.manifest["patient_id"], result.manifest["label"], strict=True)) == {"P1": "1", "P2": "0"}
    conflicts = result.qc[result.qc["code"] == "label_conflict"]
    assert len(conflicts) == 12  # two P3 studies x 6 files
    assert "'0' (line 6)" in conflicts["reason"].iloc[0] and "'1' (line 5)" in conflicts["reason"].iloc[0]
    assert result.summary["labels"]["samples_conflicting"] == 2


def test_match_by_accession_and_explicit_match_on(scans: Path, tmp_path: Path, cohort: dict) -> None:
    frame = pd.DataFrame([{"accession_number": "A2", "PatientID": "P1", "diagnosis": "malignant"}])
    path = _write(tmp_path / "labels.csv", frame)
    result = _run(scans, tmp_path, path, label_column="diagnosis", match_on="accession")
    assert dict(zip(result.manifest["accession"], result.manifest["label"], strict=True))["A2"] == "malignant"
    assert (result.manifest["label"] != "").sum() == 1
    with pytest.raises(LabelsError, match="no study_uid column"):
        _run(scans, tmp_path, path, label_column="diagnosis", match_on="study_uid")


def test_match_by_relative_path(scans: Path, tmp_path: Path, cohort: dict) -> None:
    frame = pd.DataFrame([{"path": "P1/s1", "label": "1"}, {"path": str(scans / "P2" / "s2"), "label": "0"}])
    result = _run(scans, tmp_path, _write(tmp_path / "labels.csv", frame))
    assert result.summary["labels"]["match_on"] == "path"
    assert dict(zip(result.manifest["patient_id"], result.manifest["label"], strict=True)) == {
        "P1": "1", "P2": "0", "P3": ""}


def test_missing_label_column_names_file_and_columns(scans: Path, tmp_path: Path, cohort: dict) -> None:
    path = _write(tmp_path / "labels.csv", pd.DataFrame([{"patient_id": "P1", "outcome": "1"}]))
    with pytest.raises(LabelsError) as error:
        _run(scans, tmp_path, path)
    message = str(error.value)
    assert str(path) in message and "patient_id, outcome" in message and "--label-column" in message


def test_labels_file_without_key_column(scans: Path, tmp_path: Path, cohort: dict) -> None:
    path = _write(tmp_path / "labels.csv", pd.DataFrame([{"name": "x", "label": "1"}]))
    with pytest.raises(LabelsError, match="no column to match samples on"):
        _run(scans, tmp_path, path)


def test_other_labels_columns_become_manifest_columns_for_subgroups(scans: Path, tmp_path: Path, cohort: dict) -> None:
    """A labels file's extra columns (lesion_type, site, sex) reach the manifest; identifiers never come from it."""
    frame = pd.DataFrame(
        [
            {"patient_id": "P1", "label": "1", "lesion_type": "hyperdense", "site": "north", "sex": "F",
             "modality": "MR"},
            {"patient_id": "P2", "label": "0", "lesion_type": "none", "site": "south", "sex": "F", "modality": "MR"},
            # one row for both of P3's studies
            {"patient_id": "P3", "label": "1", "lesion_type": "hypodense", "site": "north", "sex": "", "modality": ""},
        ]
    )
    result = _run(scans, tmp_path, _write(tmp_path / "labels.csv", frame))
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str, keep_default_na=False)
    by_patient = {row["patient_id"]: row for row in manifest.to_dict("records")}
    assert by_patient["P1"]["lesion_type"] == "hyperdense" and by_patient["P1"]["site"] == "north"
    assert by_patient["P2"]["lesion_type"] == "none" and by_patient["P2"]["site"] == "south"
    assert set(manifest.loc[manifest["patient_id"] == "P3", "lesion_type"]) == {"hypodense"}
    # the scan's own header values win over the labels file (the DICOM series say sex and modality)
    assert set(manifest["modality"]) == set(result.manifest["modality"]) == {"CT"}
    assert set(manifest.loc[manifest["patient_id"] == "P3", "site"]) == {"north"}


def test_conflicting_attribute_rows_give_no_value(scans: Path, tmp_path: Path, cohort: dict) -> None:
    frame = pd.DataFrame(
        [
            {"study_uid": cohort["s3"]["study_uid"], "label": "1", "site": "north"},
            {"study_uid": cohort["s3"]["study_uid"], "label": "1", "site": "south"},
            {"study_uid": cohort["s1"]["study_uid"], "label": "0", "site": "east"},
        ]
    )
    _run(scans, tmp_path, _write(tmp_path / "labels.csv", frame))
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str, keep_default_na=False)
    sites = dict(zip(manifest["study_uid"], manifest["site"], strict=True))
    assert sites[cohort["s3"]["study_uid"]] == "" and sites[cohort["s1"]["study_uid"]] == "east"
