from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from score_helpers import StandInRun, TinyNet, write_nifti_cohort

from medrec.data.dataset import failure_reason
from medrec.errors import ConfigError, OutputError
from medrec.score import ScoreOptions, read_rows, read_sidecar, score_manifest
from medrec.score.inference import flip_combinations


def _scores(path) -> dict[str, dict[str, str]]:
    return {row["sample_id"]: row for row in read_rows(path)[1]}


def _in_memory(run, manifest) -> dict[str, np.ndarray]:
    """The run's calibrated probabilities for each sample, computed without the scorer."""
    chain = run.deterministic_transforms()
    out = {}
    with torch.no_grad():
        for row in manifest.to_dict("records"):
            image = torch.as_tensor(chain(dict(row))["image"]).float()
            out[row["sample_id"]] = run.predict(image[None])[0].numpy()
    return out


def test_scores_equal_the_model_in_memory(tmp_path, cohort, stand_in_run):
    output = tmp_path / "predictions.csv"
    result = score_manifest(stand_in_run, cohort, output, ScoreOptions(batch_size=4), model_sha256="m1",
                            show_progress=False)
    assert (result.scored, result.failed, result.skipped) == (6, 0, 0)
    columns, rows = read_rows(output)
    assert columns == ["sample_id", "patient_id", "study_uid", "score", "prediction", "label", "error"]
    expected = _in_memory(stand_in_run, cohort)
    for row in rows:
        assert float(row["score"]) == pytest.approx(float(expected[row["sample_id"]][1]), abs=1e-6)
        assert row["prediction"] == ("1" if float(row["score"]) >= 0.5 else "0")
        assert row["error"] == ""
    assert [row["label"] for row in rows] == list(cohort["label"])
    record = read_sidecar(output)
    assert record["model_sha256"] == "m1"
    assert record["threshold"] == 0.5 and "fixed for tests" in record["threshold_source"]
    assert record["counts"]["scored"] == 6 and record["status"] == "complete"


def test_worker_processes_give_the_same_scores(tmp_path, cohort, stand_in_run):
    one = score_manifest(stand_in_run, cohort, tmp_path / "a.csv", ScoreOptions(batch_size=2, workers=0),
                         model_sha256="m", show_progress=False)
    two = score_manifest(stand_in_run, cohort, tmp_path / "b.csv", ScoreOptions(batch_size=2, workers=2),
                         model_sha256="m", show_progress=False)
    assert one.scored == two.scored == 6
    a, b = _scores(tmp_path / "a.csv"), _scores(tmp_path / "b.csv")
    assert list(a) == list(b)  # manifest order kept
    for key in a:
        assert float(a[key]["score"]) == pytest.approx(float(b[key]["score"]), abs=1e-6)


def test_corrupt_sample_becomes_an_error_row(tmp_path, cohort, stand_in_run):
    bad = cohort.loc[2, "path"]
    with open(bad, "r+b") as handle:
        handle.truncate(100)
    missing = cohort.loc[4].copy()
    missing["sample_id"], missing["path"] = "gone", str(tmp_path / "nope.nii.gz")
    manifest = pd.concat([cohort, missing.to_frame().T], ignore_index=True)
    output = tmp_path / "p.csv"
    result = score_manifest(stand_in_run, manifest, output, ScoreOptions(batch_size=3, workers=2),
                            model_sha256="m", show_progress=False)
    assert (result.scored, result.failed) == (5, 2)
    rows = _scores(output)
    assert rows["s02"]["score"] == "" and "vol02.nii.gz" in rows["s02"]["error"]
    assert "does not exist" in rows["gone"]["error"]
    assert "\n" not in rows["s02"]["error"]
    assert all(rows[k]["error"] == "" and rows[k]["score"] for k in rows if k not in ("s02", "gone"))


def test_resume_skips_done_samples_and_retries_errors_on_request(tmp_path, cohort, stand_in_run):
    output = tmp_path / "p.csv"
    score_manifest(stand_in_run, cohort.iloc[:3], output, ScoreOptions(), model_sha256="m", show_progress=False)
    result = score_manifest(stand_in_run, cohort, output, ScoreOptions(), model_sha256="m", show_progress=False)
    assert (result.scored, result.skipped) == (3, 3)
    assert [row["sample_id"] for row in read_rows(output)[1]] == list(cohort["sample_id"])
    # an error row is kept on a plain rerun and scored again with retry_errors
    broken = cohort.copy()
    broken.loc[5, "path"] = str(tmp_path / "missing.nii.gz")
    broken.loc[5, "sample_id"] = "s99"
    again = score_manifest(stand_in_run, broken, output, ScoreOptions(), model_sha256="m", show_progress=False)
    assert (again.scored, again.failed, again.skipped) == (0, 1, 5)
    fixed = broken.copy()
    fixed.loc[5, "path"] = cohort.loc[5, "path"]
    kept = score_manifest(stand_in_run, fixed, output, ScoreOptions(), model_sha256="m", show_progress=False)
    assert kept.skipped == 6 and kept.scored == 0
    retried = score_manifest(stand_in_run, fixed, output, ScoreOptions(retry_errors=True), model_sha256="m",
                             show_progress=False)
    assert (retried.scored, retried.skipped) == (1, 5)
    ids = [row["sample_id"] for row in read_rows(output)[1]]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 7
    assert _scores(output)["s99"]["error"] == ""


def test_other_model_or_settings_are_refused(tmp_path, cohort, stand_in_run):
    output = tmp_path / "p.csv"
    score_manifest(stand_in_run, cohort, output, ScoreOptions(), model_sha256="aaaa", show_progress=False)
    with pytest.raises(OutputError, match="another model"):
        score_manifest(stand_in_run, cohort, output, ScoreOptions(), model_sha256="bbbb", show_progress=False)
    with pytest.raises(OutputError, match="threshold"):
        score_manifest(stand_in_run, cohort, output, ScoreOptions(threshold=0.2), model_sha256="aaaa",
                       show_progress=False)
    result = score_manifest(stand_in_run, cohort, output, ScoreOptions(overwrite=True), model_sha256="bbbb",
                            show_progress=False)
    assert result.scored == 6 and read_sidecar(output)["model_sha256"] == "bbbb"
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("sample_id,patient_id,study_uid,score,prediction,label,error\nx,p,s,0.1,0,0,\n")
    with pytest.raises(OutputError, match="no sidecar"):
        score_manifest(stand_in_run, cohort, foreign, ScoreOptions(), model_sha256="aaaa", show_progress=False)


def test_threshold_option_sets_predictions(tmp_path, cohort, stand_in_run):
    output = tmp_path / "p.csv"
    score_manifest(stand_in_run, cohort, output, ScoreOptions(threshold=0.0), model_sha256="m", show_progress=False)
    assert {row["prediction"] for row in read_rows(output)[1]} == {"1"}
    assert read_sidecar(output)["threshold_source"].startswith("command line")
    with pytest.raises(ConfigError):
        ScoreOptions(threshold=1.5).validate()


def test_tta_averages_all_flips(tmp_path, cohort, stand_in_run):
    assert len(flip_combinations(3)) == 8 and len(flip_combinations(2)) == 4
    output = tmp_path / "p.csv"
    score_manifest(stand_in_run, cohort, output, ScoreOptions(tta=True), model_sha256="m", show_progress=False)
    columns, rows = read_rows(output)
    assert columns[-1] == "uncertainty"
    chain = stand_in_run.deterministic_transforms()
    row = cohort.to_dict("records")[1]
    image = torch.as_tensor(chain(dict(row))["image"]).float()[None]
    with torch.no_grad():
        variants = np.array([stand_in_run.predict(torch.flip(image, dims=c) if c else image)[0, 1].item()
                             for c in flip_combinations(3)])
    got = _scores(output)[row["sample_id"]]
    assert float(got["score"]) == pytest.approx(variants.mean(), abs=1e-6)
    assert float(got["uncertainty"]) == pytest.approx(variants.std(), abs=1e-6)


def test_study_and_patient_levels(tmp_path, stand_in_run):
    manifest = write_nifti_cohort(tmp_path / "scans", n=6, studies_per_patient=2)
    # patients P00 (s00..s03, studies 1.2.0 / 1.2.1) and P01 (s04, s05, study 1.2.2)
    manifest.loc[3, "path"] = str(tmp_path / "missing.nii.gz")
    manifest.loc[4:5, "path"] = str(tmp_path / "missing.nii.gz")
    output = tmp_path / "study.csv"
    result = score_manifest(stand_in_run, manifest, output, ScoreOptions(level="study", aggregate="mean"),
                            model_sha256="m", show_progress=False)
    assert result.rows == 3 and result.rows_ok == 2
    columns, rows = read_rows(output)
    assert columns[-3:] == ["n_samples", "n_failed", "sample_ids"]
    samples = _scores(tmp_path / "study.samples.csv")
    by_study = {row["study_uid"]: row for row in rows}
    first = by_study["1.2.0"]
    assert float(first["score"]) == pytest.approx(np.mean([float(samples[s]["score"]) for s in ("s00", "s01")]))
    assert first["label"] == "1"  # one positive member makes a positive study
    partial = by_study["1.2.1"]
    assert partial["error"] == "" and partial["n_failed"] == "1"
    assert float(partial["score"]) == pytest.approx(float(samples["s02"]["score"]))
    failed = by_study["1.2.2"]
    assert failed["score"] == "" and failed["error"].startswith("all 2 samples failed")

    patient = tmp_path / "patient.csv"
    score_manifest(stand_in_run, manifest, patient, ScoreOptions(level="patient"), model_sha256="m",
                   show_progress=False)
    rows = {row["patient_id"]: row for row in read_rows(patient)[1]}
    assert float(rows["P00"]["score"]) == pytest.approx(max(float(samples[s]["score"]) for s in ("s00", "s01", "s02")))
    assert rows["P00"]["study_uid"] == "1.2.0;1.2.1"


def test_multiclass_columns(tmp_path, cohort):
    class ThreeClassNet(TinyNet):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(4, 3)

    run = StandInRun(model=ThreeClassNet(), classes=["normal", "benign", "malignant"])
    output = tmp_path / "p.csv"
    score_manifest(run, cohort, output, ScoreOptions(), model_sha256="m", show_progress=False)
    columns, rows = read_rows(output)
    assert columns[3:6] == ["score_normal", "score_benign", "score_malignant"]
    for row in rows:
        probs = [float(row[c]) for c in columns[3:6]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-6)
        assert row["prediction"] == ["normal", "benign", "malignant"][int(np.argmax(probs))]
    with pytest.raises(ConfigError, match="mean"):
        score_manifest(run, cohort, tmp_path / "s.csv", ScoreOptions(level="study", aggregate="max"),
                       model_sha256="m", show_progress=False)


def test_failure_reason_prefers_the_medrec_error():
    from medrec.errors import NiftiError

    try:
        try:
            raise NiftiError("x.nii: truncated\nfile")
        except NiftiError as inner:
            raise RuntimeError("applying transform <LoadSampled>") from inner
    except RuntimeError as outer:
        assert failure_reason(outer) == "x.nii: truncated file"


def test_a_second_writer_is_refused_while_the_first_holds_the_file(tmp_path, cohort, stand_in_run):
    from medrec.score.lock import output_lock

    output = tmp_path / "p.csv"
    with output_lock(output), pytest.raises(OutputError, match="another 'medrec score'"):
        score_manifest(stand_in_run, cohort, output, ScoreOptions(), model_sha256="m", show_progress=False)
    assert score_manifest(stand_in_run, cohort, output, ScoreOptions(), model_sha256="m",
                          show_progress=False).scored == 6


def test_rerun_with_labels_refreshes_the_label_column_without_scoring_again(tmp_path, stand_in_run):
    manifest = write_nifti_cohort(tmp_path / "scans", n=6, studies_per_patient=2)  # 3 studies of 2 samples
    unlabelled = manifest.assign(label="")
    output = tmp_path / "study.csv"
    options = ScoreOptions(level="study")
    score_manifest(stand_in_run, unlabelled, output, options, model_sha256="m", show_progress=False)
    samples = tmp_path / "study.samples.csv"
    scored = _scores(samples)
    assert all(row["label"] == "" for row in scored.values())

    result = score_manifest(stand_in_run, manifest, output, options, model_sha256="m", show_progress=False,
                            refresh_labels=True)
    assert (result.scored, result.failed, result.skipped, result.relabelled) == (0, 0, 6, 6)
    refreshed = _scores(samples)
    labels = dict(zip(manifest["sample_id"], manifest["label"], strict=True))
    assert {key: row["label"] for key, row in refreshed.items()} == labels
    assert {key: row["score"] for key, row in refreshed.items()} == {key: row["score"] for key, row in scored.items()}
    studies = read_rows(output)[1]
    assert len(studies) == 3 and all(row["label"] == "1" for row in studies)  # each study holds a positive sample
    assert read_sidecar(output)["counts"]["labels_refreshed"] == 6

    # without refresh_labels the labels already in the output stay as they are
    again = score_manifest(stand_in_run, unlabelled, output, options, model_sha256="m", show_progress=False)
    assert (again.scored, again.relabelled) == (0, 0)
    assert {row["label"] for row in _scores(samples).values()} == {"0", "1"}


def test_a_folder_is_indexed_with_the_rules_medrec_run_recorded(tmp_path):
    """``medrec run`` keeps its recipe, index rules included, in RUN/workflow.yaml (a fold's two levels up);
    ``medrec train`` records none, so its runs index with the defaults."""
    import yaml

    from medrec.errors import ModelError
    from medrec.index import SelectionRules
    from medrec.score.scoring_run import selection_rules_of
    from medrec.workflow import dump_workflow, load_workflow

    (tmp_path / "scans").mkdir()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"scans": "scans", "labels": "labels.csv"},
                                      "index": {"rules": {"modalities": ["CT"], "min_slices": 5,
                                                          "exclude": ["*_scout*"]}}}))
    run = tmp_path / "run"
    (run / "folds" / "fold_0").mkdir(parents=True)
    assert selection_rules_of(run) is None
    (run / "workflow.yaml").write_text(dump_workflow(load_workflow(recipe)))
    expected = SelectionRules(modalities=("CT",), min_slices=5, exclude=("*_scout*",))
    assert selection_rules_of(run) == expected
    assert selection_rules_of(run / "folds" / "fold_0") == expected
    (run / "workflow.yaml").write_text("index:\n  rules:\n    min_slices: many\n")
    with pytest.raises(ModelError, match=r"workflow\.yaml: index\.rules"):
        selection_rules_of(run)
