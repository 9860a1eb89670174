"""Tests of the rendered report: self-contained HTML, a printable PDF, the JSON contract, pseudonyms."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pypdfium2 as pdfium
import pytest

from medrec.errors import SecurityError
from medrec.report import figures
from medrec.report.case_pictures import draw_thumbnails
from medrec.report.document import fmt_metric, fmt_value, limitations, scrub_paths
from medrec.report.pseudonym import Pseudonymiser, check_no_identifiers, key_from_file

CONTRACT_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy", "balanced_accuracy", "auc",
                    "brier", "ece")


def _pdf_text(path) -> str:
    pdf = pdfium.PdfDocument(str(path))
    try:
        return "\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    finally:
        pdf.close()


@pytest.fixture(scope="module")
def html(cli_report) -> str:
    assert cli_report.exit_code == 0, cli_report.output
    return (cli_report.out / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def report(cli_report) -> dict:
    return json.loads((cli_report.out / "report.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------


def test_html_has_no_external_references(html: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//|ftp:|file:)""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:|//)", html, re.I)
    assert "@import" not in html
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    sources = re.findall(r"""<img[^>]*\ssrc=["']([^"']+)["']""", html)
    assert len(sources) >= 6
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    hrefs = re.findall(r"""href=["']([^"']+)["']""", html)
    assert all(h.startswith("#") for h in hrefs)


def test_html_shows_the_key_numbers(html: str, report: dict) -> None:
    sensitivity = report["metrics"]["sensitivity"]
    assert f"{100 * sensitivity['value']:.1f}%" in html
    assert f"{100 * sensitivity['ci95'][0]:.1f}" in html
    assert f"{report['metrics']['auc']['value']:.3f}" in html
    confusion = report["confusion_matrix"]
    assert f"<td class=\"num\">{confusion['tp']}</td>" in html
    assert "chosen on the validation split" in html
    assert "EXPLORATORY" not in html
    for section in ("Cohort and flow", "Diagnostic performance", "Subgroups", "Failure analysis", "Limitations",
                    "Provenance", "Methods"):
        assert section in html


def test_html_has_print_css(html: str) -> None:
    assert "@media print" in html
    assert "size: A4" in html


# ------------------------------------------------------------------------------------------------
# PDF
# ------------------------------------------------------------------------------------------------


def test_pdf_renders_to_a_nonblank_page(cli_report) -> None:
    pdf = pdfium.PdfDocument(str(cli_report.out / "report.pdf"))
    try:
        assert len(pdf) >= 2
        width, height = pdf[0].get_size()
        assert (round(width), round(height)) == (595, 842)  # A4 in points
        image = np.asarray(pdf[0].render(scale=1).to_pil().convert("L"))
    finally:
        pdf.close()
    assert abs(image.shape[0] - 842) <= 1 and abs(image.shape[1] - 595) <= 1
    ink = (image < 200).mean()
    assert 0.02 < ink < 0.6
    assert image.std() > 20


def test_pdf_dates_are_the_report_date(cli_report, report: dict) -> None:
    pdf = pdfium.PdfDocument(str(cli_report.out / "report.pdf"))
    try:
        metadata = pdf.get_metadata_dict()
    finally:
        pdf.close()
    day = report["provenance"]["report_date"].replace("-", "")
    assert metadata["CreationDate"].startswith(f"D:{day}000000")
    assert metadata["ModDate"] == metadata["CreationDate"]


def test_pdf_text_matches_the_report(cli_report, report: dict) -> None:
    text = _pdf_text(cli_report.out / "report.pdf")
    assert f"{100 * report['metrics']['sensitivity']['value']:.1f}%" in text
    assert "page 1 of" in text
    assert "Cohort and flow" in text


# ------------------------------------------------------------------------------------------------
# JSON
# ------------------------------------------------------------------------------------------------


def test_report_json_holds_the_design_contract(report: dict) -> None:
    for key in ("n_samples", "n_patients", "threshold", "threshold_source", "metrics", "confusion_matrix",
                "subgroups", "provenance", "limitations", "figures"):
        assert key in report
    for name in CONTRACT_METRICS:
        metric = report["metrics"][name]
        assert set(metric) >= {"value", "ci95", "method"}
        assert len(metric["ci95"]) == 2 and metric["method"]
        assert metric["ci95"][0] <= metric["value"] <= metric["ci95"][1]
    assert set(report["confusion_matrix"]) == {"tp", "fp", "tn", "fn"}
    assert report["threshold"] == pytest.approx(0.5)
    assert report["threshold_kind"] == "validation"
    assert "manufacturer" in report["subgroups"]
    provenance = report["provenance"]
    for library in ("medrec", "torch", "monai", "numpy", "pydicom", "scikit-learn"):
        assert library in provenance["library_versions"]
    assert provenance["model_name"] == "resnet10"
    assert provenance["training"]["train.epochs"] == "20"
    assert "data.manifest" not in provenance["training"]  # paths are left out


def test_report_json_counts_match_the_predictions(report: dict, report_inputs) -> None:
    frame = report_inputs.frame
    usable = frame[frame["error"] == ""]
    assert report["n_samples"] == len(usable)
    assert report["n_patients"] == usable["patient_id"].nunique()
    confusion = report["confusion_matrix"]
    predicted = usable["score"] >= 0.5
    positive = usable["label"] == "1"
    assert confusion["tp"] == int((predicted & positive).sum())
    assert confusion["fp"] == int((predicted & ~positive).sum())
    assert report["cohort"]["n_excluded_qc"] == 3
    assert report["cohort"]["qc_reasons"] == {"not a DICOM file": 2, "localizer series skipped": 1}
    assert [s["split"] for s in report["cohort"]["splits"]] == ["train", "val", "test"]


def test_limitations_are_driven_by_the_numbers(report: dict) -> None:
    text = " ".join(report["limitations"])
    assert "Fewer than 100 patients" in text
    assert "higher than the stated clinical prevalence 5.0%" in text
    assert "not scored (scoring error)" in text
    small = [g for groups in report["subgroups"].values() for g in groups if g["small"]]
    assert small and f"= {small[0]['group']} has n={small[0]['n']}" in text


def test_limitations_react_to_facts() -> None:
    facts = {"threshold_source": "EXPLORATORY: chosen on the test data (youden)", "n_patients": 500,
             "n_positive": 200, "n_negative": 300, "prevalence": 0.4, "metrics": {}, "subgroups": {},
             "excluded_reasons": {}}
    notes = limitations(facts)
    assert any("exploratory" in n for n in notes)
    assert not any("Fewer than 100" in n for n in notes)
    assert any("give --prevalence" in n for n in notes)


# ------------------------------------------------------------------------------------------------
# Pseudonymisation
# ------------------------------------------------------------------------------------------------


def test_no_raw_identifier_in_any_output(cli_report, html: str, report_inputs) -> None:
    texts = {
        "html": html,
        "json": (cli_report.out / "report.json").read_text(encoding="utf-8"),
        "pdf": _pdf_text(cli_report.out / "report.pdf"),
        "figure names": " ".join(p.name for p in (cli_report.out / "figures").iterdir()),
    }
    identifiers = [*report_inputs.patient_ids, *report_inputs.sample_ids,
                   *report_inputs.frame["study_uid"].tolist()]
    for name, text in texts.items():
        leaked = [i for i in identifiers if i in text]
        assert not leaked, f"{name} contains raw identifiers {leaked[:3]}"
        # Patient names in the folder names of qc.csv and of the error message never reach the report.
        assert "DOE^JOHN" not in text and "ROE^JANE" not in text
    assert re.search(r"\bP-[0-9a-f]{8}\b", html)
    assert re.search(r"\bS-[0-9a-f]{8}\b", texts["pdf"])


def test_pseudonyms_are_stable_and_keyed(report_inputs, tmp_path) -> None:
    key = key_from_file(report_inputs.predictions)
    first = Pseudonymiser(key).pseudonym("MRN123456", "patient_id")
    assert first == Pseudonymiser(key_from_file(report_inputs.predictions)).pseudonym("MRN123456", "patient_id")
    assert re.fullmatch(r"P-[0-9a-f]{8}", first)
    other = tmp_path / "other.csv"
    other.write_bytes(report_inputs.predictions.read_bytes() + b"\n")
    assert Pseudonymiser(key_from_file(other)).pseudonym("MRN123456", "patient_id") != first
    assert Pseudonymiser(key).pseudonym("MRN123456", "sample_id").startswith("S-")
    assert Pseudonymiser(key, enabled=False).pseudonym("MRN123456") == "MRN123456"
    # The key is not the file's plain SHA-256 (which the report prints).
    import hashlib

    assert key != hashlib.sha256(report_inputs.predictions.read_bytes()).digest()


def test_pseudonyms_are_lengthened_when_they_collide() -> None:
    class Short(Pseudonymiser):
        min_digits = 2  # 256 values: 100 ids collide for sure

    pseudonymiser = Short(b"key")
    ids = [f"MRN{i:05d}" for i in range(100)]
    pseudonymiser.reserve("patient_id", ids)
    shown = {pseudonymiser.pseudonym(i, "patient_id") for i in ids}
    assert len(shown) == 100
    assert pseudonymiser.digits["patient_id"] > 2


def test_pseudonymiser_frame_drops_identifying_columns() -> None:
    frame = pd.DataFrame({"sample_id": ["s1"], "patient_id": ["MRN1"], "path": ["/data/DOE^JOHN/x.nii"],
                          "manufacturer": ["GE"]})
    result = Pseudonymiser(b"k").frame(frame)
    assert "path" not in result.columns
    assert result.loc[0, "patient_id"].startswith("P-") and result.loc[0, "manufacturer"] == "GE"


def test_identifier_check_refuses_a_leak() -> None:
    with pytest.raises(SecurityError) as error:
        check_no_identifiers({"report.html": "<p>patient MRN700037</p>"}, {"MRN700037"})
    assert "MRN700037" not in str(error.value)
    check_no_identifiers({"report.html": "<p>patient P-1234abcd</p>"}, {"MRN700037"})


def test_scrub_paths_hides_folder_names() -> None:
    assert scrub_paths("/data/scans/DOE^JOHN/IM1.dcm: DicomError: truncated") == "<path>: DicomError: truncated"
    assert "SMITH" not in scrub_paths("C:\\scans\\SMITH\\a.dcm unreadable")


def test_keep_identifiers_writes_raw_ids(explore_report, report_inputs) -> None:
    assert explore_report.exit_code == 0, explore_report.output
    html = (explore_report.out / "report.html").read_text(encoding="utf-8")
    data = (explore_report.out / "report.json").read_text(encoding="utf-8")
    pdf_text = _pdf_text(explore_report.out / "report.pdf")
    flagged = json.loads(data)["flagged"]["false_positives"] + json.loads(data)["flagged"]["false_negatives"]
    assert flagged
    raw = flagged[0]["patient_id"]
    assert raw in report_inputs.patient_ids
    assert raw in html and raw in data and raw in pdf_text


# ------------------------------------------------------------------------------------------------
# Exploratory threshold, comparison, multi-class
# ------------------------------------------------------------------------------------------------


def test_exploratory_threshold_is_labelled_everywhere(explore_report) -> None:
    html = (explore_report.out / "report.html").read_text(encoding="utf-8")
    report = json.loads((explore_report.out / "report.json").read_text(encoding="utf-8"))
    assert 'class="banner"' in html and "EXPLORATORY THRESHOLD" in html
    assert report["threshold_kind"] == "exploratory"
    assert report["threshold_source"].startswith("EXPLORATORY")
    assert "EXPLORATORY" in _pdf_text(explore_report.out / "report.pdf")
    assert "Exploratory look" in html


def test_comparison_section(explore_report) -> None:
    html = (explore_report.out / "report.html").read_text(encoding="utf-8")
    report = json.loads((explore_report.out / "report.json").read_text(encoding="utf-8"))
    assert report["comparison"]["auc"]["auc_b"] is not None
    assert "Model comparison" in html
    assert f"{report['comparison']['auc']['auc_b']:.3f}" in html


def test_multiclass_report(tmp_path) -> None:
    from medrec.report.build import write_report

    rng = np.random.default_rng(2)
    classes = ["glioma", "meningioma", "normal"]
    rows = []
    for i in range(45):
        truth = i % 3
        logits = rng.normal(0, 1, 3)
        logits[truth] += 2.0
        probs = np.exp(logits) / np.exp(logits).sum()
        rows.append({"sample_id": f"s{i:03d}", "patient_id": f"PATIENT{i:04d}", "study_uid": f"1.2.3.{i}",
                     **{f"score_{c}": round(float(p), 6) for c, p in zip(classes, probs, strict=True)},
                     "prediction": classes[int(np.argmax(probs))], "label": classes[truth], "error": ""})
    path = tmp_path / "multi.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    report = write_report(path, tmp_path / "out", n_boot=50)
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert report["task"] == "multiclass"
    assert report["n_samples"] == 45 and report["cohort"]["n_studies"] == 45
    assert "Per-class results" in html and "meningioma" in html
    assert (tmp_path / "out" / "figures" / "confusion_multiclass.png").is_file()
    assert "PATIENT0001" not in html


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------


def test_figures_are_deterministic_png_without_metadata() -> None:
    curve = [{"fpr": [0, 0.1, 0.4, 1], "tpr": [0, 0.6, 0.9, 1], "label": "model"}]
    point = {"sensitivity": {"value": 0.8, "ci95": [0.7, 0.9]}, "specificity": {"value": 0.85, "ci95": [0.8, 0.9]}}
    first, second = figures.roc_figure(curve, point), figures.roc_figure(curve, point)
    assert first == second
    assert first.startswith(b"\x89PNG\r\n\x1a\n")
    assert b"Software" not in first and b"matplotlib" not in first.lower()


def test_report_figures_exist_with_fixed_names(cli_report, report: dict) -> None:
    names = sorted(p.name for p in (cli_report.out / "figures").glob("*.png"))
    for expected in ("roc.png", "pr.png", "calibration.png", "decision.png", "scores.png", "subgroups.png"):
        assert expected in names
    assert all(re.fullmatch(r"[a-z_]+(_\d\d)?\.png", n) for n in names)
    assert sorted(report["figures"]) == sorted(f"figures/{n}" for n in names)


def test_decision_curve_figure_draws_the_stated_prevalence_too(report: dict) -> None:
    decision = report["curves"]["decision"]
    assert decision["stated"]["prevalence"] == pytest.approx(0.05)  # the fixture's --prevalence
    both = figures.decision_curve_figure(decision)
    alone = figures.decision_curve_figure(dict(decision, stated=None))
    assert alone.startswith(b"\x89PNG") and both.startswith(b"\x89PNG") and alone != both


def test_calibration_figure_draws_the_recalibration_fit(report: dict) -> None:
    calibration = report["curves"]["calibration"]
    fit = report["calibration"]
    assert math.isfinite(fit["slope"]["intercept"])  # the joint fit's intercept travels with the slope
    args = (calibration["mean_predicted"], calibration["observed_fraction"], calibration["count"])
    assert figures.calibration_figure(*args) != figures.calibration_figure(*args, recalibration=fit)
    not_estimable = {"slope": {"value": None, "ci95": [None, None]}, "intercept": {"value": None, "ci95": [None, None]}}
    assert figures.calibration_figure(*args, recalibration=not_estimable).startswith(b"\x89PNG")


def test_display_slice_follows_the_volume_convention() -> None:
    volume = np.zeros((4, 3, 5), dtype=np.float32)
    volume[1, 2, 2] = 10.0  # i=1 (column), j=2 (row), middle slice k=2
    picture = figures.display_slice(volume, modality="MR")
    assert picture.shape == (3, 4)  # rows x columns, like the DICOM pixel array
    assert picture[2, 1] == pytest.approx(1.0)
    assert figures.display_slice(np.full((4, 3), -1000.0), modality="CT").max() == 0.0


def test_thumbnails_prefer_the_saliency_overlay(report_inputs, tmp_path) -> None:
    manifest = pd.read_csv(report_inputs.manifest, dtype=str, keep_default_na=False)
    rows = {r["sample_id"]: r for r in manifest.to_dict("records")}
    with_overlay, plain = manifest["sample_id"].iloc[0], manifest["sample_id"].iloc[1]
    explain = tmp_path / "explain"
    explain.mkdir()
    (explain / f"{with_overlay}.png").write_bytes(figures.thumbnail_figure(np.eye(8), "overlay"))
    report = {"classes": ["0", "1"], "flagged": {
        "false_negatives": [{"sample_id": "S-1", "patient_id": "P-1", "score": 0.1}],
        "false_positives": [{"sample_id": "S-2", "patient_id": "P-2", "score": 0.9},
                            {"sample_id": "S-3", "patient_id": "P-3", "score": 0.8}]}}
    shown = {"S-1": with_overlay, "S-2": plain, "S-3": "../../etc/passwd"}
    cases = draw_thumbnails(report, shown, rows, explain)
    assert [c.figure.name for c in cases["false_negatives"]] == ["fn_01.png"]
    assert cases["false_negatives"][0].picture_note == "saliency overlay"
    assert cases["false_negatives"][0].reference == "1"
    assert "middle slice" in cases["false_positives"][0].picture_note
    assert cases["false_positives"][0].figure.name == "fp_01.png"
    assert cases["false_positives"][1].picture_note == "not in the manifest"
    assert cases["false_positives"][1].figure is None


def test_study_rows_show_their_top_sample_overlay_from_the_folder_the_sidecar_names(report_inputs, tmp_path) -> None:
    """At study level the flagged row is a study: its picture is the map of its highest-scoring sample, found in
    the folder 'medrec score --explain DIR' recorded, not only in explain/ beside the predictions."""
    from medrec.report.case_pictures import _explain_folders

    manifest = pd.read_csv(report_inputs.manifest, dtype=str, keep_default_na=False)
    rows = {r["sample_id"]: r for r in manifest.to_dict("records")}
    member = manifest["sample_id"].iloc[0]
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / f"{member}.png").write_bytes(figures.thumbnail_figure(np.eye(8), "overlay"))
    predictions = tmp_path / "out" / "new.csv"
    folders = _explain_folders(predictions, {"explain_dir": str(maps)})
    assert folders == [maps, tmp_path / "out" / "explain"]
    report = {"classes": ["0", "1"], "flagged": {
        "false_negatives": [{"sample_id": "S-1", "patient_id": "P-1", "score": 0.1}], "false_positives": []}}
    cases = draw_thumbnails(report, {"S-1": "1.2.3.study"}, rows, folders, {"1.2.3.study": member})
    assert cases["false_negatives"][0].picture_note == "saliency overlay"
    # without the member, the study has no picture of its own
    cases = draw_thumbnails(report, {"S-1": "1.2.3.study"}, rows, folders)
    assert cases["false_negatives"][0].figure is None


def test_metric_formatting() -> None:
    metric = {"value": 0.875, "ci95": [0.8, 0.92], "method": "Wilson"}
    assert fmt_metric(metric, "sensitivity") == "87.5% (95% CI 80.0\u201392.0%)"
    assert fmt_metric(metric, "auc") == "0.875 (95% CI 0.800\u20130.920)"
    assert fmt_value(None) == "n/a" and fmt_value(float("nan"), "pct") == "n/a"


def test_every_qc_code_the_index_writes_has_a_flow_text():
    """The cohort-flow table names each qc.csv reason code in words (a new code without words shows up bare)."""
    from pathlib import Path

    import medrec.index
    from medrec.report.cohort_flow import QC_CODE_TEXT

    modules = [p for p in Path(medrec.index.__file__).parent.rglob("*.py") if p.name != "__init__.py"]  # __all__
    source = "\n".join(p.read_text() for p in modules)
    # a reason is written as a code literal on its own line (or after `return`) followed by an f-string message
    pattern = r'^\s*"([a-z][a-z_]+)",[ \t]*\n\s*f?"|(?:return\s+|\(\s*)"([a-z][a-z_]+)",\s*f?"'
    codes = {a or b for a, b in re.findall(pattern, source, flags=re.M)}
    codes -= {"dicom", "nifti", "label", "files", "accession", "dataset", "path", "patient_id", "study_uid",
              "series_uid", "modalities", "min_slices", "sagittal", "by_swapped_tag", "http"}
    # a PACS fetch problem names the series address first: FileProblem(address, "code", ...)
    codes |= set(re.findall(r'FileProblem\(\s*address,\s*"([a-z][a-z_]+)"', source))
    assert {"truncated", "no_pixel_data", "non_image_object", "no_geometry", "dicomweb_series_gone"} <= codes
    missing = sorted(codes - set(QC_CODE_TEXT))
    assert not missing, f"qc codes without a flow text: {missing}"
