"""Predictive values at a stated prevalence: Mercaldo, Lau & Zhou (2007) logit intervals, hand-computed,
and the prevalence with its source carried beside every PPV / NPV."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medrec.errors import ConfigError
from medrec.report import stats
from medrec.report.analysis import analyse_predictions
from medrec.report.document import key_figures, metrics_table, performance_section, summary_paragraph

Z95 = 1.959963984540054


def _expit(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def test_mercaldo_standard_logit_interval_on_the_apoe_example():
    # Mercaldo et al. (2007), ApoE e4 and Alzheimer's disease: 240 of 418 cases and 87 of 375 controls carry the
    # allele; prevalence 3%. Section 2.2, by hand.
    se, sp, p, n1, n0 = 240 / 418, 288 / 375, 0.03, 418, 375
    ppv_centre = math.log(se * p / ((1 - sp) * (1 - p)))
    ppv_half = Z95 * math.sqrt((1 - se) / (se * n1) + sp / ((1 - sp) * n0))
    npv_centre = math.log(sp * (1 - p) / ((1 - se) * p))
    npv_half = Z95 * math.sqrt(se / ((1 - se) * n1) + (1 - sp) / (sp * n0))
    result = stats.predictive_values_ci(tp=240, fn=178, fp=87, tn=288, prevalence=0.03)
    assert not result["adjusted"]
    assert result["ppv"][0] == pytest.approx(se * p / (se * p + (1 - sp) * (1 - p)), abs=1e-12)
    assert result["ppv"][1:] == pytest.approx((_expit(ppv_centre - ppv_half), _expit(ppv_centre + ppv_half)), abs=1e-12)
    assert result["npv"][1:] == pytest.approx((_expit(npv_centre - npv_half), _expit(npv_centre + npv_half)), abs=1e-12)
    assert result["ppv"][0] == pytest.approx(0.0711, abs=5e-5)  # 7.1%: the allele barely raises a 3% risk


def test_mercaldo_adjusted_interval_when_a_cell_is_zero():
    # 14/16 sensitivity, 16/16 specificity (no false positive) at 10% prevalence: the plug-in PPV is exactly 1.
    z2 = Z95**2
    se = (16 * 14 / 16 + z2 / 2) / (16 + z2)
    sp = (16 * 16 / 16 + z2 / 2) / (16 + z2)
    n1 = n0 = 16 + z2
    centre = math.log(se * 0.1 / ((1 - sp) * 0.9))
    half = Z95 * math.sqrt((1 - se) / (se * n1) + sp / ((1 - sp) * n0))
    result = stats.predictive_values_ci(tp=14, fn=2, fp=0, tn=16, prevalence=0.1)
    assert result["adjusted"] and result["plug_in"][0] == 1.0
    assert result["ppv"] == pytest.approx((_expit(centre), _expit(centre - half), _expit(centre + half)), abs=1e-12)
    assert result["ppv"][0] < 0.9 and result["ppv"][1] < 0.5  # not "100% (28.7-100%)"


def test_effective_sizes_widen_the_interval():
    plain = stats.predictive_values_ci(30, 10, 8, 52, 0.2)
    clustered = stats.predictive_values_ci(30, 10, 8, 52, 0.2, n_diseased=20.0, n_healthy=30.0)
    se, sp = 30 / 40, 52 / 60
    half = Z95 * math.sqrt((1 - se) / (se * 20) + sp / ((1 - sp) * 30))
    centre = math.log(se * 0.2 / ((1 - sp) * 0.8))
    assert clustered["ppv"][1:] == pytest.approx((_expit(centre - half), _expit(centre + half)), abs=1e-12)
    assert clustered["ppv"][1] < plain["ppv"][1] and clustered["ppv"][2] > plain["ppv"][2]


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(6)
    labels = np.r_[np.ones(20, int), np.zeros(30, int)]
    scores = np.clip(0.3 + 0.35 * labels + rng.normal(0, 0.15, 50), 0, 1)
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(50)], "patient_id": [f"P{i}" for i in range(50)],
                         "score": scores, "label": labels})


def test_prevalence_and_its_source_travel_with_every_predictive_value():
    report = analyse_predictions(_frame(), 0.5, "given", prevalence=0.1,
                                 prevalence_source="recipe evaluation.prevalence", n_boot=50)
    adjusted = report["prevalence_adjusted"]
    assert adjusted["prevalence"] == 0.1 and adjusted["prevalence_source"] == "recipe evaluation.prevalence"
    counts = report["confusion_matrix"]
    expected = stats.predictive_values_ci(counts["tp"], counts["fn"], counts["fp"], counts["tn"], 0.1)
    for name in ("ppv", "npv"):
        assert adjusted[name]["prevalence"] == 0.1
        assert adjusted[name]["prevalence_source"] == "recipe evaluation.prevalence"
        assert adjusted[name]["ci95"] == pytest.approx(list(expected[name][1:]))
        assert "Mercaldo" in adjusted[name]["method"] and "recipe evaluation.prevalence" in adjusted[name]["method"]
        assert report["metrics"][name]["prevalence"] == pytest.approx(0.4)
        assert report["metrics"][name]["prevalence_source"] == "test set"
        assert report["patient_level"]["metrics"][name]["prevalence"] == pytest.approx(0.4)
    # The document prints the prevalence beside each PPV / NPV.
    assert "(recipe evaluation.prevalence)" in summary_paragraph(report)
    labels = [row[0] for row in metrics_table(report["metrics"]).rows]
    assert "PPV (precision), at prevalence 40.0% (test set)" in labels
    assert ("PPV at 40.0% prevalence (test set)", ) == tuple(name for name, _, _ in key_figures(report)
                                                           if name.startswith("PPV"))
    captions = [block.caption for block in performance_section(report).blocks if hasattr(block, "caption")]
    assert any("recipe evaluation.prevalence" in caption for caption in captions)


def test_stated_prevalence_must_lie_strictly_between_zero_and_one():
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        analyse_predictions(_frame(), 0.5, "given", prevalence=1.0, n_boot=50)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        stats.predictive_values_ci(5, 1, 1, 5, 0.0)
