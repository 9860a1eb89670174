from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from medrec.errors import ConfigError
from medrec.train.threshold import choose_threshold, sensitivity_specificity


def test_youden_on_hand_made_case():
    # positives 0.9, 0.8, 0.4; negatives 0.7, 0.3, 0.2, 0.1
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1])
    # t=0.8: sens 2/3, spec 1 -> J 0.667; t=0.4: sens 1, spec 3/4 -> J 0.75 (the best)
    choice = choose_threshold(labels, scores, "youden")
    assert choice.value == pytest.approx(0.4)
    assert choice.sensitivity == pytest.approx(1.0)
    assert choice.specificity == pytest.approx(0.75)
    assert choice.method == "youden"


def test_youden_matches_brute_force():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(labels * 1.0, 1.0)
    choice = choose_threshold(labels, scores, "youden")
    best = max(
        (sensitivity_specificity(labels, scores, t) for t in np.unique(scores)),
        key=lambda pair: pair[0] + pair[1],
    )
    assert choice.sensitivity + choice.specificity == pytest.approx(best[0] + best[1])
    fpr, tpr, _ = roc_curve(labels, scores)
    assert choice.sensitivity - (1 - choice.specificity) == pytest.approx((tpr - fpr).max())


def test_target_sensitivity_takes_highest_threshold_reaching_target():
    labels = np.array([1] * 10 + [0] * 10)
    scores = np.concatenate([np.linspace(0.5, 0.95, 10), np.linspace(0.0, 0.6, 10)])
    choice = choose_threshold(labels, scores, "target_sensitivity", target_sensitivity=0.9)
    assert choice.sensitivity >= 0.9
    assert choice.method == "target_sensitivity:0.9"
    # 9 of 10 positives are >= the second-lowest positive score (0.55); no higher threshold reaches 0.9
    assert choice.value == pytest.approx(0.55)
    sens, spec = sensitivity_specificity(labels, scores, choice.value)
    assert (sens, spec) == pytest.approx((choice.sensitivity, choice.specificity))


def test_target_sensitivity_one_takes_lowest_positive():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.3, 0.2, 0.9, 0.5])
    choice = choose_threshold(labels, scores, "target_sensitivity", target_sensitivity=1.0)
    assert choice.value == pytest.approx(0.3)
    assert choice.sensitivity == 1.0 and choice.specificity == 0.5


def test_bad_inputs():
    with pytest.raises(ConfigError, match="threshold.method"):
        choose_threshold([0, 1], [0.1, 0.9], "f1")
    with pytest.raises(ValueError, match="both positive and negative"):
        choose_threshold([1, 1], [0.1, 0.9])
