from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from medrec.config import ThresholdConfig
from medrec.errors import ConfigError
from medrec.thresholds import ThresholdRule, choose_threshold, parse_rule, sensitivity_specificity


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
    choice = choose_threshold(labels, scores, "sensitivity:0.9")
    assert choice.sensitivity >= 0.9
    assert choice.method == "sensitivity:0.9"
    # 9 of 10 positives are >= the second-lowest positive score (0.55); no higher threshold reaches 0.9
    assert choice.value == pytest.approx(0.55)
    sens, spec = sensitivity_specificity(labels, scores, choice.value)
    assert (sens, spec) == pytest.approx((choice.sensitivity, choice.specificity))


def test_target_sensitivity_one_takes_lowest_positive():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.3, 0.2, 0.9, 0.5])
    choice = choose_threshold(labels, scores, "sensitivity:1")
    assert choice.value == pytest.approx(0.3)
    assert choice.sensitivity == 1.0 and choice.specificity == 0.5


def test_specificity_takes_the_lowest_threshold_reaching_target():
    # negatives 0.1 0.2 0.3 0.5 0.7; positives 0.4 0.6 0.8 0.9
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.4, 0.6, 0.8, 0.9])
    choice = choose_threshold(labels, scores, "specificity:0.8")
    # at 0.6: 4 of 5 negatives below (spec 0.8), 3 of 4 positives at or above; 0.5 would give spec 0.6
    assert choice.value == pytest.approx(0.6)
    assert (choice.sensitivity, choice.specificity) == pytest.approx((0.75, 0.8))
    assert choice.method == "specificity:0.8"
    with pytest.raises(ValueError, match="meets specificity:1"):
        choose_threshold(np.array([1, 0]), np.array([0.2, 0.9]), "specificity:1")


@pytest.mark.parametrize(("text", "rule"), [
    ("youden", ThresholdRule("youden")), (" Youden ", ThresholdRule("youden")),
    ("sensitivity:0.95", ThresholdRule("sensitivity", 0.95)), ("specificity:.9", ThresholdRule("specificity", 0.9)),
    ("sensitivity:1", ThresholdRule("sensitivity", 1.0)),
    ("target_sensitivity:0.9", ThresholdRule("sensitivity", 0.9)),  # what runs recorded before
])
def test_one_grammar_reads_every_spelling(text, rule):
    assert parse_rule(text) == rule


@pytest.mark.parametrize("text", ["f1", "sensitivity", "sensitivity:0", "sensitivity:1.5", "specificity:-0.1",
                                  "youden:0.5", "ppv:0.9"])
def test_unknown_rules_are_refused_naming_the_setting(text):
    with pytest.raises(ConfigError, match=r"threshold\.method .* (is not a known rule|target must lie)"):
        parse_rule(text, "threshold.method")


def test_a_recipe_and_the_report_share_the_grammar():
    assert ThresholdConfig(method="specificity:0.9").rule == ThresholdRule("specificity", 0.9)
    legacy = ThresholdConfig(method="target_sensitivity", target_sensitivity=0.8)
    assert legacy.rule == ThresholdRule("sensitivity", 0.8)
    assert ThresholdConfig().rule == ThresholdRule("youden")
    with pytest.raises(ValueError, match="is not a known rule"):
        ThresholdConfig(method="f1")


def test_bad_inputs():
    with pytest.raises(ConfigError, match="not a known rule"):
        choose_threshold([0, 1], [0.1, 0.9], "f1")
    with pytest.raises(ValueError, match="both positive and negative"):
        choose_threshold([1, 1], [0.1, 0.9])


def test_the_decision_rule_is_score_at_or_above_the_threshold():
    from medrec.thresholds import is_positive

    assert is_positive(0.5, 0.5) is True and is_positive(0.4999, 0.5) is False
    np.testing.assert_array_equal(is_positive(np.array([0.2, 0.5, 0.7]), 0.5), [False, True, True])


def _lowest_specific_threshold(negatives: list[float], target: float) -> tuple[float, float]:
    """Brute force: every distinct negative score as a candidate, the lowest with specificity >= target."""
    for candidate in sorted(set(negatives)):
        specificity = sum(score < candidate for score in negatives) / len(negatives)
        if specificity >= target:
            return candidate, specificity
    raise AssertionError("no candidate meets the target")


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
def test_a_specificity_rule_on_negatives_alone_matches_brute_force(seed, target):
    from medrec.thresholds import specificity_threshold

    rng = np.random.default_rng(seed)
    negatives = np.round(rng.uniform(0, 1, 60), 2).tolist()  # rounded: ties
    value, specificity = specificity_threshold(np.array(negatives), f"specificity:{target}")
    assert (value, specificity) == pytest.approx(_lowest_specific_threshold(negatives, target))


def test_a_specificity_rule_on_negatives_agrees_with_the_two_class_choice():
    from medrec.thresholds import specificity_threshold

    rng = np.random.default_rng(0)
    negatives = rng.uniform(0, 0.5, 40)
    positives = rng.uniform(0.6, 1.0, 10)  # above every negative: the same candidates below them
    labels = np.r_[np.zeros(40), np.ones(10)]
    both = choose_threshold(labels, np.r_[negatives, positives], "specificity:0.9")
    value, specificity = specificity_threshold(negatives, "specificity:0.9")
    assert value == both.value and specificity == both.specificity


def test_too_few_negatives_for_the_rate_put_the_threshold_just_above_them():
    from medrec.thresholds import specificity_threshold

    value, specificity = specificity_threshold(np.array([0.2, 0.7, 0.4]), "specificity:0.95")
    assert 0.7 < value < 0.7 + 1e-9 and specificity == 1.0
    value, specificity = specificity_threshold(np.array([0.2, 1.0]), "specificity:0.95")
    assert value == 1.0 and specificity == 0.5  # probabilities stop at 1


def test_only_a_specificity_rule_can_be_met_on_negatives():
    from medrec.thresholds import specificity_threshold

    with pytest.raises(ValueError, match="only a specificity rule"):
        specificity_threshold(np.array([0.1, 0.2]), "youden")
    with pytest.raises(ValueError, match="finite scores"):
        specificity_threshold(np.array([]), "specificity:0.9")
