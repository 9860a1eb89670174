"""Split summaries of a cohort with more than two classes: counts per class, no positive class."""

from __future__ import annotations

import pandas as pd

from medrec.cli import main
from medrec.manifest import write_manifest
from medrec.split import make_splits, split_summary

CLASSES = ("grade_1", "grade_2", "grade_3")  # none reads as negative: every class would be "positive"


def _three_classes(make_cohort) -> pd.DataFrame:
    frame = make_cohort(36, seed=5)
    frame["label"] = [CLASSES[p % 3] for p in range(len(frame))]
    return frame


def test_summary_counts_each_class_per_partition(make_cohort) -> None:
    frame = _three_classes(make_cohort)
    splits = make_splits(frame, val=0.2, test=0.2, seed=0)
    summary = split_summary(frame, splits).set_index("split")

    assert list(summary.columns) == ["patients", "studies", "samples", *CLASSES]
    assert "positives" not in summary.columns
    truth = splits.merge(frame[["sample_id", "label"]], on="sample_id")
    for name in ("train", "val", "test"):
        counts = truth.loc[truth["split"] == name, "label"].value_counts()
        assert [summary.loc[name, label] for label in CLASSES] == [int(counts.get(label, 0)) for label in CLASSES]
    assert [summary.loc["total", label] for label in CLASSES] == [12, 12, 12]
    assert summary.loc["total", "samples"] == 36


def test_binary_summary_keeps_its_positives(make_cohort) -> None:
    frame = make_cohort(20, seed=4)
    summary = split_summary(frame, make_splits(frame, val=0.2, test=0.2, seed=0)).set_index("split")
    assert summary.loc["total", "positives"] == int((frame["label"] == "1").sum())


def test_cli_prints_counts_per_class_not_a_positive_class(tmp_path, make_cohort, capsys) -> None:
    path = tmp_path / "manifest.csv"
    write_manifest(_three_classes(make_cohort), path)
    try:
        main(["split", str(path), "-o", str(tmp_path / "splits.csv"), "--no-pixel-check"])
    except SystemExit as stop:
        assert not stop.code
    err = " ".join(capsys.readouterr().err.split())
    assert "positive" not in err
    assert "3 classes, samples per class" in err
    assert all(label in err for label in CLASSES)
    assert "│ total │ 36 │ 36 │ 36 │ 12 │ 12 │ 12 │" in err
