"""Clustered data: Obuchowski's AUC variance and design-effect-adjusted proportions.

The references here are written from the papers' formulas, loop by loop, independently of the
vectorised production code (placement values from midranks, bincounts per cluster).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medrec.report import stats
from medrec.report.analysis import analyse_predictions

Z95 = 1.959963984540054


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else (0.5 if x == y else 0.0)


def _obuchowski_reference(labels, score_rows, clusters):
    """Obuchowski (1997, Biometrics 53:567), section 2, for one or two score vectors.

    Returns the AUCs and their covariance matrix: var = S10/M + S01/N + 2 S11/(MN), and for two
    modalities cov = S10^(12)/M + S01^(12)/N + (S11^(12) + S11^(21))/(MN).
    """
    labels = list(labels)
    clusters = list(clusters)
    ids = sorted(set(clusters))
    rows = [list(row) for row in score_rows]
    positives = [i for i, label in enumerate(labels) if label == 1]
    negatives = [i for i, label in enumerate(labels) if label == 0]
    big_m, big_n = len(positives), len(negatives)
    m = {c: sum(1 for i in positives if clusters[i] == c) for c in ids}
    n = {c: sum(1 for i in negatives if clusters[i] == c) for c in ids}
    auc, v10, v01 = [], [], []
    for row in rows:
        auc.append(sum(_psi(row[i], row[j]) for i in positives for j in negatives) / (big_m * big_n))
        # V10(X_i.): sum over cluster i's positives of the fraction of all negatives they beat.
        v10.append({c: sum(sum(_psi(row[i], row[j]) for j in negatives) / big_n
                           for i in positives if clusters[i] == c) for c in ids})
        v01.append({c: sum(sum(_psi(row[i], row[j]) for i in positives) / big_m
                           for j in negatives if clusters[j] == c) for c in ids})
    i10 = sum(1 for c in ids if m[c] > 0)
    i01 = sum(1 for c in ids if n[c] > 0)
    big_i = len(ids)
    k = len(rows)
    cov = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            s10 = i10 / ((i10 - 1) * big_m) * sum((v10[a][c] - m[c] * auc[a]) * (v10[b][c] - m[c] * auc[b])
                                                  for c in ids)
            s01 = i01 / ((i01 - 1) * big_n) * sum((v01[a][c] - n[c] * auc[a]) * (v01[b][c] - n[c] * auc[b])
                                                  for c in ids)
            s11_ab = big_i / (big_i - 1) * sum((v10[a][c] - m[c] * auc[a]) * (v01[b][c] - n[c] * auc[b])
                                               for c in ids)
            s11_ba = big_i / (big_i - 1) * sum((v10[b][c] - m[c] * auc[b]) * (v01[a][c] - n[c] * auc[a])
                                               for c in ids)
            cov[a, b] = s10 / big_m + s01 / big_n + (s11_ab + s11_ba) / (big_m * big_n)
    return np.array(auc), cov


def _clustered_cohort(seed: int = 5, n_patients: int = 30):
    """Patients with 1-4 studies, outcomes and scores correlated within a patient, scores rounded (ties)."""
    rng = np.random.default_rng(seed)
    labels, scores, second, patients = [], [], [], []
    for patient in range(n_patients):
        frailty = rng.normal(0, 0.15)
        for _ in range(int(rng.integers(1, 5))):
            label = int(rng.random() < 0.45)
            labels.append(label)
            scores.append(round(float(np.clip(0.35 + 0.3 * label + frailty + rng.normal(0, 0.15), 0, 1)), 1))
            second.append(round(float(np.clip(0.4 + 0.15 * label + frailty + rng.normal(0, 0.2), 0, 1)), 1))
            patients.append(f"P{patient:02d}")
    return np.array(labels), np.array(scores), np.array(second), np.array(patients)


def test_obuchowski_variance_matches_the_papers_formulas():
    labels, scores, _, patients = _clustered_cohort()
    assert np.unique(patients).size < labels.size  # really clustered, with ties
    auc, variance = stats.obuchowski_auc_variance(labels, scores, patients)
    ref_auc, ref_cov = _obuchowski_reference(labels, [scores], patients)
    assert auc == pytest.approx(ref_auc[0], abs=1e-12)
    assert variance == pytest.approx(ref_cov[0, 0], abs=1e-12)
    # Clustering matters here: the variance differs from DeLong's, which treats studies as independent.
    _, delong = stats.delong_auc_variance(labels, scores)
    assert abs(variance - delong) > 1e-5


def test_obuchowski_reduces_to_delong_with_one_study_per_patient():
    labels, scores, second, _ = _clustered_cohort(seed=8)
    singletons = np.arange(labels.size)
    auc, variance = stats.obuchowski_auc_variance(labels, scores, singletons)
    delong_auc, delong_variance = stats.delong_auc_variance(labels, scores)
    assert auc == pytest.approx(delong_auc, abs=1e-12)
    assert variance == pytest.approx(delong_variance, abs=1e-9)
    paired = stats.obuchowski_paired_test(labels, scores, second, singletons)
    delong_paired = stats.delong_paired_test(labels, scores, second)
    for key in ("auc_a", "auc_b", "difference", "se", "z", "p_value"):
        assert paired[key] == pytest.approx(delong_paired[key], abs=1e-9), key
    assert paired["ci95"] == pytest.approx(delong_paired["ci95"], abs=1e-9)
    # With one study per patient auc_ci takes DeLong's variance, clusters given or not.
    assert stats.auc_ci(labels, scores, singletons).ci == pytest.approx(stats.auc_ci(labels, scores).ci, abs=1e-12)


def test_paired_obuchowski_matches_the_papers_formulas():
    labels, scores, second, patients = _clustered_cohort(seed=11)
    result = stats.obuchowski_paired_test(labels, scores, second, patients)
    ref_auc, ref_cov = _obuchowski_reference(labels, [scores, second], patients)
    se = math.sqrt(ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1])
    assert result["difference"] == pytest.approx(ref_auc[0] - ref_auc[1], abs=1e-12)
    assert result["se"] == pytest.approx(se, abs=1e-9)
    z = (ref_auc[0] - ref_auc[1]) / se
    assert result["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), abs=1e-9)


def _logit_interval(auc: float, variance: float) -> list[float]:
    half = Z95 * math.sqrt(variance) / (auc * (1 - auc))
    centre = math.log(auc / (1 - auc))
    return [1 / (1 + math.exp(-(centre - half))), 1 / (1 + math.exp(-(centre + half)))]


def test_report_on_repeated_studies_gives_the_obuchowski_logit_interval():
    labels, scores, _, patients = _clustered_cohort(seed=3, n_patients=40)
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(labels.size)], "patient_id": patients,
                          "score": scores, "label": labels})
    report = analyse_predictions(frame, 0.5, "given", n_boot=50)
    ref_auc, ref_cov = _obuchowski_reference(labels, [scores], patients)
    auc = report["metrics"]["auc"]
    assert auc["value"] == pytest.approx(ref_auc[0], abs=1e-12)
    assert auc["ci95"] == pytest.approx(_logit_interval(ref_auc[0], ref_cov[0, 0]), abs=1e-6)
    assert "Obuchowski (1997)" in auc["method"] and f"{np.unique(patients).size} patients" in auc["method"]
    assert "union" not in report["methods"]["auc"] and "Obuchowski" in report["methods"]["auc"]
    # One study per patient: the same analysis gives DeLong's variance.
    single = frame.assign(patient_id=[f"Q{i}" for i in range(labels.size)])
    plain = analyse_predictions(single, 0.5, "given", n_boot=50)["metrics"]["auc"]
    auc_value, delong = stats.delong_auc_variance(labels, scores)
    assert plain["ci95"] == pytest.approx(_logit_interval(auc_value, delong), abs=1e-9)
    assert plain["method"].startswith("DeLong variance")


# --------------------------------------------------------------------------------------------------
# Proportions with clusters
# --------------------------------------------------------------------------------------------------


def test_ratio_design_effect_by_hand():
    # Clusters (successes / total): 2/2, 0/2, 1/1, 2/3 -> n = 8, p = 5/8.
    successes, totals = np.array([2, 0, 1, 2]), np.array([2, 2, 1, 3])
    p = 5 / 8
    residual = [2 - 2 * p, 0 - 2 * p, 1 - 1 * p, 2 - 3 * p]  # 0.75, -1.25, 0.375, 0.125
    clustered = 4 / 3 * sum(r * r for r in residual) / 64
    independent = p * (1 - p) / 7
    assert stats.ratio_design_effect(successes, totals) == pytest.approx(clustered / independent, abs=1e-12)
    # One sample per cluster: exactly 1.
    assert stats.ratio_design_effect([1, 0, 1, 1, 0], [1, 1, 1, 1, 1]) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(stats.ratio_design_effect([2, 3], [2, 3]))  # p = 1: nothing to estimate


def test_clustered_wilson_at_the_effective_sample_size():
    # Six patients with two studies each; a patient's two studies agree: strong clustering.
    successes = np.array([2, 2, 2, 2, 0, 0])
    totals = np.full(6, 2)
    result = stats.clustered_proportion_ci(successes, totals)
    p, n, k = 8 / 12, 12, 6
    clustered = k / (k - 1) * sum((x - p * 2) ** 2 for x in successes) / n**2
    design_effect = clustered / (p * (1 - p) / (n - 1))
    n_eff = n / design_effect
    # Wilson at (p n_eff, n_eff), by hand.
    centre = (p * n_eff + Z95**2 / 2) / (n_eff + Z95**2)
    half = Z95 / (n_eff + Z95**2) * math.sqrt(p * (1 - p) * n_eff + Z95**2 / 4)
    assert result.design_effect == pytest.approx(design_effect, abs=1e-12)
    assert result.n_effective == pytest.approx(n_eff, abs=1e-12)
    assert result.ci == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert result.ci[0] < stats.proportion_ci(8, 12)[0]  # wider than treating 12 studies as independent
    assert "ratio estimator" in result.method and "effective sample size" in result.method


def test_clustered_proportion_at_the_edge_counts_each_patient_once():
    result = stats.clustered_proportion_ci([2, 3, 1, 2], [2, 3, 1, 2])  # 8/8 from 4 patients
    assert not result.estimated and result.n_effective == pytest.approx(4.0)
    assert result.ci == pytest.approx(stats.proportion_ci(4, 4))
    assert result.ci[1] - result.ci[0] > 0
    assert "counts as one observation" in result.method


def test_analysis_uses_the_design_effect_not_a_union():
    # Five patients with two positive studies each, both called the same; five negatives, one each.
    rows = []
    for patient, called in enumerate([1, 1, 1, 1, 0]):
        for study in range(2):
            rows.append({"sample_id": f"p{patient}s{study}", "patient_id": f"P{patient}",
                         "score": 0.8 if called else 0.3, "label": "1"})
    for j in range(5):
        rows.append({"sample_id": f"n{j}", "patient_id": f"N{j}", "score": 0.1 + 0.05 * j, "label": "0"})
    report = analyse_predictions(pd.DataFrame(rows), 0.5, "given", n_boot=50)
    sensitivity = report["metrics"]["sensitivity"]
    expected = stats.clustered_proportion_ci([2, 2, 2, 2, 0], [2, 2, 2, 2, 2])
    assert sensitivity["value"] == pytest.approx(0.8)
    assert sensitivity["ci95"] == pytest.approx(list(expected.ci))
    assert sensitivity["design_effect"] == pytest.approx(expected.design_effect)
    assert "union" not in sensitivity["method"] and "10 samples from 5 patients" in sensitivity["method"]
    assert "union" not in report["methods"]["proportions"]
