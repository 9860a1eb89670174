from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from medrec.train.calibration import calibrated_probabilities, fit_temperature


def _sample(temperature_true: float, n: int = 4000, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 2.0, (n, classes))
    labels = np.array([rng.choice(classes, p=p) for p in softmax(true_logits, axis=1)])
    # the model is over-confident by the factor temperature_true
    return true_logits * temperature_true, labels


@pytest.mark.parametrize("temperature_true", [0.5, 2.5])
def test_recovers_known_temperature(temperature_true):
    logits, labels = _sample(temperature_true)
    fit = fit_temperature(logits, labels)
    assert fit.temperature == pytest.approx(temperature_true, rel=0.08)
    assert fit.nll_after < fit.nll_before
    assert fit.to_dict()["method"] == "temperature"


def test_calibrated_probabilities_and_ranking_kept():
    logits, labels = _sample(2.0, n=300, classes=2, seed=1)
    fit = fit_temperature(logits, labels)
    probs = calibrated_probabilities(logits, fit.temperature)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    raw = softmax(logits, axis=1)
    assert (np.argsort(probs[:, 1]) == np.argsort(raw[:, 1])).all()


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 2)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError):
        fit_temperature(np.full((2, 2), np.nan), np.zeros(2, dtype=int))
