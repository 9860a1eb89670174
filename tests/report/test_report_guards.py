"""Wrong numbers without a warning: what the report refuses, leaves out or says loudly."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medrec.errors import InputError
from medrec.report.build import write_report

COLUMNS = ["sample_id", "patient_id", "study_uid", "score", "prediction", "label", "error"]


def _write(frame: pd.DataFrame, path: Path, sidecar: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    if sidecar is not None:
        path.with_name(path.name + ".json").write_text(json.dumps(sidecar))
    return path


def _run_with_weights(report_inputs, folder: Path, sha256: str) -> Path:
    """A copy of the fixture's run whose model.json names its weights by ``sha256``."""
    shutil.copytree(report_inputs.run, folder)
    info = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(info | {"weights": {"file": "model.safetensors", "sha256": sha256}}))
    return folder


def _whole_run(report_inputs) -> pd.DataFrame:
    """Predictions over the run's whole manifest (training, validation and test), as a new user makes them."""
    manifest = pd.read_csv(report_inputs.run / "manifest.csv", dtype=str, keep_default_na=False)
    frame = manifest[["sample_id", "patient_id", "study_uid", "label"]].copy()
    scores = dict(zip(report_inputs.frame["sample_id"], report_inputs.frame["score"], strict=True))
    frame["score"] = [scores.get(s, 0.9 if label == "1" else 0.1) for s, label in zip(frame["sample_id"],
                                                                                   frame["label"], strict=True)]
    errors = dict(zip(report_inputs.frame["sample_id"], report_inputs.frame["error"], strict=True))
    frame["error"] = [errors.get(s, "") for s in frame["sample_id"]]
    frame["prediction"] = ""
    return frame[COLUMNS]


# ------------------------------------------------------------------------------------------------
# Predictions of another model than --run
# ------------------------------------------------------------------------------------------------


def test_report_refuses_predictions_made_by_other_weights_even_with_a_threshold(report_inputs, tmp_path,
                                                                                 run_medrec) -> None:
    run = _run_with_weights(report_inputs, tmp_path / "run", "b" * 64)
    predictions = _write(report_inputs.frame[COLUMNS], tmp_path / "p" / "pred.csv",
                         {"model_sha256": "a" * 64, "threshold": 0.5, "threshold_source": "run: youden, chosen on "
                          "validation", "classes": ["0", "1"], "positive_class": "1", "level": "series"})
    for extra in ([], ["--threshold", "0.4"]):
        out = tmp_path / f"r{len(extra)}"
        code, output = run_medrec(["report", str(predictions), "-o", str(out), "--run", str(run), *extra])
        assert code != 0 and "Traceback" not in output
        lines = [line for line in output.strip().splitlines() if line.strip()]
        assert len(" ".join(lines)) < 400 and "aaaaaaaaaaaa" in output and "bbbbbbbbbbbb" in output
        assert not out.exists()
    # the same weights: accepted
    predictions.with_name("pred.csv.json").write_text(json.dumps(
        json.loads(predictions.with_name("pred.csv.json").read_text()) | {"model_sha256": "b" * 64}))
    assert write_report(predictions, tmp_path / "ok", run_dir=run, n_boot=50)["threshold"] == 0.5


# ------------------------------------------------------------------------------------------------
# The run's own training / validation data
# ------------------------------------------------------------------------------------------------


def test_rows_from_the_runs_training_and_validation_splits_are_excluded_loudly(report_inputs, tmp_path) -> None:
    frame = _whole_run(report_inputs)
    predictions = _write(frame, tmp_path / "p" / "pred.csv")
    out = tmp_path / "report"
    report = write_report(predictions, out, run_dir=report_inputs.run, n_boot=50)
    splits = pd.read_csv(report_inputs.run / "splits.csv", dtype=str)
    split_of = dict(zip(splits["sample_id"], splits["split"], strict=True))
    fitted = frame["sample_id"].map(split_of).isin(["train", "val"])
    n_train = int((frame["sample_id"].map(split_of) == "train").sum())
    n_val = int((frame["sample_id"].map(split_of) == "val").sum())
    assert n_train and n_val
    # the analysis holds exactly the test rows that could be scored
    test_rows = frame[~fitted]
    assert report["n_samples"] == int((test_rows["error"] == "").sum())
    assert report["n_rows"] == len(frame)
    assert report["excluded_reasons"]["in the run's training / validation split"] == n_train + n_val
    assert report["cohort"]["n_in_run_splits"] == {"train": n_train, "val": n_val}
    assert report["cohort"]["n_not_scored"] == 0  # excluded rows were scored, they are not missing
    assert report["held_out_check"]["n_excluded"] == n_train + n_val
    assert f"{n_train + n_val} of {len(frame)} prediction rows" in report["warnings"][0]
    text = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert "were EXCLUDED" in text  # the banner on page 1
    assert "Excluded: in the run's training / validation split" in text


def test_study_and_patient_rows_are_matched_at_their_level(report_inputs, tmp_path) -> None:
    splits = pd.read_csv(report_inputs.run / "splits.csv", dtype=str)
    manifest = pd.read_csv(report_inputs.run / "manifest.csv", dtype=str, keep_default_na=False)
    fitted = manifest[manifest["sample_id"].isin(splits.loc[splits["split"] != "test", "sample_id"])]
    test = report_inputs.frame[report_inputs.frame["error"] == ""]
    # study rows: one names its members (as 'medrec score --level study' writes), one only its study UID
    studies = pd.DataFrame([
        {"sample_id": "g1", "sample_ids": fitted["sample_id"].iloc[0], "study_uid": fitted["study_uid"].iloc[0],
         "patient_id": fitted["patient_id"].iloc[0], "score": 0.9, "label": "1", "error": "", "prediction": ""},
        {"sample_id": "g2", "sample_ids": "", "study_uid": fitted["study_uid"].iloc[1],
         "patient_id": fitted["patient_id"].iloc[1], "score": 0.2, "label": "0", "error": "", "prediction": ""},
        *[{"sample_id": f"t{i}", "sample_ids": row.sample_id, "study_uid": row.study_uid,
           "patient_id": row.patient_id, "score": row.score, "label": row.label, "error": "", "prediction": ""}
          for i, row in enumerate(test.itertuples())],
    ])
    predictions = _write(studies, tmp_path / "s" / "study.csv", {"level": "study", "threshold": 0.5,
                                                                 "threshold_source": "command line (--threshold)"})
    report = write_report(predictions, tmp_path / "rs", run_dir=report_inputs.run, n_boot=50)
    assert report["excluded_reasons"]["in the run's training / validation split"] == 2
    assert report["n_samples"] == len(test)
    # patient rows (no members listed): matched by patient id
    patients = studies.assign(sample_ids="", sample_id=[f"p{i}" for i in range(len(studies))])
    predictions = _write(patients, tmp_path / "q" / "patient.csv", {"level": "patient", "threshold": 0.5,
                                                                    "threshold_source": "command line (--threshold)"})
    report = write_report(predictions, tmp_path / "rp", run_dir=report_inputs.run, n_boot=50)
    assert report["excluded_reasons"]["in the run's training / validation split"] == 2


def test_only_training_data_is_refused(report_inputs, tmp_path, run_medrec) -> None:
    frame = _whole_run(report_inputs)
    splits = pd.read_csv(report_inputs.run / "splits.csv", dtype=str)
    training = frame[frame["sample_id"].isin(splits.loc[splits["split"] == "train", "sample_id"])]
    predictions = _write(training, tmp_path / "p" / "pred.csv")
    out = tmp_path / "report"
    code, output = run_medrec(["report", str(predictions), "-o", str(out), "--run", str(report_inputs.run),
                               "--threshold", "0.5"])
    assert code != 0 and "Traceback" not in output
    flat = " ".join(output.split())
    assert f"all {len(training)} rows" in flat and "training" in flat and "medrec evaluate" in flat
    assert not out.exists()


def test_the_run_named_by_the_sidecar_is_checked_too(report_inputs, tmp_path) -> None:
    run = _run_with_weights(report_inputs, tmp_path / "run", "c" * 64)
    frame = _whole_run(report_inputs)
    sidecar = {"model_sha256": "c" * 64, "threshold": 0.5, "threshold_source": "run: youden, chosen on validation",
               "level": "series", "input": {"kind": "test split", "run_dir": str(run)}}
    predictions = _write(frame, tmp_path / "p" / "pred.csv", sidecar)
    report = write_report(predictions, tmp_path / "r", n_boot=50)
    assert report["excluded_reasons"].get("in the run's training / validation split")
    # a run folder that now holds other weights is not the one that scored: not used
    _write(frame, predictions, sidecar | {"model_sha256": "d" * 64})
    report = write_report(predictions, tmp_path / "r2", n_boot=50)
    assert "in the run's training / validation split" not in report["excluded_reasons"]


# ------------------------------------------------------------------------------------------------
# The flow describes the data that were scored
# ------------------------------------------------------------------------------------------------


def _new_cohort(report_inputs, folder: Path) -> tuple[pd.DataFrame, Path]:
    """Predictions of a new cohort (other samples, studies and patients than the run's) and its manifest."""
    frame = report_inputs.frame.iloc[:14].copy()
    frame["sample_id"] = [f"new{i:03d}" for i in range(len(frame))]
    frame["patient_id"] = "NEW" + frame["patient_id"].str[3:]
    frame["study_uid"] = frame["study_uid"].str.replace("1.2.826.0.1.3680043.9.", "1.2.826.0.1.3680043.11.")
    manifest = pd.read_csv(report_inputs.manifest, dtype=str, keep_default_na=False).iloc[:len(frame)].copy()
    for column in ("sample_id", "patient_id", "study_uid", "label"):
        manifest[column] = frame[column].astype(str).to_numpy()
    folder.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(folder / "manifest.csv", index=False)
    return frame, folder / "manifest.csv"


def test_a_new_cohort_flow_never_shows_the_training_manifest(report_inputs, tmp_path, monkeypatch) -> None:
    frame, manifest = _new_cohort(report_inputs, tmp_path / "new" / "index")
    # scored from another working directory: the sidecar names the manifest by a path relative to it
    sidecar = {"threshold": 0.5, "threshold_source": "command line (--threshold)", "level": "series",
               "input": {"kind": "manifest", "path": "index/manifest.csv"}}
    predictions = _write(frame[COLUMNS], tmp_path / "scores" / "pred.csv", sidecar)
    monkeypatch.chdir(tmp_path)  # where 'index/manifest.csv' names nothing
    report = write_report(predictions, tmp_path / "r1", run_dir=report_inputs.run, n_boot=50)
    cohort = report["cohort"]
    assert "n_manifest" not in cohort and not cohort.get("splits")  # not the run's 106 samples, train / val / test
    assert any("was not found" in warning for warning in report["warnings"])
    # found (absolute path, as 'medrec score' records it now): the flow counts the scored manifest
    _write(frame[COLUMNS], predictions, sidecar | {"input": {"kind": "manifest", "path": str(manifest)}})
    report = write_report(predictions, tmp_path / "r2", run_dir=report_inputs.run, n_boot=50)
    assert report["cohort"]["n_manifest"] == len(frame) and report["cohort"]["n_not_scored"] == 0
    assert not report["cohort"].get("splits")


def test_study_rows_match_the_manifest_and_find_their_pictures(report_inputs, tmp_path) -> None:
    frame, manifest = _new_cohort(report_inputs, tmp_path / "new" / "index")
    wrong = [0.95 if label == "0" else 0.05 for label in frame["label"]]  # every decision wrong: all flagged
    frame = frame.assign(score=pd.Series(wrong, index=frame.index).where(frame["error"] == ""))
    studies = frame.assign(sample_ids=frame["sample_id"], sample_id=[f"{i:016x}" for i in range(len(frame))])
    sidecar = {"threshold": 0.5, "threshold_source": "command line (--threshold)", "level": "study",
               "input": {"kind": "manifest", "path": str(manifest)}}
    predictions = _write(studies[[*COLUMNS, "sample_ids"]], tmp_path / "scores" / "study.csv", sidecar)
    out = tmp_path / "r"
    report = write_report(predictions, out, n_boot=50)
    assert report["cohort"]["n_manifest"] == len(frame) and report["cohort"]["n_not_scored"] == 0
    assert report["cohort"]["level"] == "study"
    text = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert "not in the manifest" not in text and "middle slice" in text
    # hand-made study rows without member lists are matched by study UID
    _write(studies[COLUMNS], predictions, sidecar)
    assert write_report(predictions, tmp_path / "r2", n_boot=50)["cohort"]["n_not_scored"] == 0


def test_score_records_where_its_input_lies_absolutely(tmp_path, monkeypatch) -> None:
    from medrec.score.inputs import load_input

    monkeypatch.chdir(tmp_path)
    pd.DataFrame([{"sample_id": "s1", "patient_id": "p1", "study_uid": "1.2.3", "series_uid": "1.2.3.4",
                   "modality": "CT", "format": "nifti", "path": "x.nii.gz", "label": "0"}]).to_csv(
        tmp_path / "manifest.csv", index=False)
    _, description = load_input("manifest.csv", tmp_path / "out.csv")
    assert Path(description["path"]).is_absolute() and Path(description["path"]) == tmp_path / "manifest.csv"


# ------------------------------------------------------------------------------------------------
# Scores that are not numbers
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["abc", "0,73", "nan"])
def test_a_score_that_is_not_a_number_is_an_error_naming_the_row(report_inputs, tmp_path, bad) -> None:
    frame = report_inputs.frame[COLUMNS].astype(str).replace("nan", "")
    frame.loc[5, "score"] = bad
    predictions = _write(frame, tmp_path / "pred.csv")
    with pytest.raises(InputError) as caught:
        write_report(predictions, tmp_path / "r", threshold=0.5, n_boot=50)
    message = str(caught.value)
    assert str(predictions) in message and "line 7" in message
    assert frame.loc[5, "sample_id"] in message and repr(bad) in message
    assert not (tmp_path / "r").exists()


def test_an_empty_score_with_an_error_stays_an_exclusion(report_inputs, tmp_path) -> None:
    frame = report_inputs.frame[COLUMNS]
    assert frame["score"].isna().sum() == 1 and (frame["error"] != "").sum() == 1
    report = write_report(_write(frame, tmp_path / "pred.csv"), tmp_path / "r", threshold=0.5, n_boot=50)
    assert report["excluded_reasons"] == {"error": 1}

