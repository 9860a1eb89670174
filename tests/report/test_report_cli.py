"""End-to-end tests of ``medrec report`` through :func:`medrec.cli.main`."""

from __future__ import annotations

import json
import shutil


def test_report_end_to_end(cli_report) -> None:
    assert cli_report.exit_code == 0, cli_report.output
    for name in ("report.html", "report.pdf", "report.json"):
        assert (cli_report.out / name).stat().st_size > 1000
    assert len(list((cli_report.out / "figures").glob("*.png"))) >= 5
    # The summary table with CIs and the report path are printed.
    assert "Sensitivity" in cli_report.output and "95% CI" in cli_report.output
    assert "report.html" in cli_report.output
    report = json.loads((cli_report.out / "report.json").read_text())
    assert f"{100 * report['metrics']['sensitivity']['value']:.1f}%" in cli_report.output


def test_exploratory_threshold_cli(explore_report) -> None:
    assert explore_report.exit_code == 0, explore_report.output
    assert "EXPLORATORY" in (explore_report.out / "report.html").read_text(encoding="utf-8")
    assert "EXPLORATORY" in explore_report.output


def test_missing_threshold_source_fails_with_one_line(report_inputs, tmp_path, run_medrec) -> None:
    code, output = run_medrec(["report", str(report_inputs.predictions), "-o", str(tmp_path / "r")])
    assert code != 0
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "no operating threshold" in lines[0] and "--exploratory-threshold" in lines[0]
    assert "Traceback" not in output
    assert not (tmp_path / "r" / "report.html").exists()


def test_run_without_model_json_fails(report_inputs, tmp_path, run_medrec) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(report_inputs.run / "manifest.csv", run / "manifest.csv")
    code, output = run_medrec(["report", str(report_inputs.predictions), "-o", str(tmp_path / "r"), "--run", str(run)])
    assert code != 0
    assert "model.json" in output and "Traceback" not in output


def test_run_model_json_without_threshold_fails(report_inputs, tmp_path, run_medrec) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({
        "format": "medrec-run-1", "architecture": {"name": "resnet10", "spatial_dims": 3, "in_channels": 1,
                                                   "num_classes": 2},
        "weights": {"file": "model.safetensors"}, "plan": {}, "classes": ["0", "1"]}))
    code, output = run_medrec(["report", str(report_inputs.predictions), "-o", str(tmp_path / "r"), "--run", str(run)])
    assert code != 0
    assert "threshold" in output and "model.json" in output


def test_conflicting_and_invalid_threshold_options(report_inputs, tmp_path, run_medrec) -> None:
    base = ["report", str(report_inputs.predictions), "-o", str(tmp_path / "r")]
    code, output = run_medrec([*base, "--threshold", "0.4", "--exploratory-threshold", "youden"])
    assert code != 0 and "not both" in output
    code, output = run_medrec([*base, "--exploratory-threshold", "median"])
    assert code != 0 and "youden" in output
    code, output = run_medrec([*base, "--threshold", "0.4", "--subgroup", "scanner"])
    assert code != 0 and "scanner" in output


def test_missing_predictions_file(tmp_path, run_medrec) -> None:
    code, output = run_medrec(["report", str(tmp_path / "none.csv"), "-o", str(tmp_path / "r"), "--threshold", "0.5"])
    assert code != 0 and "none.csv" in output and "not found" in output


def test_help_has_examples(run_medrec) -> None:
    code, output = run_medrec(["report", "--help"])
    assert code == 0
    assert "Examples" in output and "medrec report predictions.csv" in output
