from __future__ import annotations

import pandas as pd
import pytest

from medrec.errors import ConfigError, LabelsError, ManifestError
from medrec.train.setup import check_partition, check_splits_table, label_space, labelled_rows, partition


def test_label_space_binary_positive_class():
    assert label_space(pd.Series(["normal", "abnormal"]), None, None).positive_class == "abnormal"
    assert label_space(pd.Series(["0", "1", "1"]), None, None).positive_class == "1"
    assert label_space(pd.Series(["lesion", "none"]), None, None).positive_class == "lesion"
    assert label_space(pd.Series(["cat", "dog"]), None, "cat").positive_class == "cat"
    with pytest.raises(LabelsError, match=r"'cat', 'dog'.*data\.positive_class"):
        label_space(pd.Series(["cat", "dog"]), None, None)
    space = label_space(pd.Series(["a", "b"]), ("b", "a"), "b")
    assert space.classes == ("b", "a") and space.positive_index == 0
    multi = label_space(pd.Series(["x", "y", "z"]), None, None)
    assert multi.positive_class is None and not multi.binary
    with pytest.raises(LabelsError, match="at least 2 classes"):
        label_space(pd.Series(["x", "x"]), None, None)
    with pytest.raises(LabelsError, match=r"\['z'\]"):
        label_space(pd.Series(["x", "z"]), ("x", "y"), None)


def test_labelled_rows_drops_empty_labels():
    manifest = pd.DataFrame({"sample_id": ["a", "b", "c"], "grade": ["1", "", " 2 "]})
    rows = labelled_rows(manifest, "grade")
    assert rows["sample_id"].tolist() == ["a", "c"] and rows["label"].tolist() == ["1", "2"]
    with pytest.raises(ManifestError, match="no column 'label2'"):
        labelled_rows(manifest, "label2")


def test_partition_holdout_and_folds():
    holdout = pd.DataFrame({"sample_id": list("abcd"), "patient_id": list("abcd"),
                            "split": ["train", "val", "test", "train"]})
    assert partition(holdout) == {"train": ["a", "d"], "val": ["b"], "test": ["c"]}
    folds = pd.DataFrame({"sample_id": list("abcde"), "patient_id": list("abcde"),
                          "split": ["fold_0", "fold_1", "fold_2", "test", "fold_1"]})
    assert partition(folds, fold=1) == {"train": ["a", "c"], "val": ["b", "e"], "test": ["d"]}
    with pytest.raises(ConfigError, match="split.fold 5"):
        partition(folds, fold=5)
    with pytest.raises(ManifestError, match="unknown split names"):
        check_splits_table(holdout.assign(split=["train", "dev", "test", "train"]), "splits.csv")


def test_partition_must_hold_every_class():
    parts = {"train": ["a", "b"], "val": ["c"], "test": []}
    labels = {"a": "0", "b": "1", "c": "0"}
    space = label_space(pd.Series(["0", "1"]), None, None)
    with pytest.raises(LabelsError, match="val split has no sample of class"):
        check_partition(parts, labels, space)
