"""build_transforms: the deterministic chain on synthetic MetaTensors with known values and geometry."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai import transforms as mt
from monai.data import MetaTensor

from medrec.errors import ConfigError
from medrec.planning import Plan
from medrec.transforms import AugmentConfig, build_transforms, otsu_threshold
from medrec.transforms.presets import anti_aliasing_sigma


def _plan(**fields) -> Plan:
    base = {"preset": "ct", "spatial_dims": 3, "mode": "3d", "spacing": (1.0, 1.0, 2.0), "input_size": (41, 8, 6),
            "ct_window": (-160.0, 240.0), "ct_window_name": "abdomen", "crop_foreground": False, "crop_margin": 0,
            "foreground_threshold": -500.0}
    return Plan(**(base | fields))


def _meta(values: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.as_tensor(values, dtype=torch.float32)[None], affine=torch.as_tensor(affine))


def _spacing(image: MetaTensor) -> list[float]:
    affine = np.asarray(image.affine)
    return [float(np.linalg.norm(affine[:3, axis])) for axis in range(image.ndim - 1)]


def test_ct_window_maps_lower_to_0_and_upper_to_1() -> None:
    hu = -1000.0 + 40.0 * np.arange(41)  # -160 HU at i = 21, 240 HU at i = 31
    volume = np.broadcast_to(hu[:, None, None], (41, 8, 6)).copy()
    plan = _plan()
    deterministic, _ = build_transforms(plan, include_loader=False)
    out = deterministic({"image": _meta(volume, np.diag([1.0, 1.0, 2.0, 1.0]))})["image"]
    assert type(out) is torch.Tensor and out.dtype == torch.float32
    assert out.shape == (1, 41, 8, 6)
    expected = np.clip((hu + 160.0) / 400.0, 0.0, 1.0)
    np.testing.assert_allclose(out[0, :, 3, 3].numpy(), expected, atol=1e-6)
    assert out[0, 21].max() == 0.0 and out[0, 31].min() == 1.0
    assert out[0, 26, 0, 0] == pytest.approx(0.5)


def _ct_body_phantom() -> tuple[np.ndarray, np.ndarray]:
    """Air (-1000 HU) with a 20 x 30 x 6 voxel 'body' of 40 HU; 0.8 x 0.8 x 4 mm voxels, LPS-derived RAS affine."""
    volume = np.full((40, 40, 10), -1000.0)
    volume[10:30, 5:35, 2:8] = 40.0
    affine = np.diag([-0.8, -0.8, 4.0, 1.0])
    affine[:3, 3] = [100.0, 120.0, -50.0]
    return volume, affine


def test_ct_chain_resamples_crops_and_pads() -> None:
    volume, affine = _ct_body_phantom()
    plan = _plan(spacing=(1.6, 1.6, 4.0), input_size=(32, 32, 8), crop_foreground=True)
    deterministic, _ = build_transforms(plan, include_loader=False, track_meta=True)
    out = deterministic({"image": _meta(volume, affine)})["image"]
    assert out.shape == (1, 32, 32, 8)
    assert _spacing(out) == pytest.approx([1.6, 1.6, 4.0])
    # Orientation RAS: every axis now points along +x, +y, +z.
    assert np.all(np.diag(np.asarray(out.affine))[:3] > 0)
    body = out[0] > 0.25
    coords = [np.nonzero(body.any(dim=tuple(d for d in range(3) if d != axis)).numpy())[0] for axis in range(3)]
    extent = [int(c.max() - c.min() + 1) for c in coords]
    # 16 x 24 x 24 mm of body at 1.6 x 1.6 x 4 mm; MONAI's Spacing may keep one more voxel for a partial one.
    assert extent[0] in (10, 11) and extent[1] in (15, 16) and extent[2] == 6
    assert out[0][body].mean().item() == pytest.approx(0.5, abs=1e-4)  # 40 HU in W400 L40
    assert out.min() == 0.0 and out.max() <= 1.0
    # Centered: padding on both sides of the body along x.
    assert coords[0].min() > 0 and coords[0].max() < 31


def test_ct_crop_happens_on_hu_before_windowing() -> None:
    """Fat (-100 HU) sits below the abdomen window's bottom only after windowing; the crop must keep it."""
    volume = np.full((40, 40, 10), -1000.0)
    volume[5:35, 5:35, 1:9] = -100.0
    plan = _plan(spacing=(1.0, 1.0, 1.0), input_size=(30, 30, 8), crop_foreground=True)
    deterministic, _ = build_transforms(plan, include_loader=False)
    out = deterministic({"image": _meta(volume, np.eye(4))})["image"]
    assert torch.allclose(out, torch.full_like(out, 60.0 / 400.0))


def test_empty_foreground_keeps_the_whole_image() -> None:
    plan = _plan(spacing=(1.0, 1.0, 1.0), input_size=(8, 8, 8), crop_foreground=True)
    deterministic, _ = build_transforms(plan, include_loader=False)
    out = deterministic({"image": _meta(np.full((8, 8, 8), -1000.0), np.eye(4))})["image"]
    assert out.shape == (1, 8, 8, 8) and out.max() == 0.0


def test_mr_chain_z_scores_the_foreground() -> None:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"))
    sphere = ((grid - 16) ** 2).sum(0) < 10**2
    volume = np.zeros((32, 32, 32))
    volume[sphere] = rng.normal(800.0, 150.0, sphere.sum()).clip(1.0)
    volume[16, 16, 16] = 1e5  # an outlier, clipped by the 99.5th percentile
    plan = _plan(preset="mr", spacing=(1.0, 1.0, 1.0), input_size=(32, 32, 32), ct_window=None,
                 ct_window_name=None, intensity_percentiles=(0.5, 99.5), crop_foreground=True, crop_margin=2,
                 foreground_threshold=None)
    deterministic, _ = build_transforms(plan, include_loader=False)
    out = deterministic({"image": _meta(volume, np.eye(4))})["image"][0]
    foreground = out[out != 0]
    assert foreground.numel() == pytest.approx(sphere.sum(), abs=2)
    assert foreground.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert foreground.std().item() == pytest.approx(1.0, abs=1e-2)
    assert out.max().item() < 4.0


def test_mr_crop_ignores_a_noisy_background() -> None:
    rng = np.random.default_rng(1)
    volume = np.abs(rng.normal(0.0, 60.0, (48, 48, 20)))  # noise floor, as in magnitude images
    volume[12:36, 8:40, 4:16] = rng.normal(900.0, 80.0, (24, 32, 12))
    plan = _plan(preset="mr", spacing=(1.0, 1.0, 1.0), input_size=(48, 48, 20), ct_window=None,
                 ct_window_name=None, intensity_percentiles=(0.5, 99.5), crop_foreground=True, crop_margin=0)
    deterministic, _ = build_transforms(plan, include_loader=False, track_meta=True)
    crop = next(t for t in deterministic.transforms if isinstance(t, mt.CropForegroundd))
    cropped = crop({"image": _meta(volume, np.eye(4))})["image"]
    assert cropped.shape == (1, 24, 32, 12)


def test_otsu_threshold_separates_two_classes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(50, 10, 5000), rng.normal(500, 50, 2000), [1e6]])
    threshold = otsu_threshold(torch.as_tensor(values))
    assert 120 < threshold < 400
    assert otsu_threshold(torch.zeros(10)) == 0.0


def test_radiograph_affine_in_patient_space_is_flattened() -> None:
    """A PA chest film's affine maps its axes onto x and z (as the DICOM loader gives it)."""
    affine = np.array([[-1.5, 0, 0, 199.0], [0, 0, -1, 0], [0, -1.5, 0, 199.0], [0, 0, 0, 1]])
    image = np.random.default_rng(0).uniform(1000, 9000, (64, 64))
    plan = Plan(preset="xr", spatial_dims=2, mode="2d", spacing=(3.0, 3.0), input_size=(32, 32),
                intensity_percentiles=(0.5, 99.5), crop_foreground=False)
    deterministic, _ = build_transforms(plan, include_loader=False, track_meta=True)
    out = deterministic({"image": _meta(image, affine)})["image"]
    assert out.shape == (1, 32, 32)
    assert _spacing(out)[:2] == pytest.approx([3.0, 3.0])


def test_xr_chain_is_2d_and_scaled_to_unit_range() -> None:
    image = np.tile(np.linspace(0.0, 4095.0, 60)[:, None], (1, 40))
    affine = np.diag([-0.5, -0.5, 1.0, 1.0])
    plan = Plan(preset="xr", spatial_dims=2, mode="2d", spacing=(1.0, 1.0), input_size=(32, 24),
                intensity_percentiles=(0.5, 99.5), crop_foreground=False)
    deterministic, augment = build_transforms(plan, include_loader=False, track_meta=True)
    assert not any(isinstance(t, mt.Orientationd) for t in deterministic.transforms)
    assert not any(isinstance(t, mt.CropForegroundd) for t in deterministic.transforms)
    out = deterministic({"image": _meta(image, affine)})["image"]
    assert out.shape == (1, 32, 24)
    assert _spacing(out)[:2] == pytest.approx([1.0, 1.0])
    assert out.min().item() == pytest.approx(0.0) and out.max().item() == pytest.approx(1.0)
    assert augment is None


def test_augmentation_only_when_enabled() -> None:
    assert build_transforms(_plan(), include_loader=False)[1] is None
    _, augment = build_transforms(_plan(augment=AugmentConfig()), include_loader=False)
    kinds = [type(t) for t in augment.transforms]
    assert kinds.count(mt.RandFlipd) == 3
    assert mt.RandAffined in kinds and mt.RandGaussianNoised in kinds and mt.RandAdjustContrastd in kinds
    assert mt.RandBiasFieldd not in kinds  # bias fields are an MR artefact
    mr = _plan(preset="mr", ct_window=None, intensity_percentiles=(0.5, 99.5), augment=AugmentConfig())
    assert mt.RandBiasFieldd in [type(t) for t in build_transforms(mr, include_loader=False)[1].transforms]
    xr = Plan(preset="xr", spatial_dims=2, mode="2d", spacing=(1.0, 1.0), input_size=(8, 8), augment=AugmentConfig())
    assert [type(t) for t in build_transforms(xr, include_loader=False)[1].transforms].count(mt.RandFlipd) == 2


def test_slice_plans_rotate_in_plane_only() -> None:
    aug = AugmentConfig(affine_prob=1.0, rotate_deg=45.0, scale=0.3, flip_prob=0.0)
    plan = _plan(mode="2.5d", slice_context=1, input_size=(16, 16, 6), augment=aug)
    _, augment = build_transforms(plan, include_loader=False)
    sample = torch.zeros(1, 16, 16, 6)
    sample[..., 3] = 1.0  # one bright slice stays one slice
    for seed in range(5):
        augment.set_random_state(seed=seed)
        out = augment({"image": sample})["image"]
        assert out[..., [0, 1, 2, 4, 5]].abs().max() < 0.5 < out[..., 3].abs().max()


def test_augmentation_is_seeded_and_keeps_shape() -> None:
    plan = _plan(input_size=(16, 16, 8), augment=AugmentConfig(affine_prob=1.0, noise_prob=1.0, contrast_prob=1.0))
    _, augment = build_transforms(plan, include_loader=False)
    sample = torch.rand(1, 16, 16, 8)
    outputs = []
    for _ in range(2):
        augment.set_random_state(seed=7)
        outputs.append(augment({"image": sample.clone()})["image"])
    assert type(outputs[0]) is torch.Tensor and outputs[0].shape == sample.shape
    torch.testing.assert_close(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], sample)


def test_chain_order_check_and_loader_first() -> None:
    plan = _plan(crop_foreground=True)
    deterministic, _ = build_transforms(plan)
    names = [type(t).__name__ for t in deterministic.transforms]
    assert names == ["CheckPlanInputd", "LoadSampled", "Orientationd", "CropForegroundd", "AntiAliasd", "Spacingd",
                     "ScaleIntensityRanged", "ResizeWithPadOrCropd", "EnsureTyped"]
    pickle.dumps(deterministic)  # DataLoader workers receive the chain by pickling
    without, _ = build_transforms(_plan(crop_foreground=True, anti_aliasing=False))
    assert "AntiAliasd" not in [type(t).__name__ for t in without.transforms]


def test_anti_aliasing_sigma_follows_the_downsampling_factor() -> None:
    # factor 4 -> (4 - 1) / 2 = 1.5 voxels; kept or finer axes are not smoothed
    assert anti_aliasing_sigma((0.7, 0.7, 5.0), (2.8, 2.8, 5.0)) == pytest.approx((1.5, 1.5, 0.0))
    assert anti_aliasing_sigma((2.0, 1.0), (1.0, 3.0)) == pytest.approx((0.0, 1.0))


def test_downsampling_averages_noise_instead_of_sampling_it() -> None:
    rng = np.random.default_rng(0)
    noise = 40.0 * rng.standard_normal((96, 96, 24))  # 40 HU white noise on a 0.75 x 0.75 x 2 mm grid
    affine = np.diag([0.75, 0.75, 2.0, 1.0])
    on, _ = build_transforms(_plan(spacing=(3.0, 3.0, 4.0), input_size=(24, 24, 12), ct_window=(-200.0, 200.0)),
                             include_loader=False)
    off, _ = build_transforms(_plan(spacing=(3.0, 3.0, 4.0), input_size=(24, 24, 12), ct_window=(-200.0, 200.0),
                                    anti_aliasing=False), include_loader=False)
    image = _meta(noise, affine)
    smoothed = on({"image": image})["image"].numpy() * 400.0 - 200.0  # back to HU
    sampled = off({"image": image})["image"].numpy() * 400.0 - 200.0
    torch.testing.assert_close(image, _meta(noise, affine))  # the input is left as it was
    # Interpolating at the new grid points keeps most of a voxel's noise (bilinear mixes few
    # neighbours). Averaging the 4 x 4 x 2 voxels each output voxel replaces would leave 40 / sqrt(32)
    # = 7 HU; the Gaussian's effective footprint is close to that.
    assert sampled.std() > 25.0
    assert smoothed.std() < 12.0


def test_anti_aliasing_keeps_smooth_anatomy() -> None:
    ramp = np.broadcast_to((np.arange(96) * 2.0 - 96.0)[:, None, None], (96, 96, 24)).copy()  # -96..94 HU along x
    affine = np.diag([0.75, 0.75, 2.0, 1.0])
    plan = _plan(spacing=(3.0, 3.0, 4.0), input_size=(24, 24, 12), ct_window=(-200.0, 200.0))
    on, _ = build_transforms(plan, include_loader=False)
    off, _ = build_transforms(plan.model_copy(update={"anti_aliasing": False}), include_loader=False)
    smoothed = on({"image": _meta(ramp, affine)})["image"].numpy()
    sampled = off({"image": _meta(ramp, affine)})["image"].numpy()
    # a linear ramp is unchanged by a symmetric kernel away from the ends
    np.testing.assert_allclose(smoothed[0, 3:-3], sampled[0, 3:-3], atol=1e-4)


def test_a_version_1_plan_resamples_without_anti_aliasing() -> None:
    data = _plan().model_dump(mode="json")
    data.pop("anti_aliasing")
    data["version"] = 1
    assert Plan.model_validate(data).anti_aliasing is False
    data["version"] = 2
    assert Plan.model_validate(data).anti_aliasing is True


def test_loader_to_tensor_from_a_nifti_row(tmp_path: Path) -> None:
    volume, affine = _ct_body_phantom()
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.int16), affine), str(path))
    row = {"sample_id": "abc", "patient_id": "p1", "format": "nifti", "path": str(path), "files": "",
           "modality": "CT", "label": "1"}
    plan = _plan(spacing=(1.6, 1.6, 4.0), input_size=(32, 32, 8), crop_foreground=True)
    deterministic, _ = build_transforms(plan)
    data = deterministic(row)
    assert data["image"].shape == (1, 32, 32, 8) and type(data["image"]) is torch.Tensor
    assert data["label"] == "1"
    assert 10 * 15 * 6 <= (data["image"] > 0.25).sum().item() <= 11 * 16 * 6


def test_plan_dimensions_must_agree() -> None:
    with pytest.raises(ConfigError, match="must both have 3 values"):
        build_transforms(_plan(spacing=(1.0, 1.0)), include_loader=False)
