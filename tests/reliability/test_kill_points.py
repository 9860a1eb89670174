"""SIGKILL at deterministic points of index, train, score and report, then a rerun to completion.

Kill points are commit points of writes (see ``pipeline_faults.WritePoints``), picked at 10 %,
35 %, 60 % and 85 % of the commit points that an uninterrupted run of the same command made (15 %,
50 %, 85 % for the report, whose every rerun draws all figures again; every point for index, plus
each step of a checkpoint commit for train), killed alternately just before and just after an
atomic rename (appended lines are torn in half). After
every kill each output is absent, the old complete file or the new complete file; the rerun ends
with exactly what the uninterrupted run wrote.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medrec.checkpoint import load_checkpoint

from .pipeline_faults import (
    check_folder,
    cli,
    kill_points,
    run_killed,
    single_thread,
    temp_files,
)

pytestmark = pytest.mark.slow


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in check_folder(folder)}


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def test_index_killed_at_every_commit_point(tiny_pipeline, tmp_path):
    reference = _snapshot(tiny_pipeline.root / "index")
    assert {"manifest.csv", "qc.csv"} <= set(reference)
    total = len(tiny_pipeline.points["index"])
    assert total >= 2
    for point in range(total):
        for after in (False, True):
            out = tmp_path / f"index-{point}-{after}"
            assert run_killed(tiny_pipeline.index_args(out), out, point, after)
            for path in check_folder(out):  # every file there is the complete new one
                assert path.read_bytes() == reference[str(path.relative_to(out))], path
            assert cli(tiny_pipeline.index_args(out)) == 0
            assert _snapshot(out) == reference
            assert temp_files(out) == []


def test_train_killed_then_resumed_ends_with_the_uninterrupted_weights(tiny_pipeline, tmp_path):
    reference = tiny_pipeline.run
    fixed = {name: (reference / name).read_bytes() for name in
             ("model.json", "model.safetensors", "splits.csv", "plan.json", "val_predictions.csv", "manifest.csv")}
    reference_epochs = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in reference_epochs] == [1, 2, 3]
    names = tiny_pipeline.points["train"]
    points = kill_points(len(names))
    assert len(points) == 4
    # and right after each step around the second epoch's checkpoint commit (its JSON)
    second = [i for i, name in enumerate(names) if name == "checkpoint_last.json"][1]
    points += [(i, True) for i in range(second - 1, second + 2) if (i, True) not in points]
    for point, after in points:
        out = tmp_path / f"run-{point}"
        assert run_killed(tiny_pipeline.train_args(out), out, point, after), point
        assert not (out / "model.json").exists() or (out / "model.json").read_bytes() == fixed["model.json"]
        for path in check_folder(out, torn_tail_allowed=True):
            if path.name in fixed and path.name != "model.safetensors":  # best weights change per epoch
                assert path.read_bytes() == fixed[path.name], path
        finished = load_checkpoint(out / "checkpoint_last")["epoch"] if (out / "checkpoint_last.json").exists() else 0

        assert cli(tiny_pipeline.train_args(out, resume=True)) == 0, point
        if finished:  # resumed from the last finished epoch, not from scratch
            assert f"resumed after epoch {finished} " in (out / "train.log").read_text(), point
        check_folder(out)
        for name, content in fixed.items():
            assert (out / name).read_bytes() == content, f"kill point {point}: {name} differs"
        epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [e["epoch"] for e in epochs] == [1, 2, 3], point
        assert [e["train_loss"] for e in epochs] == [e["train_loss"] for e in reference_epochs], point
        assert temp_files(out) == [], point


def test_score_killed_then_rerun_scores_each_study_once(tiny_pipeline, tmp_path):
    reference = pd.read_csv(tiny_pipeline.predictions, dtype=str, keep_default_na=False).set_index("sample_id")
    manifest = pd.read_csv(tiny_pipeline.manifest, dtype=str, keep_default_na=False)
    assert sorted(reference.index) == sorted(manifest["sample_id"])
    for point, after in kill_points(len(tiny_pipeline.points["score"])):
        out = tmp_path / f"score-{point}" / "predictions.csv"
        assert run_killed(tiny_pipeline.score_args(out), out.parent, point, after), point
        check_folder(out.parent, torn_tail_allowed=True)

        assert cli(tiny_pipeline.score_args(out)) == 0, point
        check_folder(out.parent)
        rows = pd.read_csv(out, dtype=str, keep_default_na=False)
        assert sorted(rows["sample_id"]) == sorted(manifest["sample_id"]), point  # each study exactly once
        assert (rows["error"] == "").all()
        for row in rows.itertuples():
            assert float(row.score) == pytest.approx(float(reference.loc[row.sample_id, "score"]), abs=1e-6)
            assert row.prediction == reference.loc[row.sample_id, "prediction"]
        sidecar = json.loads((out.parent / "predictions.csv.json").read_text())
        assert sidecar["status"] == "complete" and sidecar["counts"]["rows"] == len(manifest)
        assert temp_files(out.parent) == [], point


def test_report_killed_over_an_old_report_leaves_old_or_new_files(tiny_pipeline, tmp_path):
    old = _snapshot(tiny_pipeline.report)
    assert cli(tiny_pipeline.report_args(tmp_path / "new", seed=1)) == 0
    new = _snapshot(tmp_path / "new")
    assert set(old) == set(new) and {"report.json", "report.pdf", "report.html"} <= set(new)
    assert old["report.json"] != new["report.json"]  # another bootstrap seed: other intervals
    total = len(new)  # one atomic rename per file
    for point, after in kill_points(total, fractions=(0.15, 0.5, 0.85)):
        out = tmp_path / f"report-{point}"
        shutil.copytree(tiny_pipeline.report, out)
        assert run_killed(tiny_pipeline.report_args(out, seed=1), out, point, after), point
        for path in check_folder(out):
            name = str(path.relative_to(out))
            assert path.read_bytes() in (old[name], new[name]), f"kill point {point}: {name} is neither old nor new"
        assert cli(tiny_pipeline.report_args(out, seed=1)) == 0
        assert _snapshot(out) == new, point
        assert temp_files(out) == [], point
