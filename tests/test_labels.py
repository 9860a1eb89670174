"""The one binary-label vocabulary (medrec.labels) and its use by split, training setup and report."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from medrec.errors import LabelsError
from medrec.labels import (
    NEGATIVE_TOKENS,
    POSITIVE_TOKENS,
    map_to_classes,
    normalise_label,
    polarity,
    positive_labels,
    resolve_positive,
)
from medrec.report.analysis import analyse_predictions
from medrec.split import split_summary
from medrec.train.setup import label_space

README = Path(__file__).resolve().parents[1] / "README.md"

# (negative, positive): every pair the README promises, and pairs seen on exports from other sites.
PAIRS: list[tuple[str, str]] = [
    ("0", "1"),
    ("0.0", "1.0"),
    ("false", "true"),
    ("negative", "positive"),
    ("normal", "tumor"),
    ("normal", "abnormal"),
    ("no", "yes"),
    ("benign", "malignant"),
    ("healthy", "disease"),
    ("absent", "present"),
    ("control", "case"),
    ("none", "lesion"),
    ("no lesion", "lesion"),
    ("no_lesion", "lesion"),
    ("lesion-free", "lesion"),
    ("no finding", "finding"),
    ("no tumor", "tumour"),
    ("neg", "pos"),
    ("normal", "cancer"),
]


def test_vocabularies_are_disjoint_and_normalised():
    assert not NEGATIVE_TOKENS & POSITIVE_TOKENS
    assert all(normalise_label(token) == token for token in NEGATIVE_TOKENS | POSITIVE_TOKENS)
    assert normalise_label("  No_Lesion ") == normalise_label("no-lesion") == "no lesion"
    assert normalise_label("NO   lesion") == "no lesion"
    assert normalise_label("-1") == "-1"  # a sign is not a word joiner
    assert polarity("-1") is None and polarity(" TRUE ") is True and polarity("Lesion-Free") is False


def test_readme_pairs_are_covered():
    sentence = re.search(r"Binary labels may be (.+?);", README.read_text(encoding="utf-8").replace("\n", " "))
    assert sentence is not None, "README no longer lists the binary label pairs"
    listed = re.findall(r"`([^`/]+)/([^`/]+)`", sentence.group(1))
    assert listed, sentence.group(1)
    covered = {frozenset(pair) for pair in PAIRS}
    assert all(frozenset(pair) in covered for pair in listed), listed


@pytest.mark.parametrize(("negative", "positive"), PAIRS)
def test_resolve_positive_known_pairs(negative: str, positive: str):
    assert resolve_positive([negative, positive, positive]) == positive
    assert resolve_positive([positive, "", negative, None]) == positive
    assert resolve_positive([negative.upper(), f" {positive.title()} "]) == positive.title()


def test_one_known_value_decides_the_other():
    assert resolve_positive(["normal", "pneumonia"]) == "pneumonia"
    assert resolve_positive(["glioma", "none"]) == "glioma"
    assert resolve_positive(["tumor", "cyst"]) == "tumor"
    assert resolve_positive(["1"]) == "1"


@pytest.mark.parametrize(("values", "reason"), [
    (["cat", "dog"], "neither is a known"),
    (["normal", "healthy"], "both read as negative"),
    (["tumor", "lesion"], "both read as positive"),
    (["0", "1", "2"], "takes two label values, found 3"),
    (["0"], "only value is a negative label"),
    (["grade"], "only value is not a known label"),
    ([], "no label value"),
])
def test_ambiguous_sets_raise_naming_the_values(values: list[str], reason: str):
    with pytest.raises(LabelsError, match=re.escape(reason)) as caught:
        resolve_positive(values, source="site.csv", fix="say which")
    message = str(caught.value)
    assert message.startswith("site.csv: ")
    assert all(repr(value) in message for value in values)


def test_explicit_positive_class():
    assert resolve_positive(["cat", "dog"], "cat") == "cat"
    assert resolve_positive(["normal", "tumor"], "normal") == "normal"  # an explicit choice beats the vocabulary
    assert resolve_positive(["0"], "1") == "1"  # an all-negative set
    with pytest.raises(LabelsError, match=r"'tumor' is neither of them.*\['cat', 'dog'\]|\['cat', 'dog'\].*'tumor'"):
        resolve_positive(["cat", "dog"], "tumor")
    with pytest.raises(LabelsError, match="found 3"):
        resolve_positive(["a", "b", "c"], "a")


def test_map_to_classes_by_polarity():
    assert map_to_classes(["normal", "tumor", "tumor", ""], ["0", "1"], "1") == {"normal": "0", "tumor": "1"}
    assert map_to_classes(["0", "1"], ["normal", "tumor"], "tumor") == {"0": "normal", "1": "tumor"}
    assert map_to_classes(["lesion", "no lesion"], ["0", "1"], "1") == {"no lesion": "0", "lesion": "1"}
    # The run's positive class is whatever the run says, not what its name reads as.
    assert map_to_classes(["normal", "tumor"], ["0", "1"], "0") == {"normal": "1", "tumor": "0"}
    # The labels already are the run's classes: by name, whatever the vocabulary says.
    assert map_to_classes(["cat", "dog"], ["cat", "dog"], "cat") == {"cat": "cat", "dog": "dog"}
    assert map_to_classes(["1"], ["0", "1"], "1") == {"1": "1"}
    # One value: by its own polarity.
    assert map_to_classes(["normal", "normal"], ["0", "1"], "1") == {"normal": "0"}
    assert map_to_classes(["tumor"], ["benign", "malignant"], "malignant") == {"tumor": "malignant"}
    # An explicit site positive decides what the vocabulary cannot.
    assert map_to_classes(["cat", "dog"], ["0", "1"], "1", positive="dog") == {"cat": "0", "dog": "1"}


@pytest.mark.parametrize(("values", "classes", "positive", "expected"), [
    (["cat", "dog"], ["0", "1"], "1", "cannot tell which label is positive"),
    (["normal", "healthy"], ["0", "1"], "1", "both read as negative"),
    (["grade"], ["0", "1"], "1", "not a known positive or negative label"),
    (["0", "1", "unknown"], ["0", "1"], "1", "at most two label values"),
    (["normal", "tumor"], ["glioma", "meningioma", "normal"], None, "only a binary run's classes"),
    (["1", "negative"], ["0", "1"], "0", "'1' is a class of the run but reads as '0'"),
])
def test_map_to_classes_errors_name_both_vocabularies(values, classes, positive, expected):
    with pytest.raises(LabelsError, match=re.escape(expected)) as caught:
        map_to_classes(values, classes, positive, source="site.csv")
    message = str(caught.value)
    assert message.startswith("site.csv: ")
    assert all(repr(value) in message for value in values) and all(repr(name) in message for name in classes)


# --- one answer in split, training setup and report --------------------------------------------------------------


def _predictions(negative: str, positive: str) -> pd.DataFrame:
    rows = [(0.9, positive), (0.7, positive), (0.4, positive), (0.6, negative), (0.2, negative), (0.1, negative)]
    return pd.DataFrame([{"sample_id": f"s{i}", "patient_id": f"P{i}", "study_uid": f"1.{i}", "score": score,
                          "prediction": positive if score >= 0.5 else negative, "label": label, "error": ""}
                         for i, (score, label) in enumerate(rows)])


@pytest.mark.parametrize(("negative", "positive"), [("none", "lesion"), ("no lesion", "lesion"), ("normal", "tumor"),
                                                    ("0", "1")])
def test_split_training_and_report_agree(negative: str, positive: str):
    labels = pd.Series([negative, positive, positive, negative, negative])
    assert positive_labels(labels) == {positive}
    assert label_space(labels, None, None).positive_class == positive
    report = analyse_predictions(_predictions(negative, positive), 0.5, "given", n_boot=50, seed=0)
    assert report["positive_label"] == positive and report["classes"] == [negative, positive]
    assert report["confusion_matrix"] == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}

    manifest = pd.DataFrame({"sample_id": [f"s{i}" for i in range(5)], "patient_id": [f"P{i}" for i in range(5)],
                             "label": labels})
    splits = manifest[["sample_id", "patient_id"]].assign(split=["train", "train", "val", "test", "test"])
    summary = split_summary(manifest, splits).set_index("split")
    assert summary.loc["total", "positives"] == 2
    assert summary.loc["train", "positives"] == 1 and summary.loc["test", "positives"] == 0


def test_ambiguous_labels_fail_training_and_report_but_not_the_split():
    labels = pd.Series(["cat", "dog", "dog", "cat"])
    with pytest.raises(LabelsError, match="data.positive_class"):
        label_space(labels, None, None)
    with pytest.raises(LabelsError, match="--positive-label"):
        analyse_predictions(_predictions("cat", "dog"), 0.5, "given", n_boot=50, seed=0)
    with pytest.raises(LabelsError, match="data.positive_class"):
        positive_labels(labels)
    manifest = pd.DataFrame({"sample_id": list("abcd"), "patient_id": list("abcd"), "label": labels})
    splits = manifest[["sample_id", "patient_id"]].assign(split=["train", "train", "val", "test"])
    summary = split_summary(manifest, splits).set_index("split")
    assert summary.loc["total", "samples"] == 4 and summary.loc["total", "positives"] == "-"
    named = split_summary(manifest, splits, positive_class="cat").set_index("split")
    assert named.loc["total", "positives"] == 2 and named.loc["train", "positives"] == 1
    assert positive_labels(labels, "cat") == {"cat"}


def test_multiclass_split_positives_are_the_non_negative_classes():
    assert positive_labels(["none", "hypodense", "hyperdense"]) == {"hypodense", "hyperdense"}
    assert positive_labels(["normal", "benign", "malignant"]) == {"malignant"}
