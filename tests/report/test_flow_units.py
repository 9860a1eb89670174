"""The participant flow in STARD units: files -> readable files -> series -> passing QC -> selected -> studies ->
patients -> split -> scored -> analysed, each count in its own unit, checked against what the index itself counted
on a synthetic DICOM cohort with the quirks of real exports (localizers, two series in a study, stray files)."""

from __future__ import annotations

import html as html_module
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pypdfium2 as pdfium
import pytest

from medrec.report.build import write_report
from medrec.report.cohort_flow import index_flow
from medrec.report.document import flow_outcomes, flow_stages

THRESHOLD = 0.5


@dataclass
class FlowCase:
    summary: dict
    qc: pd.DataFrame
    splits: pd.DataFrame
    predictions: pd.DataFrame
    report: dict
    out: Path


def _pdf_pages(path: Path) -> list[str]:
    pdf = pdfium.PdfDocument(str(path))
    try:
        return [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
    finally:
        pdf.close()


@pytest.fixture(scope="module")
def flow_case(tmp_path_factory: pytest.TempPathFactory) -> FlowCase:
    """A small synthetic DICOM cohort indexed for real; the run's test split scored with made-up scores."""
    from medrec.index import index_folder
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("flow_units")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = generate_cohort(root / "scans", kind="ct-lesion", patients=12, fmt="dicom", seed=3, quirks=True,
                                 image_size=32, slice_thickness=10.0, follow_up_fraction=0.5)
        indexed = index_folder(root / "scans", root / "index", labels=cohort.labels_csv, show_progress=False)
    manifest = pd.read_csv(root / "index" / "manifest.csv", dtype=str, keep_default_na=False)
    run = root / "run"
    run.mkdir()
    for name in ("manifest.csv", "qc.csv"):
        shutil.copy(root / "index" / name, run / name)
    patients = sorted(manifest["patient_id"].unique())
    split_of = {patient: ("train", "val", "test")[i % 3] for i, patient in enumerate(patients)}
    splits = manifest[["sample_id", "patient_id"]].assign(split=manifest["patient_id"].map(split_of))
    splits.to_csv(run / "splits.csv", index=False)
    (run / "model.json").write_text(json.dumps({
        "format": "medrec-run-1", "architecture": {"name": "resnet10", "spatial_dims": 3, "in_channels": 1,
                                                   "num_classes": 2},
        "weights": {"file": "model.safetensors"}, "plan": {}, "classes": ["0", "1"], "positive_class": "1",
        "threshold": {"value": THRESHOLD, "method": "youden", "chosen_on": "validation"}}))
    test = manifest[splits["split"] == "test"]
    rng = np.random.default_rng(0)
    scores = np.clip(np.where(test["label"] == "1", 0.7, 0.3) + rng.normal(0, 0.25, len(test)), 0, 1).round(4)
    predictions = test[["sample_id", "patient_id", "study_uid", "label"]].assign(score=scores, prediction="", error="")
    predictions.to_csv(root / "predictions.csv", index=False)
    out = root / "report"
    report = write_report(root / "predictions.csv", out, run_dir=run, n_boot=50)
    qc = pd.read_csv(run / "qc.csv", dtype=str, keep_default_na=False)
    return FlowCase(indexed.summary, qc, splits, predictions, report, out)


def test_index_counts_match_what_the_index_counted(flow_case: FlowCase) -> None:
    index = flow_case.report["cohort"]["index"]
    summary = flow_case.summary
    assert index["n_files"] == summary["files_seen"]
    assert index["n_readable"] == summary["dicom_readable"] + summary["nifti_readable"]
    assert index["n_files_dicom"] == summary["dicom_readable"]
    assert index["n_series"] == summary["series_found"]
    assert index["n_manifest"] == summary["samples_kept"]
    assert index["n_studies"] == summary["studies"] and index["n_patients"] == summary["patients"]
    # every file the index saw is either behind a sample or in qc.csv, and each file-level row is one file
    assert sum(row["n_files"] for row in index["file_exclusions"]) == summary["excluded_by_reason"].get("not_dicom", 0)


def test_series_not_chosen_are_not_quality_control_failures(flow_case: FlowCase) -> None:
    index = flow_case.report["cohort"]["index"]
    qc = flow_case.qc
    localizers = qc.loc[qc["code"] == "localizer", "series_uid"].nunique()
    not_chosen = qc.loc[qc["code"] == "not_best_series", "series_uid"].nunique()
    assert localizers and not_chosen  # the quirks put both in the cohort
    assert index["series_exclusions"] == [{"reason": "localizer / scout series", "n_series": localizers,
                                           "n_files": int((qc["code"] == "localizer").sum())}]
    assert index["n_series_passing"] == index["n_series"] - localizers
    assert [row["n_series"] for row in index["not_selected"]] == [not_chosen]
    # one series per study: the selected series are the studies
    assert index["n_selected"] == index["n_series_passing"] - not_chosen == index["n_studies"]
    assert index["n_selected_per_study"] == 1


def test_not_scored_manifest_rows_are_counted_by_their_split(flow_case: FlowCase) -> None:
    cohort = flow_case.report["cohort"]
    counts = flow_case.splits["split"].value_counts()
    assert cohort["not_scored_by_split"] == {"train": int(counts["train"]), "val": int(counts["val"])}
    assert cohort["n_not_scored"] == counts["train"] + counts["val"]
    assert cohort["level"] == "series"


def test_every_stage_has_its_own_unit(flow_case: FlowCase) -> None:
    stages = {stage.label: stage for stage in flow_stages(flow_case.report)}
    index = flow_case.report["cohort"]["index"]
    assert (stages["Files found by indexing"].n, stages["Files found by indexing"].unit) == (index["n_files"], "files")
    assert stages["Series (DICOM series and NIfTI volumes)"].unit == "series"
    assert (stages["Studies"].n, stages["Studies"].unit) == (index["n_studies"], "studies")
    assert (stages["Patients"].n, stages["Patients"].unit) == (index["n_patients"], "patients")
    assert stages["Analysed"].n == len(flow_case.predictions)
    not_chosen = stages["Series eligible and passing quality control"].exclusions
    assert [(reason.startswith("not chosen (not a QC failure)"), unit) for reason, _, unit, _ in not_chosen] == \
        [(True, "series")]


def test_index_test_results_by_reference_standard(flow_case: FlowCase) -> None:
    confusion = flow_case.report["confusion_matrix"]
    positive, negative = flow_outcomes(flow_case.report)
    labels = flow_case.predictions["label"]
    called = flow_case.predictions["score"] >= THRESHOLD
    assert positive[1] == int((labels == "1").sum()) == confusion["tp"] + confusion["fn"]
    assert negative[1] == int((labels == "0").sum()) == confusion["fp"] + confusion["tn"]
    assert f"positive {int(((labels == '1') & called).sum())} (TP)" in positive[3]
    assert f"negative {int(((labels == '0') & ~called).sum())} (TN)" in negative[3]


def test_page_one_counts_files_series_studies_and_patients_in_their_units(flow_case: FlowCase) -> None:
    index = flow_case.report["cohort"]["index"]
    first_page = " ".join(_pdf_pages(flow_case.out / "report.pdf")[0].split())
    for count, unit in ((index["n_files"], "files"), (index["n_series"], "series"), (index["n_studies"], "studies"),
                        (index["n_patients"], "patients")):
        assert f"{count:,} {unit}" in first_page
    assert "Files / series found by indexing" not in first_page  # the old, mixed-unit row
    text = html_module.unescape((flow_case.out / "report.html").read_text(encoding="utf-8"))
    assert "Participant flow (STARD 2015)" in text
    assert "figures/flow.png" in flow_case.report["figures"]
    assert (flow_case.out / "figures" / "flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'alt="STARD flow diagram' in text


def test_nifti_volumes_of_one_study_are_separate_series() -> None:
    """NIfTI 'series' UIDs are their study's placeholder: a volume is counted by its file."""
    manifest = pd.DataFrame({"sample_id": ["a"], "patient_id": ["p"], "study_uid": ["s"], "series_uid": ["s"],
                             "format": ["nifti"], "path": ["/d/p/t1.nii.gz"], "files": [""]})
    qc = pd.DataFrame({"path": ["/d/p/t2.nii.gz", "/d/p/bad.nii", "/d/notes.txt"], "series_uid": ["s", "", ""],
                       "reason": ["not selected", "unreadable", "not DICOM"],
                       "code": ["not_best_series", "nifti_unreadable", "not_dicom"]})
    flow = index_flow(manifest, qc)
    assert (flow["n_files"], flow["n_readable"], flow["n_files_nifti"]) == (4, 2, 2)
    assert (flow["n_series"], flow["n_series_passing"], flow["n_selected"]) == (2, 2, 1)
    assert flow["not_selected"] == [{"reason": "another series of the same study was chosen", "n_series": 1,
                                     "n_files": 1}]
    assert {row["reason"]: row["n_files"] for row in flow["file_exclusions"]} == {
        "unreadable NIfTI": 1, "not a DICOM or NIfTI file": 1}


def test_manifest_without_file_lists_still_counts_series() -> None:
    manifest = pd.DataFrame({"sample_id": ["a", "b"], "patient_id": ["p", "q"], "study_uid": ["s", "t"],
                             "series_uid": ["1.2", "1.3"], "format": ["dicom", "dicom"], "path": ["/x", "/y"],
                             "files": ["", ""]})
    qc = pd.DataFrame({"path": ["/x/a", "/z/b"], "series_uid": ["", "1.9"], "reason": ["r", "localizer"],
                       "code": ["not_dicom", "localizer"]})
    flow = index_flow(manifest, qc)
    assert flow["n_files"] is None and flow["n_series"] == 3 and flow["n_series_passing"] == 2
    stages = [stage.label for stage in flow_stages({"cohort": {"index": flow, "n_manifest": 2}, "n_samples": 2})]
    assert stages[0] == "Files left out by indexing"


def test_each_series_leaves_once_at_its_stage() -> None:
    """A duplicate file of a kept series is a file exclusion; a series with conflicting labels leaves after
    selection; each excluded series is counted once however many files it has."""
    manifest = pd.DataFrame({"sample_id": ["a", "b"], "patient_id": ["p", "q"], "study_uid": ["s1", "s2"],
                             "series_uid": ["1.1", "1.2"], "format": ["dicom", "dicom"], "path": ["/a", "/b"],
                             "files": [json.dumps(["/a/1", "/a/2"]), json.dumps(["/b/1"])]})
    rows = [("/a/3", "1.1", "duplicate_sop"), ("/c/1", "1.3", "label_conflict"), ("/c/2", "1.3", "label_conflict"),
            ("/d/1", "1.4", "localizer"), ("/e/1", "1.5", "not_best_series"), ("/e/2", "1.5", "not_best_series")]
    qc = pd.DataFrame(rows, columns=["path", "series_uid", "code"]).assign(reason="r")
    flow = index_flow(manifest, qc)
    assert (flow["n_files"], flow["n_readable"]) == (9, 8)
    assert flow["file_exclusions"] == [{"reason": "duplicate SOP instance", "n_files": 1}]
    assert (flow["n_series"], flow["n_series_passing"], flow["n_selected"], flow["n_manifest"]) == (5, 4, 3, 2)
    assert flow["after_selection"] == [{"reason": "conflicting labels", "n_series": 1, "n_files": 2}]
    labels = [stage.label for stage in flow_stages({"cohort": {"index": flow, "n_manifest": 2}, "n_samples": 2})]
    assert labels[labels.index("Selected series (one per study)") + 1] == "Series in the manifest"
