"""``medrec split`` end to end through the CLI entry point."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from medrec.cli import main
from medrec.manifest import write_manifest


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture
def manifest_csv(tmp_path, make_cohort):
    frame = make_cohort(30, studies_per_patient=2, seed=3)
    frame.loc[0, "label"] = ""  # one unlabelled sample
    path = tmp_path / "manifest.csv"
    write_manifest(frame, path)
    return path, frame


def test_writes_then_reuses_splits(manifest_csv, tmp_path, capsys):
    path, frame = manifest_csv
    out = tmp_path / "splits.csv"
    assert run_cli(["split", str(path), "-o", str(out), "--no-pixel-check", "--stratify-by", "manufacturer"]) == 0
    splits = pd.read_csv(out, dtype=str)
    assert list(splits.columns) == ["sample_id", "patient_id", "split"]
    assert len(splits) == len(frame) - 1 and frame.loc[0, "sample_id"] not in set(splits["sample_id"])
    assert (splits.groupby("patient_id")["split"].nunique() == 1).all()
    err = capsys.readouterr().err
    assert "wrote" in err and "1 sample(s) without a label" in err and "positives" in err
    before = out.read_bytes()
    assert run_cli(["split", str(path), "-o", str(out), "--no-pixel-check", "--seed", "9"]) == 0
    assert out.read_bytes() == before  # reused, not rewritten
    assert "reused" in capsys.readouterr().err


def test_mismatching_existing_file_is_an_error_naming_overwrite(manifest_csv, tmp_path, capsys):
    path, frame = manifest_csv
    out = tmp_path / "splits.csv"
    pd.DataFrame({"sample_id": ["zzz"], "patient_id": ["P999"], "split": ["train"]}).to_csv(out, index=False)
    before = out.read_bytes()
    assert run_cli(["split", str(path), "-o", str(out), "--no-pixel-check"]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "does not match" in err
    assert out.read_bytes() == before
    assert run_cli(["split", str(path), "-o", str(out), "--no-pixel-check", "--overwrite"]) == 0
    assert len(pd.read_csv(out, dtype=str)) == len(frame) - 1


def test_kind_mismatch_is_an_error(manifest_csv, tmp_path, capsys):
    path, _ = manifest_csv
    out = tmp_path / "splits.csv"
    assert run_cli(["split", str(path), "-o", str(out), "--no-pixel-check"]) == 0
    assert run_cli(["split", str(path), "-o", str(out), "--no-pixel-check", "--folds", "5"]) == 1
    assert "5-fold split was asked for" in capsys.readouterr().err
    assert run_cli(["split", str(path), "-o", str(out), "--no-pixel-check", "--folds", "5", "--overwrite"]) == 0
    assert sorted(pd.read_csv(out, dtype=str)["split"].unique()) == [f"fold_{k}" for k in range(5)]


def test_pixel_leak_stops_before_writing(tmp_path, nifti_cohort, capsys):
    frame = nifti_cohort(6)
    for index in range(1, 6):  # every file the same content: any split leaks
        shutil.copyfile(frame.loc[0, "path"], frame.loc[index, "path"])
    path = tmp_path / "manifest.csv"
    write_manifest(frame, path)
    out = tmp_path / "splits.csv"
    assert run_cli(["split", str(path), "-o", str(out), "--workers", "1"]) == 1
    assert "identical pixel content" in capsys.readouterr().err
    assert not out.exists()
    assert run_cli(["split", str(path), "-o", str(out), "--no-pixel-check"]) == 0


def test_help_has_examples(capsys):
    assert run_cli(["split", "--help"]) == 0
    assert "Examples" in capsys.readouterr().out


@pytest.mark.parametrize(("labels", "shown"), [(("no lesion", "lesion"), "positive = lesion"),
                                               (("none", "lesion"), "positive = lesion"),
                                               (("cat", "dog"), "positive = undecided")])
def test_summary_names_the_positive_class(tmp_path, make_cohort, capsys, labels, shown):
    frame = make_cohort(20, seed=4)
    frame["label"] = frame["label"].map({"0": labels[0], "1": labels[1]})
    path = tmp_path / "manifest.csv"
    write_manifest(frame, path)
    assert run_cli(["split", str(path), "-o", str(tmp_path / "splits.csv"), "--no-pixel-check"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert shown in err
    if labels == ("cat", "dog"):
        assert "cannot tell which of ['cat', 'dog'] is the positive class" in err
