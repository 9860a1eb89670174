"""The report reads the operating threshold that scoring recorded in the predictions sidecar.

Explicit flags (--threshold, --run) override the sidecar; when they give another threshold than the
one the predictions were made at, the report says both.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pandas as pd

SCORED_AT = 0.3
RUN_THRESHOLD = 0.5  # the frozen threshold in the run's model.json (report_inputs)
COLUMNS = ["sample_id", "patient_id", "study_uid", "score", "prediction", "label", "error"]


def _scored(inputs, folder: Path, threshold: float = SCORED_AT,
            source: str = "command line (--threshold)") -> Path:
    """The fixture's predictions as 'medrec score --threshold 0.3' writes them: decisions and sidecar at 0.3."""
    frame = inputs.frame.copy()
    frame["prediction"] = ["" if pd.isna(s) else ("1" if s >= threshold else "0") for s in frame["score"]]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pred.csv"
    frame[COLUMNS].to_csv(path, index=False)
    path.with_name(path.name + ".json").write_text(json.dumps({
        "classes": ["0", "1"], "positive_class": "1", "threshold": threshold, "threshold_source": source,
        "level": "series", "status": "complete",
    }))
    return path


def _confusion(inputs, threshold: float) -> dict[str, int]:
    usable = inputs.frame[(inputs.frame["error"] == "") & inputs.frame["score"].notna()]
    truth, flagged = usable["label"] == "1", usable["score"] >= threshold
    return {"tp": int((truth & flagged).sum()), "fp": int((~truth & flagged).sum()),
            "tn": int((~truth & ~flagged).sum()), "fn": int((truth & ~flagged).sum())}


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_sidecar_threshold_is_used_without_flags(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _scored(report_inputs, tmp_path / "scored")
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--bootstrap", "50"])
    assert code == 0, output
    report = _report(out)
    assert report["threshold"] == SCORED_AT
    assert report["confusion_matrix"] == _confusion(report_inputs, SCORED_AT)
    assert report["threshold_kind"] == "user-given"
    assert "pred.csv.json" in report["threshold_source"] and "--threshold" in report["threshold_source"]
    assert report["provenance"]["threshold_source"] == report["threshold_source"]
    assert not [w for w in report["warnings"] if "prediction" in w]
    assert "pred.csv.json" in output


def test_sidecar_threshold_from_the_run_counts_as_validation(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _scored(report_inputs, tmp_path / "scored", threshold=RUN_THRESHOLD,
                          source="run: youden, chosen on validation")
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--bootstrap", "50"])
    assert code == 0, output
    report = _report(out)
    assert report["threshold"] == RUN_THRESHOLD and report["threshold_kind"] == "validation"
    assert "chosen on the validation split by youden" in report["threshold_source"]


def test_threshold_flag_overrides_the_sidecar_and_says_so(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _scored(report_inputs, tmp_path / "scored")
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--threshold", "0.6", "--bootstrap", "50"])
    assert code == 0, output
    report = _report(out)
    assert report["threshold"] == 0.6 and report["threshold_kind"] == "user-given"
    assert report["confusion_matrix"] == _confusion(report_inputs, 0.6)
    assert report["scoring_threshold"] == SCORED_AT
    assert "--threshold" in report["threshold_source"]
    assert "predictions were made at 0.3" in report["threshold_source"]
    assert "recomputed at 0.6" in report["threshold_source"]


def test_run_overrides_the_sidecar_and_the_report_states_both(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _scored(report_inputs, tmp_path / "scored")
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--run", str(report_inputs.run),
                               "--bootstrap", "50"])
    assert code == 0, output
    report = _report(out)
    assert report["threshold"] == RUN_THRESHOLD and report["threshold_kind"] == "validation"
    assert report["confusion_matrix"] == _confusion(report_inputs, RUN_THRESHOLD)
    assert report["scoring_threshold"] == SCORED_AT
    source = report["threshold_source"]
    assert source.startswith("validation:")
    assert "predictions were made at 0.3" in source and "recomputed at 0.5" in source
    assert any("made at 0.3" in warning for warning in report["warnings"])
    text = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert "predictions were made at 0.3" in text
    assert "made at 0.3" in output


def test_same_threshold_in_run_and_sidecar_adds_no_note(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _scored(report_inputs, tmp_path / "scored", threshold=RUN_THRESHOLD,
                          source="run: youden, chosen on validation")
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--run", str(report_inputs.run),
                               "--bootstrap", "50"])
    assert code == 0, output
    report = _report(out)
    assert report["threshold"] == RUN_THRESHOLD and "recomputed" not in report["threshold_source"]
    assert not [w for w in report["warnings"] if "made at" in w]


def test_help_says_which_threshold_wins(run_medrec) -> None:
    code, output = run_medrec(["report", "--help"])
    assert code == 0
    flat = " ".join(output.split())
    assert "sidecar" in flat and "recomputed" in flat


def test_predictions_of_another_model_than_the_run_are_refused(report_inputs, tmp_path, run_medrec) -> None:
    predictions = _scored(report_inputs, tmp_path / "scored", threshold=RUN_THRESHOLD,
                          source="run: youden, chosen on validation")
    sidecar = predictions.with_name(predictions.name + ".json")
    sidecar.write_text(json.dumps(json.loads(sidecar.read_text()) | {"model_sha256": "a" * 64}))
    run = tmp_path / "run"
    shutil.copytree(report_inputs.run, run)
    info = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps(info | {"weights": {"sha256": "b" * 64}}))
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--run", str(run), "--bootstrap", "50"])
    assert code != 0 and "aaaaaaaaaaaa" in output and "bbbbbbbbbbbb" in output
    assert not (out / "report.json").exists()
