"""The anomaly items stack slices as the model does, and their targets come from the transform."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from medrec.train.anomaly import AnomalySliceDataset, _as_channels, _slab
from medrec.train.slices import slice_stack
from medrec.transforms.anomaly import SyntheticAnomaly


class _Store:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def get(self, sample_id: str) -> SimpleNamespace:
        return SimpleNamespace(array=self.arrays[sample_id])


def _volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y = np.ogrid[:32, :32]
    body = ((x - 16) ** 2 + (y - 16) ** 2 < 12**2)[..., None]
    return np.where(body, 1.0 + 0.1 * rng.standard_normal((32, 32, 6)), 0.0).astype(np.float32)[None]


@pytest.mark.parametrize("z", [0, 2, 5])
@pytest.mark.parametrize("context", [0, 1, 2])
def test_slab_channels_are_the_model_slice_stack(z, context):
    volume = _volume(0)
    assert np.array_equal(_as_channels(_slab(volume, z, context)), slice_stack(volume, z, context))


def test_items_are_seeded_and_their_targets_mark_the_altered_voxels():
    store = _Store({"a": _volume(1), "b": _volume(2), "c": _volume(3)})
    anomaly = SyntheticAnomaly(modes=("intensity",), diameter_mm=(6.0, 12.0))

    def dataset() -> AnomalySliceDataset:
        return AnomalySliceDataset(store, ["a", "b", "c"], context=1, length=40, anomaly=anomaly,
                                   anomaly_fraction=0.5, seed=7, flips=False)

    first, second = dataset(), dataset()
    altered = 0
    for index in range(40):
        image, target, position = first[index]
        again, target_again, _ = second[index]
        assert position == index and np.array_equal(image, again) and np.array_equal(target, target_again)
        assert image.shape == (3, 32, 32) and target.shape == (1, 32, 32)
        if target.any():
            altered += 1
            middle = image[1].numpy()
            assert not any(np.array_equal(middle, store.get(s).array[0, ..., k])
                           for s in "abc" for k in range(6)), "an item with a target was not altered"
        else:
            assert any(np.array_equal(image.numpy(), slice_stack(store.get(s).array, k, 1))
                       for s in "abc" for k in range(6)), "an item without a target is not a plain slice stack"
    assert 10 <= altered <= 30  # anomaly_fraction 0.5 of 40 items


def test_synthetic_validation_pairs_each_normal_study_with_an_altered_copy():
    from medrec.data.dataset import CachedImageDataset
    from medrec.train.anomaly import SyntheticValidation

    volumes = {name: _volume(seed)[..., :4] for seed, name in enumerate("abc")}
    base = CachedImageDataset(_Store(volumes), list("abc"), [1, 1, 1])
    anomaly = SyntheticAnomaly(modes=("fpi", "intensity"), diameter_mm=(8.0, 16.0))
    validation = SyntheticValidation(base, anomaly, positive_index=0, seed=3)
    assert len(validation) == 6 and validation.labels == [1, 1, 1, 0, 0, 0]
    for index, name in enumerate("abc"):
        image, label, position = validation[index]
        assert label == 1 and position == index and np.array_equal(image.numpy(), volumes[name])
        copy, label, position = validation[index + 3]
        assert label == 0 and position == index + 3
        changed = copy.numpy() != volumes[name]
        assert changed.any(), "every copy carries an anomaly"
        assert not changed[0][volumes[name][0] == 0].any(), "nothing changes outside the body"
        assert np.array_equal(copy.numpy(), validation[index + 3][0].numpy()), "every epoch sees the same copy"
    other = SyntheticValidation(base, anomaly, positive_index=0, seed=4)
    assert not np.array_equal(other[3][0].numpy(), validation[3][0].numpy())
