"""Statistics against published values and independent (slow, direct) computations."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

from medrec.report import stats
from medrec.report.stats import resampling

# ----------------------------------------------------------------------------------------------
# Proportions
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "total", "method", "expected"),
    [
        (18, 20, "wilson", (0.69897, 0.97213)),
        (18, 20, "clopper-pearson", (0.68302, 0.98765)),
        (4, 20, "wilson", (0.08066, 0.41602)),
        (4, 20, "clopper-pearson", (0.05733, 0.43661)),
    ],
)
def test_proportion_ci_matches_published_values(successes, total, method, expected):
    lower, upper = stats.proportion_ci(successes, total, method=method)
    assert lower == pytest.approx(expected[0], abs=5e-6)
    assert upper == pytest.approx(expected[1], abs=5e-6)


@pytest.mark.parametrize("method", ["wilson", "clopper-pearson"])
def test_proportion_ci_edges(method):
    lower, upper = stats.proportion_ci(0, 30, method=method)
    assert lower == 0.0 and 0.0 < upper < 0.2
    lower, upper = stats.proportion_ci(30, 30, method=method)
    assert upper == 1.0 and 0.8 < lower < 1.0
    assert all(math.isnan(v) for v in stats.proportion_ci(0, 0, method=method))


def test_wilson_edges_match_closed_form():
    z = 1.959963984540054
    assert stats.proportion_ci(0, 30)[1] == pytest.approx(z * z / (30 + z * z))
    # Clopper-Pearson 0/n upper bound is 1 - (alpha/2)^(1/n).
    assert stats.proportion_ci(0, 30, "clopper-pearson")[1] == pytest.approx(1 - 0.025 ** (1 / 30))


def test_proportion_ci_rejects_bad_input():
    with pytest.raises(ValueError, match="wald"):
        stats.proportion_ci(1, 2, method="wald")
    with pytest.raises(ValueError, match="successes"):
        stats.proportion_ci(3, 2)


def test_adjusted_ppv_npv_bayes():
    ppv, npv = stats.adjusted_ppv_npv(0.95, 0.85, 0.05)
    assert round(ppv, 2) == 0.25
    assert ppv == pytest.approx(0.25, abs=1e-12)
    assert npv == pytest.approx(0.85 * 0.95 / (0.85 * 0.95 + 0.05 * 0.05))


# ----------------------------------------------------------------------------------------------
# DeLong
# ----------------------------------------------------------------------------------------------


def _slow_delong(labels, score_rows):
    """DeLong et al. (1988) from the definition: the full m x n kernel matrix per classifier."""
    labels = np.asarray(labels)
    aucs, v10s, v01s = [], [], []
    for scores in np.atleast_2d(score_rows):
        x, y = scores[labels == 1], scores[labels == 0]
        psi = (x[:, None] > y[None, :]).astype(float) + 0.5 * (x[:, None] == y[None, :])
        aucs.append(psi.mean())
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
    v10, v01 = np.array(v10s), np.array(v01s)
    m, n = v10.shape[1], v01.shape[1]
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return np.array(aucs), cov


def _tied_data(seed, n=120):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(int)
    labels[:2] = [0, 1]
    scores_a = np.round(rng.normal(labels * 1.0, 1.0) * 2)  # integer scores: many ties
    scores_b = np.round(scores_a / 2 + rng.normal(0, 1.0, n))
    return labels, scores_a, scores_b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_delong_equals_direct_computation_with_ties(seed):
    labels, scores_a, scores_b = _tied_data(seed)
    assert np.unique(scores_a).size < 20  # ties are really there
    auc, variance = stats.delong_auc_variance(labels, scores_a)
    slow_auc, slow_cov = _slow_delong(labels, scores_a)
    assert auc == pytest.approx(slow_auc[0], abs=1e-12)
    assert auc == pytest.approx(roc_auc_score(labels, scores_a), abs=1e-12)
    assert variance == pytest.approx(slow_cov[0, 0], rel=1e-10)

    paired = stats.delong_paired_test(labels, scores_a, scores_b)
    slow_auc, slow_cov = _slow_delong(labels, np.vstack([scores_a, scores_b]))
    se = math.sqrt(slow_cov[0, 0] + slow_cov[1, 1] - 2 * slow_cov[0, 1])
    assert paired["auc_a"] == pytest.approx(slow_auc[0])
    assert paired["auc_b"] == pytest.approx(slow_auc[1])
    assert paired["se"] == pytest.approx(se, rel=1e-10)
    z = (slow_auc[0] - slow_auc[1]) / se
    assert paired["z"] == pytest.approx(z)
    assert paired["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    assert paired["ci95"][0] == pytest.approx(paired["difference"] - 1.959963984540054 * se)


def test_delong_variance_agrees_with_large_bootstrap():
    labels, scores, _ = _tied_data(5, n=160)
    _, variance = stats.delong_auc_variance(labels, scores)
    x, y = scores[labels == 1], scores[labels == 0]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    rng = np.random.default_rng(11)
    replicates = 20000
    # Stratified bootstrap (m and n fixed, as DeLong conditions on them); AUC = c_x' psi c_y / (m n).
    count_x = rng.multinomial(x.size, np.full(x.size, 1 / x.size), size=replicates)
    count_y = rng.multinomial(y.size, np.full(y.size, 1 / y.size), size=replicates)
    aucs = np.einsum("rm,mn,rn->r", count_x, psi, count_y) / (x.size * y.size)
    assert aucs.var(ddof=1) == pytest.approx(variance, rel=0.10)


def test_delong_on_hanley_mcneil_ct_ratings():
    # Hanley & McNeil (1982), Radiology 143:29, table 1: 5-point CT ratings of 58 normal and
    # 51 abnormal patients; published area 0.893 (SE 0.032 by their exponential approximation).
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    labels = np.r_[np.zeros(58, int), np.ones(51, int)]
    auc, variance = stats.delong_auc_variance(labels, np.r_[normal, abnormal])
    assert round(auc, 3) == 0.893
    assert math.sqrt(variance) == pytest.approx(0.032, rel=0.10)
    auc, lower, upper = stats.delong_ci(labels, np.r_[normal, abnormal])
    assert lower == pytest.approx(auc - 1.959963984540054 * math.sqrt(variance))
    assert 0.0 <= lower < auc < upper <= 1.0


def test_delong_ci_clipped_and_needs_both_classes():
    labels = np.array([0, 0, 0, 1, 1, 1])
    auc, lower, upper = stats.delong_ci(labels, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]))
    assert auc == 1.0 and upper == 1.0 and lower <= 1.0
    with pytest.raises(ValueError, match="both classes"):
        stats.delong_auc_variance(np.zeros(4, int), np.arange(4.0))


def test_delong_paired_identical_scores():
    labels, scores, _ = _tied_data(3)
    result = stats.delong_paired_test(labels, scores, scores)
    assert result["difference"] == 0.0 and result["p_value"] == 1.0


# ----------------------------------------------------------------------------------------------
# McNemar
# ----------------------------------------------------------------------------------------------


def test_mcnemar_reference_table():
    table = [[101, 121], [59, 33]]
    chi2, p_value = stats.mcnemar_table(table)
    assert chi2 == pytest.approx(20.67222, abs=5e-6)
    assert p_value == pytest.approx(5.450e-06, rel=1e-3)
    chi2, _ = stats.mcnemar_table(table, correction=False)
    assert chi2 == pytest.approx(21.35556, abs=5e-6)
    assert stats.mcnemar(121, 59) == stats.mcnemar_table(table)


def test_mcnemar_exact_for_small_counts():
    # b=1, c=9: two-sided exact p = 2 * P(X <= 1 | n=10, 1/2) = 2 * 11 / 1024.
    assert stats.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    small = stats.mcnemar_test(1, 9)
    assert small["p_value"] == pytest.approx(22 / 1024)
    assert "exact" in small["method"] and small["statistic"] is None
    large = stats.mcnemar_test(121, 59)
    assert large["statistic"] == pytest.approx(20.67222, abs=5e-6) and "chi-square" in large["method"]
    assert stats.mcnemar(0, 0) == (0.0, 1.0)
    assert stats.mcnemar_exact(5, 5) == 1.0


# ----------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------


def test_ece_and_brier_reference():
    scores = np.array([0.25, 0.25, 0.55, 0.75, 0.75])
    labels = np.array([0, 0, 1, 1, 1])
    assert stats.expected_calibration_error(labels, scores, n_bins=2) == pytest.approx(0.29, abs=1e-12)
    assert stats.brier_score(labels, scores) == pytest.approx(0.0905, abs=1e-12)
    assert stats.brier_score(labels, scores) == pytest.approx(brier_score_loss(labels, scores))


def test_reliability_curve_bin_edges():
    # 0.3 is the edge 3/10 and belongs to [0.3, 0.4); 1.0 belongs to the last bin; 0.0 to the first.
    scores = np.array([0.0, 0.3, 0.3, 0.35, 1.0, 0.999])
    labels = np.array([0, 0, 1, 1, 1, 1])
    curve = stats.reliability_curve(labels, scores, n_bins=10)
    assert curve["count"].tolist() == [1, 0, 0, 3, 0, 0, 0, 0, 0, 2]
    assert curve["mean_predicted"][3] == pytest.approx((0.3 + 0.3 + 0.35) / 3)
    assert curve["observed_fraction"][3] == pytest.approx(2 / 3)
    assert math.isnan(curve["observed_fraction"][1])
    assert curve["bin_lower"][3] == 0.3 and curve["bin_upper"][-1] == 1.0
    expected = (1 * 0.0 + abs(0.95 - 2) + abs(1.999 - 2)) / 6
    assert stats.expected_calibration_error(labels, scores) == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------


def _cohort(seed=0, n=200):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(int)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1).round(2)  # rounded: ties
    return labels, scores


def test_vectorised_bootstrap_equals_sklearn_loop():
    labels, scores = _cohort(1, n=60)
    patients = np.repeat(np.arange(30), 2)
    predictions = (scores >= 0.5).astype(int)
    codes, weights = stats.bootstrap_cluster_weights(patients, labels, n_boot=25, seed=3)
    sample_weights = weights[:, codes]
    names = list(stats.BOOTSTRAP_STATISTICS)
    fast = stats.weighted_statistics(names, labels, scores, sample_weights, predictions=predictions)
    for r in range(sample_weights.shape[0]):
        w = sample_weights[r]
        expected = {
            "sensitivity": recall_score(labels, predictions, sample_weight=w),
            "specificity": recall_score(1 - labels, 1 - predictions, sample_weight=w),
            "ppv": precision_score(labels, predictions, sample_weight=w, zero_division=np.nan),
            "npv": precision_score(1 - labels, 1 - predictions, sample_weight=w, zero_division=np.nan),
            "accuracy": np.average(labels == predictions, weights=w),
            "balanced_accuracy": balanced_accuracy_score(labels, predictions, sample_weight=w),
            "f1": f1_score(labels, predictions, sample_weight=w),
            "mcc": matthews_corrcoef(labels, predictions, sample_weight=w),
            "auc": roc_auc_score(labels, scores, sample_weight=w),
            "pr_auc": average_precision_score(labels, scores, sample_weight=w),
            "brier": brier_score_loss(labels, scores, sample_weight=w),
        }
        bins = np.minimum((scores * 10 + 1e-9).astype(int), 9)
        gaps = np.bincount(bins, weights=w * (scores - labels), minlength=10)
        expected["ece"] = np.abs(gaps).sum() / w.sum()
        for name, value in expected.items():
            assert fast[name][r] == pytest.approx(value, abs=1e-10), (name, r)


def test_cluster_bootstrap_point_values_match_sklearn():
    labels, scores = _cohort(2)
    predictions = (scores >= 0.5).astype(int)
    results = stats.cluster_bootstrap(list(stats.BOOTSTRAP_STATISTICS), labels, scores, None, n_boot=200,
                                      predictions=predictions)
    point = stats.binary_point_metrics(labels, scores, predictions)
    for name, result in results.items():
        assert result.value == pytest.approx(point[name], abs=1e-12), name
        assert result.ci[0] <= result.ci[1]
        assert result.n_valid == 200
        assert "percentile" in result.method


def _width(result):
    return result.ci[1] - result.ci[0]


def test_patient_clustering_is_respected_when_studies_are_duplicated():
    labels, scores = _cohort(3, n=300)
    patients = np.arange(labels.size)
    twice = np.repeat(np.arange(labels.size), 2)
    names = ["sensitivity", "auc", "f1"]
    kw = {"n_boot": 1000, "seed": 7, "threshold": 0.5}
    original = stats.cluster_bootstrap(names, labels, scores, patients, **kw)
    clustered = stats.cluster_bootstrap(names, labels[twice], scores[twice], patients[twice], **kw)
    row_level = stats.cluster_bootstrap(names, labels[twice], scores[twice], np.arange(twice.size), **kw)
    for name in names:
        assert _width(clustered[name]) == pytest.approx(_width(original[name]), rel=0.15), name
        ratio = _width(row_level[name]) / _width(original[name])
        assert 0.55 < ratio < 0.85, (name, ratio)  # about 1 / sqrt(2)


def test_bootstrap_is_seeded_and_stratified():
    labels, scores = _cohort(4)
    patients = np.arange(labels.size) // 3
    first = stats.cluster_bootstrap("auc", labels, scores, patients, n_boot=300, seed=5)
    second = stats.cluster_bootstrap("auc", labels, scores, patients, n_boot=300, seed=5)
    third = stats.cluster_bootstrap("auc", labels, scores, patients, n_boot=300, seed=6)
    np.testing.assert_array_equal(first.replicates, second.replicates)
    assert not np.array_equal(first.replicates, third.replicates)
    codes, weights = stats.bootstrap_cluster_weights(patients, labels, n_boot=50, seed=1)
    holds_positive = np.zeros(weights.shape[1], bool)
    holds_positive[codes[labels == 1]] = True
    # Every replicate draws as many positive-holding patients as there are.
    assert (weights[:, holds_positive].sum(axis=1) == holds_positive.sum()).all()
    assert (weights.sum(axis=1) == weights.shape[1]).all()


def test_bootstrap_accepts_a_callable():
    labels, scores = _cohort(5)

    def mean_score(y, s, p, weights):
        return weights @ s / weights.sum(axis=1)

    result = stats.cluster_bootstrap(mean_score, labels, scores, None, n_boot=200)
    assert result.value == pytest.approx(scores.mean())
    assert result.ci[0] < scores.mean() < result.ci[1]


def test_multiclass_bootstrap_macro():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 90)
    probs = rng.dirichlet(np.ones(3), 90)
    probs[np.arange(90), labels] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    predictions = probs.argmax(axis=1)
    result = stats.cluster_bootstrap_multiclass(["sensitivity", "auc"], labels, probs, predictions, None, n_boot=200)
    per_class_auc = [roc_auc_score(labels == k, probs[:, k]) for k in range(3)]
    assert [r["auc"].value for r in result["per_class"]] == pytest.approx(per_class_auc)
    assert result["macro"]["auc"].value == pytest.approx(np.mean(per_class_auc))
    assert result["macro"]["sensitivity"].value == pytest.approx(
        balanced_accuracy_score(labels, predictions))


@pytest.mark.slow
def test_bootstrap_scales_to_100k_predictions():
    rng = np.random.default_rng(0)
    n = 100_000
    patients = rng.integers(0, 50_000, n)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0, 1)
    start = time.process_time()
    results = stats.cluster_bootstrap(list(stats.BOOTSTRAP_STATISTICS), labels, scores, patients,
                                      n_boot=2000, threshold=0.5)
    elapsed = time.process_time() - start
    assert all(r.n_valid == 2000 for r in results.values())
    assert elapsed < 40  # CPU seconds: a few on a free core; generous for loaded CI machines


def test_weights_do_not_depend_on_chunk_size():
    labels, _ = _cohort(6)
    patients = np.arange(labels.size) // 2
    codes, n_clusters, strata = resampling._prepare_clusters(patients, labels, labels.size, True)
    small = np.vstack(list(resampling._weight_chunks(strata, 70, 9, 7)))
    large = np.vstack(list(resampling._weight_chunks(strata, 70, 9, 1000)))
    np.testing.assert_array_equal(small, large)
    scores = _cohort(6)[1]
    first = stats.cluster_bootstrap(["auc", "f1"], labels, scores, patients, n_boot=70, seed=9, threshold=0.5,
                                    chunk_size=5)
    second = stats.cluster_bootstrap(["auc", "f1"], labels, scores, patients, n_boot=70, seed=9, threshold=0.5)
    for name in ("auc", "f1"):
        np.testing.assert_array_equal(first[name].replicates, second[name].replicates)


def test_weighted_statistics_with_fractional_weights_match_sklearn():
    labels, scores = _cohort(7, n=50)
    predictions = (scores >= 0.5).astype(int)
    weights = np.random.default_rng(7).gamma(1.0, 1.0, size=(4, labels.size))
    fast = stats.weighted_statistics(["auc", "pr_auc", "sensitivity", "brier"], labels, scores, weights,
                                     predictions=predictions)
    for r, w in enumerate(weights):
        assert fast["auc"][r] == pytest.approx(roc_auc_score(labels, scores, sample_weight=w), abs=1e-10)
        assert fast["pr_auc"][r] == pytest.approx(average_precision_score(labels, scores, sample_weight=w), abs=1e-10)
        assert fast["sensitivity"][r] == pytest.approx(recall_score(labels, predictions, sample_weight=w), abs=1e-10)
        assert fast["brier"][r] == pytest.approx(brier_score_loss(labels, scores, sample_weight=w), abs=1e-10)


def test_integer_path_without_ties_matches_sklearn():
    # Continuous scores: the tie gathers are skipped; the result must not change.
    rng = np.random.default_rng(8)
    labels = (rng.random(80) < 0.4).astype(int)
    scores = rng.random(80) * 0.6 + 0.3 * labels
    patients = np.arange(80) // 2
    codes, weights = stats.bootstrap_cluster_weights(patients, labels, n_boot=10, seed=2)
    fast = stats.weighted_statistics(["auc", "pr_auc"], labels, scores, weights[:, codes])
    for r in range(weights.shape[0]):
        w = weights[r, codes]
        assert fast["auc"][r] == pytest.approx(roc_auc_score(labels, scores, sample_weight=w), abs=1e-10)
        assert fast["pr_auc"][r] == pytest.approx(average_precision_score(labels, scores, sample_weight=w), abs=1e-10)


def test_shared_bootstrap_equals_separate_calls():
    rng = np.random.default_rng(9)
    patients = np.array([f"p{i:03d}" for i in rng.integers(0, 120, 300)])
    labels = (rng.random(300) < 0.3).astype(int)
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0, 1)
    ids = np.unique(patients)
    patient_labels = np.array([labels[patients == p].max() for p in ids])
    patient_scores = np.array([scores[patients == p].max() for p in ids])
    names = list(stats.BOOTSTRAP_STATISTICS)
    kw = {"n_boot": 150, "seed": 4}
    sample, patient = stats.cluster_bootstrap_shared(
        [{"statistics": names, "labels": labels, "scores": scores, "clusters": patients, "threshold": 0.5},
         {"statistics": names, "labels": patient_labels, "scores": patient_scores, "clusters": ids.astype(object),
          "threshold": 0.5}], **kw)
    separate_sample = stats.cluster_bootstrap(names, labels, scores, patients, threshold=0.5, **kw)
    separate_patient = stats.cluster_bootstrap(names, patient_labels, patient_scores, ids, threshold=0.5, **kw)
    for name in names:
        np.testing.assert_array_equal(sample[name].replicates, separate_sample[name].replicates)
        np.testing.assert_array_equal(patient[name].replicates, separate_patient[name].replicates)
        assert sample[name].ci == separate_sample[name].ci and patient[name].value == separate_patient[name].value
    with pytest.raises(ValueError, match="other clusters"):
        stats.cluster_bootstrap_shared([
            {"statistics": ["auc"], "labels": labels, "scores": scores, "clusters": patients},
            {"statistics": ["auc"], "labels": labels, "scores": scores, "clusters": None}])
