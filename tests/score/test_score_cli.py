from __future__ import annotations

import json

import pytest
from score_helpers import run_cli

from medrec.cli import main
from medrec.score import ScoreOptions, read_rows, score_manifest


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "Examples:" in out and "--merge" in out and "--retry-errors" in out


def test_pickle_file_as_run_is_refused(tmp_path, capsys, cohort):
    manifest = tmp_path / "manifest.csv"
    cohort.to_csv(manifest, index=False)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"\x80\x04K\x01.")  # a pickle
    code, err = run_cli(capsys, checkpoint, manifest, "-o", tmp_path / "p.csv")
    assert code != 0
    assert "run directory" in err and "pickle" in err
    assert not (tmp_path / "p.csv").exists()


def test_run_folder_with_a_pickle_instead_of_safetensors_is_refused(tmp_path, capsys, cohort):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"format": "medrec-run-1", "architecture": {}, "classes": ["0", "1"],
                                                "plan": {}, "weights": {"file": "model.safetensors"}}))
    (run / "model.pt").write_bytes(b"\x80\x04K\x01.")
    manifest = tmp_path / "manifest.csv"
    cohort.to_csv(manifest, index=False)
    code, err = run_cli(capsys, run, manifest, "-o", tmp_path / "p.csv")
    assert code != 0
    assert "model.pt" in err and "safetensors" in err
    assert "Traceback" not in err


def test_wrong_argument_count_and_missing_input(tmp_path, capsys):
    code, err = run_cli(capsys, tmp_path, "-o", tmp_path / "p.csv")
    assert code != 0 and "--merge" in err
    code, err = run_cli(capsys, "--level", "organ", tmp_path, tmp_path / "x", "-o", tmp_path / "p.csv")
    assert code != 0 and "--level" in err


def test_merge_through_the_cli(tmp_path, capsys, cohort, stand_in_run):
    parts = []
    for i in range(2):
        part = tmp_path / f"part{i}.csv"
        score_manifest(stand_in_run, cohort, part, ScoreOptions(num_parts=2, part_id=i), model_sha256="m",
                       show_progress=False)
        parts.append(part)
    code, err = run_cli(capsys, "--merge", "-o", tmp_path / "all.csv", *parts)
    assert code == 0, err
    assert sorted(row["sample_id"] for row in read_rows(tmp_path / "all.csv")[1]) == sorted(cohort["sample_id"])
    code, err = run_cli(capsys, "--merge", "-o", tmp_path / "half.csv", parts[0])
    assert code != 0 and "missing" in err
