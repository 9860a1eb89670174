"""What a report says about its study: the recipe's context on page 1, a red SYNTHETIC DATA banner for scans from
'medrec synth', the source of the stated prevalence, and the whole resolved configuration and plan."""

from __future__ import annotations

import html as html_module
import json
import shutil
import warnings
from pathlib import Path

import pypdfium2 as pdfium
import pytest
import yaml

from medrec.config import StudyContext
from medrec.errors import ConfigError
from medrec.report.build import write_report
from medrec.report.data_origin import synthetic_origin


def _first_page(path: Path) -> str:
    pdf = pdfium.PdfDocument(str(path))
    try:
        return " ".join(pdf[0].get_textpage().get_text_range().split())
    finally:
        pdf.close()


def _pdf_text(path: Path) -> str:
    pdf = pdfium.PdfDocument(str(path))
    try:
        return " ".join(" ".join(pdf[i].get_textpage().get_text_range().split()) for i in range(len(pdf)))
    finally:
        pdf.close()


CONTEXT = StudyContext(intended_use="Triage of abdominal CT for liver lesions", target_condition="focal liver lesion",
                       reference_standard="two radiologists in consensus, with follow-up", data_source="PACS export",
                       sites=["Site A", "Site B"], dates="2019-2021")


@pytest.fixture(scope="module")
def context_report(report_inputs, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("context") / "report"
    report = write_report(report_inputs.predictions, out, run_dir=report_inputs.run, n_boot=50, prevalence=0.1,
                          prevalence_source="recipe evaluation.prevalence", context=CONTEXT)
    return report, out


def test_context_is_printed_on_page_one_and_stored(context_report) -> None:
    report, out = context_report
    first = _first_page(out / "report.pdf")
    for text in ("Study context", "Triage of abdominal CT for liver lesions", "focal liver lesion",
                 "two radiologists in consensus, with follow-up", "PACS export", "Site A, Site B", "2019-2021"):
        assert text in first
    assert report["context"]["sites"] == "Site A, Site B"
    stored = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert stored["context"] == CONTEXT.model_dump()
    # the stated reference standard joins the methods, the data source the limitations
    assert "as stated for this study: two radiologists in consensus" in _pdf_text(out / "report.pdf")
    assert any("(PACS export) from Site A, Site B" in note for note in report["limitations"])


def test_missing_context_is_named(report_inputs, tmp_path) -> None:
    out = tmp_path / "report"
    report = write_report(report_inputs.predictions, out, run_dir=report_inputs.run, n_boot=50,
                          context=StudyContext(intended_use="screening"))
    first = _first_page(out / "report.pdf")
    assert "Not stated: target condition, reference standard, data source, sites, dates" in first
    assert report["context"] == {"intended_use": "screening"}
    assert report["data_origin"] is None  # the fixture's scans are not medrec synth's
    assert "SYNTHETIC DATA" not in first


def test_context_fields_are_text() -> None:
    import datetime

    context = StudyContext(dates=datetime.date(2020, 1, 1), sites=("A", "B"), data_source="  ")
    assert (context.dates, context.sites, context.data_source) == ("2020-01-01", "A, B", None)


def test_a_recipe_rejects_an_unknown_context_key(tmp_path) -> None:
    from medrec.workflow import read_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"scans": str(tmp_path)}, "context": {"intended_usage": "x"}}))
    with pytest.raises(ConfigError, match="did you mean 'intended_use'"):
        read_recipe(recipe)
    config, _ = read_recipe("ct_lesion_annotated")
    assert config.context.intended_use and config.context.reference_standard


def test_prevalence_source_is_printed_beside_the_adjusted_values(context_report) -> None:
    report, out = context_report
    assert report["prevalence_adjusted"]["prevalence_source"] == "recipe evaluation.prevalence"
    assert "10.0% (recipe evaluation.prevalence)" in _first_page(out / "report.pdf")


def test_cli_prevalence_names_its_source(report_inputs, tmp_path, run_medrec) -> None:
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(report_inputs.predictions), "-o", str(out), "--run",
                               str(report_inputs.run), "--prevalence", "0.05", "--bootstrap", "50"])
    assert code == 0, output
    stored = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert stored["prevalence_adjusted"]["prevalence_source"] == "--prevalence"


@pytest.fixture(scope="module")
def synth_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("synth_context")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate_cohort(root / "cohort", kind="ct-lesion", patients=2, fmt="nifti", seed=5, image_size=16,
                        slice_thickness=20.0)
    return root / "cohort"


def test_scans_from_medrec_synth_get_the_red_banner(report_inputs, synth_cohort: Path, tmp_path) -> None:
    import pandas as pd

    volumes = sorted(str(path) for path in synth_cohort.rglob("*.nii.gz"))
    assert volumes
    manifest = pd.read_csv(report_inputs.manifest, dtype=str, keep_default_na=False)
    manifest["path"] = [volumes[i % len(volumes)] for i in range(len(manifest))]
    manifest_path = tmp_path / "manifest.csv"
    manifest.to_csv(manifest_path, index=False)
    out = tmp_path / "report"
    report = write_report(report_inputs.predictions, out, run_dir=report_inputs.run, manifest=manifest_path,
                          qc=report_inputs.qc, n_boot=50)
    origin = report["data_origin"]
    assert origin["synthetic"] and origin["kind"] == "ct-lesion" and origin["seed"] == 5
    assert str(synth_cohort) not in json.dumps(report)  # evidence names the file, never the folder
    first = _first_page(out / "report.pdf")
    assert first.index("SYNTHETIC DATA") < first.index("Summary")  # above everything
    text = html_module.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert '<div class="alert" role="alert">SYNTHETIC DATA' in text
    assert any("synthetic phantoms" in note for note in report["limitations"])


def test_synthetic_origin_looks_beside_and_above_the_scans(synth_cohort: Path, tmp_path) -> None:
    import pandas as pd

    nested = tmp_path / "copy" / "deep" / "er"
    shutil.copytree(synth_cohort, tmp_path / "copy", dirs_exist_ok=True)
    nested.mkdir(parents=True)
    (nested / "x.nii.gz").write_bytes(b"")
    assert synthetic_origin(pd.DataFrame({"path": [str(nested / "x.nii.gz")]}))["synthetic"]
    assert synthetic_origin(None, [tmp_path / "copy"])["patients"] == 2
    # a synth.json that medrec did not write is no evidence
    other = tmp_path / "other"
    other.mkdir()
    (other / "synth.json").write_text(json.dumps({"settings": {"generator": "someone else"}}))
    assert synthetic_origin(None, [other]) is None
    assert synthetic_origin(pd.DataFrame({"path": [str(other / "a.nii.gz")]})) is None


def test_the_whole_configuration_and_plan_are_printed(report_inputs, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(report_inputs.run, run)
    settings = {f"setting_{i:02d}": i for i in range(40)}
    (run / "config.yaml").write_text(yaml.safe_dump({
        "data": {"manifest": "/data/patient_DOE/manifest.csv", "classes": ["0", "1"], "splits": None},
        "preprocessing": {"spacing": "auto", "input_size": "auto"}, "training": settings}))
    model = json.loads((run / "model.json").read_text(encoding="utf-8"))
    model["plan"] = {"spacing": [0.8, 0.8, 5.0], "input_size": [96, 96, 32], "mode": "2.5d",
                     "reasons": ["spacing [0.8, 0.8, 5] mm: median of the training data"], "fingerprint": {"n": 9}}
    (run / "model.json").write_text(json.dumps(model))
    out = tmp_path / "report"
    report = write_report(report_inputs.predictions, out, run_dir=run, n_boot=50)
    training = report["provenance"]["training"]
    assert all(training[f"training.setting_{i:02d}"] == str(i) for i in range(40))  # nothing cut at 24
    assert training["data.splits"] == "none" and training["preprocessing.spacing"] == "auto"
    assert "data.manifest" not in training and report["provenance"]["training_paths_left_out"] == ["data.manifest"]
    assert report["provenance"]["plan"] == {"spacing": "0.8, 0.8, 5.0", "input_size": "96, 96, 32", "mode": "2.5d"}
    text = _pdf_text(out / "report.pdf")
    assert "training.setting_39" in text and "96, 96, 32" in text and "median of the training data" in text
    assert "patient_DOE" not in text
