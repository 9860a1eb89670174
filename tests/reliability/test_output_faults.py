"""A full disk or a read-only output folder: one clear error line, no half-written outputs, a rerun completes.

ENOSPC and EACCES / EROFS are injected at the operating-system boundary (``pipeline_faults.DiskFull``
and ``ReadOnly``), in-process through ``medrec.cli.main``; the ``chmod`` variants run where the
suite does not run as root.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medrec.atomicio import append_line, read_complete_lines
from medrec.checkpoint import load_checkpoint, save_checkpoint
from medrec.errors import OutputError

from .pipeline_faults import (
    COHORT,
    DiskFull,
    ReadOnly,
    assert_one_line_error,
    check_folder,
    single_thread,
    temp_files,
    write_train_config,
)


def _chmod_blocks_writes() -> bool:
    """False where the user ignores directory permissions (root with CAP_DAC_OVERRIDE)."""
    if os.name != "posix":
        return False
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "ro"
        folder.mkdir(mode=0o555)
        try:
            (folder / "probe").touch()
        except PermissionError:
            return True
        finally:
            folder.chmod(0o755)
    return False


ROOT_IGNORES_CHMOD = pytest.mark.skipif(
    not _chmod_blocks_writes(),
    reason="this user ignores directory permissions (root), so chmod 0o555 cannot make a folder read-only",
)


class _Died(BaseException):
    """Stands for the process dying at an injected point (nothing after it runs)."""


# ------------------------------------------------------------------------------------------------
# The building blocks: appended lines and checkpoint pairs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0, 5, 24])
def test_append_on_a_full_disk_raises_and_leaves_no_partial_line(tmp_path, monkeypatch, budget):
    log = tmp_path / "out" / "metrics.jsonl"
    append_line(log, '{"epoch": 1}')
    before = log.read_bytes()
    with monkeypatch.context() as patch:
        DiskFull(tmp_path / "out", budget).install(patch.setattr)
        with pytest.raises(OutputError, match=r"metrics\.jsonl.*disk full"):
            append_line(log, '{"epoch": 2, "train_loss": 0.123456789}')
    assert log.read_bytes() == before  # a short write is neither kept nor reported as success
    append_line(log, '{"epoch": 2}')
    assert read_complete_lines(log) == ['{"epoch": 1}', '{"epoch": 2}']


def test_temp_files_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    import subprocess

    from medrec.atomicio import write_text

    finished = subprocess.Popen(["true"])
    finished.wait()  # a writer that no longer runs
    dead = tmp_path / f".report.json.{finished.pid}-k1ll3d00.tmp"
    alive = tmp_path / f".report.json.{os.getppid()}-st1llw0r.tmp"  # a writer that still runs
    foreign = tmp_path / ".notes.tmp"  # not written by medrec: no pid in its name
    for path in (dead, alive, foreign):
        path.write_text("partial")
    write_text(tmp_path / "report.json", "{}\n")
    assert not dead.exists() and alive.exists() and foreign.exists()
    assert (tmp_path / "report.json").read_text() == "{}\n"


def _state(value: float) -> dict:
    return {"epoch": int(value), "model": {"w": torch.full((64,), value)}, "loop": {"best_epoch": int(value)}}


@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_checkpoint_interrupted_at_any_step_loads_the_old_or_the_new_state(tmp_path, monkeypatch, step):
    stem = tmp_path / "checkpoint_last"
    save_checkpoint(stem, _state(1))
    real_replace, calls = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if len(calls) == step:
            raise _Died
        calls.append(dst)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    if step < 3:
        with pytest.raises(_Died):
            save_checkpoint(stem, _state(2))
    else:
        save_checkpoint(stem, _state(2))
    monkeypatch.undo()
    loaded = load_checkpoint(stem)
    # the JSON (second rename) commits the new state: before it the old one loads, after it the new one
    expected = 1 if step < 2 else 2
    assert loaded["epoch"] == expected
    assert torch.equal(loaded["model"]["w"], torch.full((64,), float(expected)))
    save_checkpoint(stem, _state(3))  # the next save works whatever was left behind
    assert load_checkpoint(stem)["epoch"] == 3


@pytest.mark.parametrize("budget", [0, 200, 336, 600])
def test_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch, budget):
    stem = tmp_path / "checkpoint_last"
    save_checkpoint(stem, _state(1))
    with monkeypatch.context() as patch:
        DiskFull(tmp_path, budget).install(patch.setattr)
        with pytest.raises(OutputError, match="disk full"):
            save_checkpoint(stem, _state(2))
    assert load_checkpoint(stem)["epoch"] == 1
    assert temp_files(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# train and report on read-only folders (fast: they fail before training / at the first write)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    from medrec.index import index_folder
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("tiny_config")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = generate_cohort(root / "scans", **COHORT)
        index_folder(root / "scans", root / "index", labels=cohort.labels_csv, show_progress=False)
    return write_train_config(root / "train.yaml", root / "index" / "manifest.csv")


@pytest.fixture(scope="module")
def predictions_csv(tmp_path_factory) -> Path:
    """Forty scored samples of twenty patients, without a run (the report takes --threshold)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    scores = np.clip(0.3 * labels + rng.uniform(0, 0.7, 40), 0, 1)
    frame = pd.DataFrame({
        "sample_id": [f"s{i:03d}" for i in range(40)], "patient_id": [f"p{i // 2:03d}" for i in range(40)],
        "study_uid": [f"1.2.3.{i}" for i in range(40)], "score": scores,
        "prediction": (scores >= 0.5).astype(int), "label": labels, "error": "",
    })
    path = tmp_path_factory.mktemp("predictions") / "predictions.csv"
    frame.to_csv(path, index=False)
    return path


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "keep.txt").write_text("untouched\n")
    return folder


@pytest.mark.parametrize("below", [False, True], ids=["into-the-folder", "below-the-folder"])
def test_train_into_a_read_only_folder_is_one_clear_error(tmp_path, monkeypatch, run_cli, tiny_config, below):
    folder = _read_only_folder(tmp_path)
    out = folder / "run" if below else folder
    with monkeypatch.context() as patch:
        ReadOnly(folder, errno.EACCES).install(patch.setattr)
        code, output = run_cli(["train", tiny_config, "-o", out])
    line = assert_one_line_error(code, output, str(folder), "Permission denied")
    assert "choose" in line  # says what to do
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


def test_report_into_a_read_only_folder_is_one_clear_error(tmp_path, monkeypatch, run_cli, predictions_csv):
    folder = _read_only_folder(tmp_path)
    args = ["report", predictions_csv, "-o", folder / "report", "--threshold", "0.5", "--bootstrap", "50"]
    with monkeypatch.context() as patch:
        ReadOnly(folder, errno.EROFS).install(patch.setattr)
        code, output = run_cli(args)
    assert_one_line_error(code, output, str(folder), "Read-only file system")
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


@ROOT_IGNORES_CHMOD
@pytest.mark.parametrize("below", [False, True], ids=["into-the-folder", "below-the-folder"])
def test_train_into_a_chmod_read_only_folder_is_one_clear_error(tmp_path, run_cli, tiny_config, below):
    folder = _read_only_folder(tmp_path)
    folder.chmod(0o555)
    try:
        code, output = run_cli(["train", tiny_config, "-o", folder / "run" if below else folder])
    finally:
        folder.chmod(0o755)
    assert_one_line_error(code, output, str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


@ROOT_IGNORES_CHMOD
def test_report_into_a_chmod_read_only_folder_is_one_clear_error(tmp_path, run_cli, predictions_csv):
    folder = _read_only_folder(tmp_path)
    folder.chmod(0o555)
    try:
        code, output = run_cli(["report", predictions_csv, "-o", folder / "report", "--threshold", "0.5",
                                "--bootstrap", "50"])
    finally:
        folder.chmod(0o755)
    assert_one_line_error(code, output, str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


# ------------------------------------------------------------------------------------------------
# Full disk during train, score and report; score on a read-only folder (need the trained tiny run)
# ------------------------------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.7, 0.97])
def test_train_on_a_full_disk_stops_cleanly_and_resumes(tmp_path, monkeypatch, run_cli, tiny_pipeline, fraction):
    out = tmp_path / "run"
    with single_thread():
        with monkeypatch.context() as patch:
            DiskFull(tmp_path, int(fraction * tiny_pipeline.written["train"])).install(patch.setattr)
            code, output = run_cli(tiny_pipeline.train_args(out))
        assert_one_line_error(code, output, str(out), "disk full")
        assert temp_files(tmp_path) == []
        check_folder(tmp_path)  # every file there is complete
        assert not (out / "model.json").exists()
        code, output = run_cli(tiny_pipeline.train_args(out, resume=True))
    assert code == 0, output
    assert _sha(out / "model.safetensors") == _sha(tiny_pipeline.run / "model.safetensors")
    assert (out / "model.json").read_bytes() == (tiny_pipeline.run / "model.json").read_bytes()
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert temp_files(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.0, 0.4, 0.8])
def test_score_on_a_full_disk_stops_cleanly_and_resumes(tmp_path, monkeypatch, run_cli, tiny_pipeline, fraction):
    out = tmp_path / "predictions.csv"
    reference = pd.read_csv(tiny_pipeline.predictions, dtype=str, keep_default_na=False)
    with single_thread():
        with monkeypatch.context() as patch:
            DiskFull(tmp_path, int(fraction * tiny_pipeline.written["score"])).install(patch.setattr)
            code, output = run_cli(tiny_pipeline.score_args(out))
        assert_one_line_error(code, output, str(tmp_path), "disk full")
        assert temp_files(tmp_path) == []
        check_folder(tmp_path)  # no torn line either
        code, output = run_cli(tiny_pipeline.score_args(out))
    assert code == 0, output
    rows = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert sorted(rows["sample_id"]) == sorted(reference["sample_id"])  # each sample exactly once
    merged = rows.merge(reference, on="sample_id", suffixes=("", "_ref"))
    np.testing.assert_allclose(merged["score"].astype(float), merged["score_ref"].astype(float), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("code_", [errno.EACCES, errno.EROFS], ids=["EACCES", "EROFS"])
def test_score_into_a_read_only_folder_is_one_clear_error(tmp_path, monkeypatch, run_cli, tiny_pipeline, code_):
    folder = _read_only_folder(tmp_path)
    with monkeypatch.context() as patch:
        ReadOnly(folder, code_).install(patch.setattr)
        code, output = run_cli(tiny_pipeline.score_args(folder / "predictions.csv"))
    assert_one_line_error(code, output, str(folder), os.strerror(code_))
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


@pytest.mark.slow
@ROOT_IGNORES_CHMOD
def test_score_into_a_chmod_read_only_folder_is_one_clear_error(tmp_path, run_cli, tiny_pipeline):
    folder = _read_only_folder(tmp_path)
    folder.chmod(0o555)
    try:
        code, output = run_cli(tiny_pipeline.score_args(folder / "predictions.csv"))
    finally:
        folder.chmod(0o755)
    assert_one_line_error(code, output, str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.3, 0.97])
def test_report_on_a_full_disk_stops_cleanly_and_reruns(tmp_path, monkeypatch, run_cli, tiny_pipeline, fraction):
    out = tmp_path / "report"
    with monkeypatch.context() as patch:
        DiskFull(tmp_path, int(fraction * tiny_pipeline.written["report"])).install(patch.setattr)
        code, output = run_cli(tiny_pipeline.report_args(out))
    assert_one_line_error(code, output, str(out), "disk full")
    assert temp_files(tmp_path) == []
    check_folder(tmp_path)
    assert not (out / "report.json").exists()  # written last: a report without it is recognisably unfinished
    code, output = run_cli(tiny_pipeline.report_args(out))
    assert code == 0, output
    for path in check_folder(tiny_pipeline.report):
        assert (out / path.relative_to(tiny_pipeline.report)).read_bytes() == path.read_bytes(), path
    shutil.rmtree(out)
