"""Finding-map models: shapes, pooling, the dense path and the slice sampler's targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrec.errors import ConfigError, ModelError
from medrec.models import create_model, model_family, stack_slice_context
from medrec.models.findings import FindingMapModel, pool_map
from medrec.train.findings import finding_loss
from medrec.train.slices import FindingSliceDataset, slice_stack
from medrec.train.targets import FindingTargets


def test_volume_map_is_the_slice_network_applied_to_each_stack():
    torch.manual_seed(0)
    model = create_model("finding_fcn", 3, 1, 2, context=1).eval()
    volume = torch.randn(2, 1, 24, 20, 7)
    with torch.no_grad():
        maps = model.finding_map(volume)
        assert maps.shape == (2, 1, 24, 20, 7)
        stacks = stack_slice_context(volume, 1)
        for z in (0, 3, 6):  # the edge slices repeat their neighbour
            direct = model(stacks[:, z], dense=True)
            torch.testing.assert_close(maps[..., z], direct, atol=1e-5, rtol=1e-5)
        logits = model(volume)
    score = maps.reshape(2, -1).amax(dim=1)
    torch.testing.assert_close(logits, torch.stack([-score / 2, score / 2], dim=1))
    # the positive-class softmax probability is sigmoid(score)
    torch.testing.assert_close(torch.softmax(logits, 1)[:, 1], torch.sigmoid(score))


def test_2d_images_map_directly():
    model = create_model("finding_fcn", 2, 1, 2).eval()
    with torch.no_grad():
        assert model.finding_map(torch.randn(3, 1, 32, 40)).shape == (3, 1, 32, 40)
        assert model(torch.randn(3, 1, 32, 40)).shape == (3, 2)


def test_pooling_against_numpy():
    maps = torch.randn(2, 1, 5, 6, 4)
    flat = maps.reshape(2, -1).numpy()
    np.testing.assert_allclose(pool_map(maps, "max").numpy(), flat.max(axis=1), rtol=1e-6)
    top5_mean = np.sort(flat, axis=1)[:, -5:].mean(axis=1)
    np.testing.assert_allclose(pool_map(maps, "topk_mean", 5).numpy(), top5_mean, rtol=1e-5)
    lse = np.log(np.exp(flat.astype(np.float64)).mean(axis=1))
    np.testing.assert_allclose(pool_map(maps, "lse").numpy(), lse, rtol=1e-5)


def test_bad_arguments_are_refused():
    assert model_family("finding_fcn") == "finding-map"
    with pytest.raises(ModelError, match="exactly 2 classes"):
        create_model("finding_fcn", 3, 1, 3)
    with pytest.raises(ModelError, match="pooling"):
        FindingMapModel(3, 1, pooling="mean")
    with pytest.raises(ModelError, match="channels"):
        FindingMapModel(3, 1, channels=(8, 8))


def test_slice_stack_matches_the_model_stacking():
    volume = np.random.default_rng(0).normal(size=(1, 6, 5, 4)).astype(np.float32)
    stacks = stack_slice_context(torch.from_numpy(volume)[None], 1)[0].numpy()
    for z in range(4):
        np.testing.assert_array_equal(slice_stack(volume, z, 1), stacks[z])


class _Store:
    def __init__(self, arrays):
        self.arrays = arrays

    def get(self, sample_id):
        return type("Sample", (), {"array": self.arrays[sample_id], "affine": np.eye(4)})()


def test_slice_sampler_targets_and_foreground_share():
    rng = np.random.default_rng(1)
    arrays = {s: rng.normal(size=(1, 8, 8, 10)).astype(np.float32) for s in ("pos", "neg", "weak")}
    mask = np.zeros((8, 8, 10), dtype=np.uint8)
    mask[2:5, 3:6, 6:8] = 1
    targets = FindingTargets()
    targets.masks["pos"] = mask
    targets.negatives.append("neg")
    targets.label_only.append("weak")
    dataset = FindingSliceDataset(_Store(arrays), targets, context=1, length=400, foreground_fraction=0.5, seed=3,
                                  flips=False)
    dataset.set_epoch(1)
    lesion_items = 0
    for index in range(len(dataset)):
        image, target, position = dataset[index]
        assert image.shape == (3, 8, 8) and target.shape == (1, 8, 8) and position == index
        matches = [(s, z) for s in arrays for z in range(10)
                   if np.array_equal(image.numpy(), slice_stack(arrays[s], z, 1))]
        assert len(matches) == 1
        sample_id, z = matches[0]
        assert sample_id != "weak"  # a positive without annotation has no voxel target
        expected = mask[:, :, z] if sample_id == "pos" else np.zeros((8, 8))
        np.testing.assert_array_equal(target[0].numpy(), expected)
        lesion_items += bool(expected.any())
    # half drawn from lesion slices, plus the uniform draws that hit one (1/2 * 1/2 * 2/10)
    assert 0.45 * 400 < lesion_items < 0.70 * 400
    # the same epoch draws the same items; another epoch draws others
    first = [dataset[i][0] for i in range(20)]
    assert all(torch.equal(a, dataset[i][0]) for i, a in enumerate(first))
    dataset.set_epoch(2)
    assert not all(torch.equal(a, dataset[i][0]) for i, a in enumerate(first))


def test_finding_loss_prefers_the_right_map():
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:4, 2:4] = 1
    right = torch.where(target > 0, 6.0, -6.0)
    wrong = torch.where(target > 0, -6.0, 6.0)
    assert finding_loss(right, target) < 0.01 < 1.0 < finding_loss(wrong, target)


def test_no_annotated_study_is_a_clear_error():
    from medrec.train.targets import build_targets

    store = _Store({"a": np.zeros((1, 4, 4, 4), np.float32)})
    with pytest.raises(ConfigError, match="no training study has a usable lesion annotation"):
        build_targets(store, ["a"], lambda s: True, lambda s, shape, affine: None)


def test_label_only_slices_train_their_maximum():
    from medrec.train.targets import MIL_TARGET

    logits = torch.full((3, 1, 4, 4), -5.0)
    logits[2, 0, 1, 1] = 3.0
    target = torch.zeros(3, 1, 4, 4)
    target[2] = MIL_TARGET  # a label-only slice: only its maximum is known to be a lesion
    dense = torch.nn.functional.binary_cross_entropy_with_logits(logits[:2], target[:2])
    mil = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([3.0]), torch.ones(1))
    torch.testing.assert_close(finding_loss(logits, target), dense * 2 / 3 + mil / 3)
    torch.testing.assert_close(finding_loss(logits, target, mil_weight=0.01), dense * 2 / 3 + 0.01 * mil / 3)
    # the gradient of the label-only slice reaches its maximum voxel only
    logits.requires_grad_(True)
    finding_loss(logits, target).backward()
    grad = logits.grad[2, 0]
    assert grad[1, 1] < 0 and int((grad != 0).sum()) == 1


def test_mil_items_come_from_the_top_slices():
    from medrec.train.findings import top_slices
    from medrec.train.targets import MIL_TARGET

    rng = np.random.default_rng(2)
    arrays = {s: rng.normal(size=(1, 8, 8, 6)).astype(np.float32) for s in ("pos", "neg", "weak")}
    targets = FindingTargets()
    targets.masks["pos"] = np.pad(np.ones((2, 2, 2), np.uint8), ((3, 3), (3, 3), (2, 2)))
    targets.negatives.append("neg")
    targets.label_only.append("weak")
    model = create_model("finding_fcn", 3, 1, 2, channels=(4, 4, 4, 4, 4, 4)).eval()
    found = top_slices(model, _Store(arrays), ["weak"])
    with torch.no_grad():
        maps = model.finding_map(torch.from_numpy(arrays["weak"])[None])[0, 0]
    assert found == {"weak": int(maps.amax(dim=(0, 1)).argmax())}
    dataset = FindingSliceDataset(_Store(arrays), targets, 1, 200, 0.3, seed=0, flips=False, mil_fraction=0.3)
    assert not any(float(dataset[i][1].min()) == MIL_TARGET for i in range(50))  # before the first refresh
    dataset.set_top_slices(found)
    weak = [dataset[i] for i in range(200) if float(dataset[i][1].min()) == MIL_TARGET]
    assert 0.2 * 200 < len(weak) < 0.4 * 200
    expected = slice_stack(arrays["weak"], found["weak"], 1)
    assert all(np.array_equal(item[0].numpy(), expected) for item in weak)


def test_hard_slices_come_from_the_top_slices_with_their_targets():
    rng = np.random.default_rng(3)
    arrays = {s: rng.normal(size=(1, 8, 8, 6)).astype(np.float32) for s in ("pos", "neg")}
    targets = FindingTargets()
    targets.masks["pos"] = np.pad(np.ones((2, 2, 2), np.uint8), ((3, 3), (3, 3), (1, 3)))
    targets.negatives.append("neg")
    dataset = FindingSliceDataset(_Store(arrays), targets, 1, 300, 0.2, seed=0, flips=False, hard_fraction=0.5)
    assert dataset.hard_refresh(1) + dataset.hard_refresh(2) + dataset.hard_refresh(3) != []
    assert sorted(dataset.hard_refresh(3) + dataset.hard_refresh(4) + dataset.hard_refresh(5)) == ["neg", "pos"]
    dataset.set_hard_slices({"neg": 4, "pos": 5})
    hard = [item for item in (dataset[i] for i in range(300))
            if np.array_equal(item[0].numpy(), slice_stack(arrays["neg"], 4, 1))
            or np.array_equal(item[0].numpy(), slice_stack(arrays["pos"], 5, 1))]
    assert 0.4 * 300 < len(hard) < 0.7 * 300  # half drawn as hard slices, plus uniform draws that hit them
    for _image, target, _ in hard:
        assert float(target.sum()) == 0.0  # neither slice holds lesion voxels (pos's lesion is on slices 1-2)


def test_mil_gate_keeps_the_positives_above_the_lesion_free_quantile():
    from medrec.train.findings import gated_top_slices
    from medrec.train.targets import TopSlice

    candidates = {k: TopSlice(z, score) for k, (z, score) in
                  {"a": (3, 2.5), "b": (1, 0.4), "c": (7, 1.1), "d": (0, -1.0)}.items()}
    lesion_free = [float(v) for v in np.linspace(-2.0, 1.0, 31)]  # 0.9 quantile: 0.7

    def slices(chosen):
        return {k: top.z for k, top in chosen.items()}

    assert slices(gated_top_slices(candidates, lesion_free, 0.9)) == {"a": 3, "c": 7}
    assert slices(gated_top_slices(candidates, lesion_free, 1.0)) == {"a": 3, "c": 7}  # above the highest (1.0)
    assert slices(gated_top_slices(candidates, lesion_free, 0.0)) == {"a": 3, "b": 1, "c": 7, "d": 0}
    assert slices(gated_top_slices(candidates, [], 0.9)) == {"a": 3, "b": 1, "c": 7, "d": 0}


def test_lesion_weight_scales_the_lesion_voxels_loss_and_auto_follows_their_share():
    from medrec.train.findings import finding_loss
    from medrec.train.targets import REFERENCE_LESION_FRACTION

    logits = torch.tensor([[[[0.5, -1.0], [2.0, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    ce = -(target * torch.log(torch.sigmoid(logits)) + (1 - target) * torch.log(1 - torch.sigmoid(logits)))
    weighted = torch.where(target > 0, 4.0 * ce, ce).mean()  # independent: lesion voxels' terms x 4
    torch.testing.assert_close(finding_loss(logits, target, 4.0), weighted)
    torch.testing.assert_close(finding_loss(logits, target), ce.mean())

    targets = FindingTargets()
    mask = np.zeros((20, 10, 6), np.uint8)
    mask[2:4, 2:4, 1:3] = 1  # 8 lesion voxels on 2 slices of 200 pixels: 2 %
    targets.masks["a"] = mask
    assert targets.lesion_fraction() == pytest.approx(8 / 400)
    assert targets.lesion_weight("auto")[0] == 1.0  # more than the reference share: no weight
    small = np.zeros((100, 100, 4), np.uint8)
    small[10:12, 10:12, 1] = 1  # 4 of 10,000 pixels
    targets.masks = {"b": small}
    assert targets.lesion_weight("auto")[0] == pytest.approx(min(20.0, REFERENCE_LESION_FRACTION / 4e-4), abs=0.01)
    assert targets.lesion_weight(3.0) == (3.0, "training.lesion_weight")


def test_patch_items_hold_the_lesion_and_the_peak():
    from medrec.train.findings import top_slice_scores
    from medrec.train.targets import TopSlice

    rng = np.random.default_rng(4)
    arrays = {s: rng.normal(size=(1, 64, 48, 6)).astype(np.float32) for s in ("pos", "neg")}
    targets = FindingTargets()
    mask = np.zeros((64, 48, 6), np.uint8)
    mask[50:53, 5:8, 2:4] = 1  # near a corner: a centred crop would be cut by the edge
    targets.masks["pos"] = mask
    targets.negatives.append("neg")
    # lesion voxels take (64 x 48) / (16 x 16) times the share of a crop than of a whole slice
    assert targets.lesion_fraction(16) == pytest.approx(targets.lesion_fraction() * 64 * 48 / 256)
    dataset = FindingSliceDataset(_Store(arrays), targets, 1, 400, 0.4, seed=0, flips=False,
                                  hard_fraction=0.3, patch_size=16)
    dataset.set_hard_slices({"neg": TopSlice(4, 1.0, 60, 2)})
    items = [dataset[i] for i in range(400)]
    assert {tuple(image.shape) for image, _, _ in items} == {(3, 16, 16)}
    # every lesion draw (40 %) holds the whole 3 x 3 lesion slice, however near the edge it lies
    whole = [target for _, target, _ in items if float(target.sum()) == 9.0]
    assert len(whole) >= 0.33 * 400
    # hard draws are crops of neg's slice 4 that hold its peak (voxel 60, 2)
    peak_value = float(arrays["neg"][0, 60, 2, 4])
    hard = [image for image, _, _ in items if np.isclose(image[1].numpy(), peak_value).any()]
    assert len(hard) >= 0.25 * 400
    # a whole slice is never cropped larger than itself
    wide = FindingSliceDataset(_Store(arrays), targets, 1, 10, 0.5, seed=0, patch_size=56)
    assert tuple(wide[0][0].shape) == (3, 56, 48)
    model = create_model("finding_fcn", 3, 1, 2, channels=(4, 4, 4, 4, 4, 4)).eval()
    top = top_slice_scores(model, _Store(arrays), ["neg"])["neg"]
    with torch.no_grad():
        maps = model.finding_map(torch.from_numpy(arrays["neg"])[None])[0, 0]
    assert float(maps[top.x, top.y, top.z]) == pytest.approx(float(maps.max())) == pytest.approx(top.score)


def test_context_and_top_k_reach_the_finding_network():
    """create_model's own context / top_k (for slice modes) must not swallow a finding model's."""
    model = create_model("finding_fcn", 3, 1, 2, context=3, pooling="topk_mean", top_k=5)
    assert model.context == 3 and model.top_k == 5
    assert model.net.features[0][0].in_channels == 7
    with torch.no_grad():
        assert model.eval().finding_map(torch.randn(1, 1, 16, 16, 9)).shape == (1, 1, 16, 16, 9)
    with pytest.raises(ModelError, match="slice modes only"):
        create_model("finding_fcn", 3, 1, 2, aggregation="mean")
