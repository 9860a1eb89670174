"""Temperature scaling is refused on a tiny validation split, warns at its bound and records its interval."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import chi2

from medrec.train.calibration import MIN_SAMPLES_PER_CLASS, fit_temperature, negative_log_likelihood


def _binary(n: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose margin carries signal (``scale`` > 0) or none (``scale`` = 0), both classes equally often."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    margin = scale * (2 * labels - 1) + rng.normal(0.0, 1.0, n)
    return np.stack([-margin / 2, margin / 2], axis=1), labels


def test_six_validation_samples_keep_temperature_one_and_say_why():
    # the case of the issue: 6 validation samples, no signal, the unrestricted fit runs to T = e^5 = 148.4
    logits, labels = _binary(6, 0.0, seed=4)
    fit = fit_temperature(logits, labels)
    assert fit.temperature == 1.0 and not fit.applied
    assert fit.nll_after == fit.nll_before == pytest.approx(negative_log_likelihood(logits, labels))
    assert "class 0: 3, class 1: 3" in fit.reason and f"at least {MIN_SAMPLES_PER_CLASS}" in fit.reason
    record = fit.to_dict()
    assert record["applied"] is False and record["temperature"] == 1.0 and "reason" in record
    assert record["val_class_counts"] == [3, 3]
    assert "NOT fitted" in fit.summary()


def test_one_small_class_is_enough_to_refuse():
    logits, _ = _binary(60, 2.0, seed=0)
    labels = np.where(np.arange(60) < 9, 1, 0)  # 9 positives, 51 negatives
    assert not fit_temperature(logits, labels).applied
    labels[9] = 1  # 10 positives
    assert fit_temperature(logits, labels).applied


def test_fit_at_the_bound_warns():
    logits, labels = _binary(400, 0.0, seed=1)
    logits = logits * 50.0  # confident and wrong half of the time: the likelihood wants T as large as allowed
    fit = fit_temperature(logits, labels)
    assert fit.applied and fit.temperature == pytest.approx(np.exp(5.0), rel=1e-3)
    assert fit.warning and "upper bound" in fit.warning
    assert "WARNING" in fit.summary() and fit.to_dict()["warning"] == fit.warning


def test_profile_interval_matches_the_likelihood_ratio_by_hand():
    logits, labels = _binary(200, 1.5, seed=2)
    logits = logits * 2.5  # over-confident: T about 2.5
    fit = fit_temperature(logits, labels)
    low, high = fit.ci95
    assert low < fit.temperature < high and not fit.warning
    # each end lies where the deviance 2 n (NLL(T) - NLL(T_hat)) equals the chi-square(1) 95 % quantile
    n, best = len(labels), negative_log_likelihood(logits, labels, fit.temperature)
    for end in (low, high):
        deviance = 2 * n * (negative_log_likelihood(logits, labels, end) - best)
        assert deviance == pytest.approx(chi2.ppf(0.95, 1), abs=1e-4)
    # a grid scan agrees: every T inside has a lower deviance, the T just outside a higher one
    grid = np.exp(np.linspace(np.log(low) + 1e-3, np.log(high) - 1e-3, 50))
    assert all(2 * n * (negative_log_likelihood(logits, labels, t) - best) < chi2.ppf(0.95, 1) for t in grid)
    record = fit.to_dict()
    assert record["temperature_ci95"] == [low, high] and "profile likelihood" in record["temperature_ci_method"]
    # more data, narrower interval
    wide = fit_temperature(logits[:40], labels[:40]).ci95
    assert wide[1] - wide[0] > high - low


def test_training_a_run_on_a_tiny_validation_split_records_the_refusal(tmp_path):
    import importlib.util
    import sys
    import warnings
    from pathlib import Path

    # the scoring tests' tiny run (12 patients, 4 validation samples), loaded under its own module name
    score_tests = Path(__file__).parents[1] / "score"
    sys.path.insert(0, str(score_tests))
    spec = importlib.util.spec_from_file_location("score_tests_conftest", score_tests / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = module._train_run(tmp_path, patients=12, epochs=1, batch_size=4, augment=False)
    info = json.loads((built["run"] / "model.json").read_text())
    calibration = info["calibration"]
    assert calibration["method"] == "temperature" and calibration["applied"] is False
    assert calibration["temperature"] == 1.0 and "too few samples" in calibration["reason"]
    log = (built["run"] / "train.log").read_text()
    assert "calibration temperature NOT fitted (T = 1)" in log
