"""Lesion copy-paste: pieces cut from annotated lesions land on tissue like their own, with their target."""

from __future__ import annotations

import numpy as np

from medrec.train.paste import cut_lesions, paste_lesion
from medrec.train.slices import FindingSliceDataset, slice_stack
from medrec.train.targets import FindingTargets

NOISE = 0.02


def _tissue(rng, level, shape=(1, 40, 40, 12)):
    return (level + rng.normal(0, NOISE, size=shape)).astype(np.float32)


def _ball(shape, centre, radius):
    grid = np.indices(shape[1:])
    return (sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2).astype(np.uint8)


class _Store:
    def __init__(self, arrays):
        self.arrays = arrays

    def get(self, sample_id):
        return type("Sample", (), {"array": self.arrays[sample_id], "affine": np.eye(4)})()


def test_a_piece_is_the_lesion_over_its_surroundings():
    rng = np.random.default_rng(0)
    volume = _tissue(rng, 0.5)
    mask = _ball(volume.shape, (20, 20, 6), 3)
    volume[0][mask > 0] += 0.2
    (piece,) = cut_lesions(volume, mask)
    assert abs(float(piece.background[0]) - 0.5) < 0.01
    assert 0.5 * NOISE < float(piece.spread[0]) < 3 * NOISE  # interquartile range of the noise: 1.35 sigma
    assert piece.mask.sum() == mask.sum()
    assert abs(float(piece.delta[0][piece.mask].mean()) - 0.2) < 0.01
    # nothing of the surroundings comes along
    assert np.all(piece.delta[0][piece.weight == 0] == 0)


def test_tiny_components_are_not_pieces():
    volume = _tissue(np.random.default_rng(1), 0.5)
    mask = np.zeros(volume.shape[1:], dtype=np.uint8)
    mask[5, 5, 5] = 1
    assert cut_lesions(volume, mask) == []


def test_a_pasted_lesion_keeps_its_contrast_on_the_new_tissue_and_gets_its_target():
    rng = np.random.default_rng(2)
    source = _tissue(rng, 0.5)
    mask = _ball(source.shape, (20, 20, 6), 3)
    source[0][mask > 0] += 0.2
    (piece,) = cut_lesions(source, mask)
    host = _tissue(rng, 0.51)
    image, target, (x, y) = paste_lesion(host, 6, 1, piece, rng, slice_stack)
    assert image.shape == (3, 40, 40) and target.shape == (1, 40, 40)
    core = target[0] > 0
    assert 15 <= core.sum() <= 40  # a slice of a 3-voxel-radius ball
    assert abs(x - np.argwhere(core)[:, 0].mean()) <= 1.5 and abs(y - np.argwhere(core)[:, 1].mean()) <= 1.5
    # the middle channel is slice 6 of the host, with the lesion where the target says
    assert abs(float(image[1][core].mean()) - 0.71) < 0.03
    far = np.ones((40, 40), dtype=bool)
    far[max(0, x - 8):x + 8, max(0, y - 8):y + 8] = False
    np.testing.assert_array_equal(image[1][far], host[0, :, :, 6][far])
    # tissue unlike the piece's surroundings (fat at 0.1) takes no lesion
    assert paste_lesion(_tissue(rng, 0.1), 6, 1, piece, rng, slice_stack) is None


def test_the_sampler_pastes_lesions_into_studies_with_known_targets():
    rng = np.random.default_rng(3)
    source = _tissue(rng, 0.5)
    mask = _ball(source.shape, (20, 20, 6), 3)
    source[0][mask > 0] += 0.2
    arrays = {"pos": source, "neg": _tissue(rng, 0.5)}
    targets = FindingTargets()
    targets.masks["pos"] = mask
    targets.negatives.append("neg")
    dataset = FindingSliceDataset(_Store(arrays), targets, context=1, length=60, foreground_fraction=0.0, seed=0,
                                  flips=False, paste_fraction=1.0, patch_size=24)
    assert len(dataset.pieces) == 1
    pasted = 0
    for index in range(len(dataset)):
        image, target, _ = dataset[index]
        assert image.shape == (3, 24, 24) and target.shape == (1, 24, 24)
        lesion = target[0].numpy() > 0
        if lesion.any():
            pasted += 1
            # bright where the target is, background elsewhere
            assert image[1].numpy()[lesion].mean() > image[1].numpy()[~lesion].mean() + 0.1
    assert pasted > 0.8 * len(dataset)
