"""Synthetic anomalies: inside the body, the target is the per-voxel blend factor, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from medrec.transforms.anomaly import RandSyntheticAnomalyd, SyntheticAnomaly, body_mask


def _phantom(seed: int, value: float = 1.0) -> np.ndarray:
    """A (1, 48, 48, 7) volume: a noisy disc of tissue (with a dark hole) in air."""
    rng = np.random.default_rng(seed)
    x, y = np.ogrid[:48, :48]
    disc = (x - 24) ** 2 + (y - 24) ** 2 < 18**2
    hole = (x - 24) ** 2 + (y - 20) ** 2 < 4**2
    image = np.zeros((1, 48, 48, 7), dtype=np.float32)
    image[0][disc] = value + 0.1 * rng.standard_normal((int(disc.sum()), 7))
    image[0][hole] = 0.05
    return image


def test_body_mask_is_the_disc_with_its_hole_filled():
    body = body_mask(_phantom(0))
    x, y = np.ogrid[:48, :48]
    disc = (x - 24) ** 2 + (y - 24) ** 2 < 18**2
    assert np.array_equal(body, np.repeat(disc[..., None], 7, axis=2))


@pytest.mark.parametrize("seed", range(12))
def test_fpi_blends_inside_the_body_with_the_target_as_factor(seed):
    image, source = _phantom(seed), _phantom(seed + 100, value=3.0)
    anomaly = SyntheticAnomaly(modes=("fpi",), diameter_mm=(6.0, 30.0), spacing=(1.5, 1.5, 3.0))
    anomaly.set_random_state(seed)
    altered, target = anomaly(image, source)
    t = target[0]
    assert target.shape == (1, 48, 48, 7) and t.max() > 0
    assert np.allclose(altered, (1 - t) * image + t * source, atol=1e-6)  # x' = (1 - t) x + t s, t = target
    body = body_mask(image)
    assert not (t[~body] > 0).any() and np.array_equal(altered[:, ~body], image[:, ~body])
    assert body[tuple(int(c) for c in anomaly.centre)]  # drawn inside the body
    assert t.max() <= anomaly.blend + 1e-6 and np.isclose(t.max(), anomaly.blend, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_intensity_change_is_the_target_times_one_amplitude(seed):
    image = _phantom(seed)
    anomaly = SyntheticAnomaly(modes=("intensity",), diameter_mm=(10.0, 30.0), spacing=(1.5, 1.5, 3.0))
    anomaly.set_random_state(seed)
    altered, target = anomaly(image)
    changed = target[0] > 0
    assert changed.any() and not (target[0][~body_mask(image)] > 0).any()
    clear = target[0] > 0.01  # float32: a change of a tiny fraction carries few significant digits
    ratio = (altered[0] - image[0])[clear] / target[0][clear]
    assert np.allclose(ratio, ratio[0], rtol=1e-3)  # one amplitude, scaled voxel by voxel by the target
    iqr = np.subtract(*np.percentile(image[0][body_mask(image)], [75, 25]))
    assert anomaly.amplitude[0] * iqr * 0.999 <= abs(ratio[0]) <= anomaly.amplitude[1] * iqr * 1.001
    assert np.array_equal(altered[0][~changed], image[0][~changed])


def test_same_seed_same_anomaly_other_seed_another():
    image, source = _phantom(1), _phantom(2, value=2.0)
    results = []
    for seed in (5, 5, 6):
        anomaly = SyntheticAnomaly(spacing=(1.5, 1.5, 3.0))
        anomaly.set_random_state(seed)
        results.append(anomaly(image, source))
    assert np.array_equal(results[0][0], results[1][0]) and np.array_equal(results[0][1], results[1][1])
    assert not np.array_equal(results[0][1], results[2][1])


def test_dict_transform_alters_every_key_alike_or_nothing():
    image, source = _phantom(3), _phantom(4, value=2.0)
    transform = RandSyntheticAnomalyd(keys=("image", "copy"), modes=("fpi",), spacing=(1.5, 1.5, 3.0))
    transform.set_random_state(0)
    out = transform({"image": image, "copy": image.copy(), "anomaly_source": source})
    assert np.array_equal(out["image"], out["copy"]) and out["anomaly"].max() > 0
    never = RandSyntheticAnomalyd(keys=("image",), prob=0.0)
    out = never({"image": image})
    assert np.array_equal(out["image"], image) and not out["anomaly"].any()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="modes"):
        SyntheticAnomaly(modes=("cutpaste",))
    with pytest.raises(ValueError, match="diameter_mm"):
        SyntheticAnomaly(diameter_mm=(20.0, 10.0))
