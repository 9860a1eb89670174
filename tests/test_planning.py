"""Planning: fingerprints from hand-made manifests and the plans chosen from them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import MetaTensor

from medrec.errors import ConfigError
from medrec.planning import FEW_SLICES, VOXEL_BUDGETS, Plan, fingerprint, make_plan
from medrec.transforms import PreprocessConfig, build_transforms


def _manifest(n: int, modality: str, spacing: tuple[float, float, float] | list, shape: tuple[int, int, int],
              orientation: str = "axial") -> pd.DataFrame:
    spacings = spacing if isinstance(spacing, list) else [spacing] * n
    cols, rows, slices = shape
    return pd.DataFrame([
        {"sample_id": f"s{i:03d}", "patient_id": f"p{i}", "modality": modality, "format": "dicom",
         "spacing_x": sx, "spacing_y": sy, "spacing_z": sz, "cols": cols, "rows": rows, "n_slices": slices,
         "orientation": orientation, "label": str(i % 2)}
        for i, (sx, sy, sz) in enumerate(spacings)
    ])


def _isotropic_ct(n: int = 10, shape: tuple[int, int, int] = (64, 64, 48)) -> pd.DataFrame:
    return _manifest(n, "CT", (1.0, 1.0, 1.0), shape)


def _thick_slice_mr() -> pd.DataFrame:
    spacings = [(0.5, 0.5, 5.0)] * 8 + [(0.5, 0.5, 3.0)] * 2
    return _manifest(10, "MR", spacings, (256, 256, 24))


def _radiographs() -> pd.DataFrame:
    return _manifest(6, "DX", (0.15, 0.15, 1.0), (2500, 2000, 1))


def test_isotropic_ct_fingerprint_from_the_manifest_alone() -> None:
    fp = fingerprint(_isotropic_ct(), max_samples=0)
    assert fp["n_samples"] == 10 and fp["modalities"] == {"CT": 10}
    assert fp["spatial_dims"] == 3 and fp["spacing_median"] == [1.0, 1.0, 1.0] and fp["anisotropy"] == 1.0
    assert fp["extent_median_mm"] == [64.0, 64.0, 48.0] and fp["intensity"] is None


def test_isotropic_ct_plan_keeps_native_geometry_under_budget() -> None:
    plan = make_plan(fingerprint(_isotropic_ct(), max_samples=0), PreprocessConfig())
    assert (plan.preset, plan.spatial_dims, plan.mode) == ("ct", 3, "3d")
    assert plan.spacing == (1.0, 1.0, 1.0) and plan.input_size == (64, 64, 48)
    assert plan.ct_window == (-160.0, 240.0) and plan.ct_window_name == "abdomen"
    assert plan.model_kwargs() == {"spatial_dims": 3}
    assert any("median spacing" in reason for reason in plan.reasons)


def test_large_ct_is_coarsened_isotropically_to_the_budget() -> None:
    plan = make_plan(fingerprint(_isotropic_ct(shape=(512, 512, 300)), max_samples=0), PreprocessConfig())
    assert math.prod(plan.input_size) <= VOXEL_BUDGETS["cpu"][3]
    assert all(n % 8 == 0 for n in plan.input_size)
    assert plan.spacing[0] == plan.spacing[1] == plan.spacing[2] > 1.0
    # The field of view still fits: size x spacing covers the extent.
    assert all(n * s >= e - 1e-6 for n, s, e in zip(plan.input_size, plan.spacing, (512, 512, 300), strict=True))
    assert any("coarsened" in reason for reason in plan.reasons)


def test_gpu_budget_allows_bigger_inputs() -> None:
    fp = fingerprint(_isotropic_ct(shape=(512, 512, 300)), max_samples=0)
    cpu, gpu = make_plan(fp, compute_budget="cpu"), make_plan(fp, compute_budget="gpu")
    assert math.prod(gpu.input_size) > math.prod(cpu.input_size)
    assert math.prod(make_plan(fp, compute_budget=32**3).input_size) <= 32**3


def test_anisotropic_mr_goes_2_5d_with_the_10th_percentile_slice_spacing() -> None:
    fp = fingerprint(_thick_slice_mr(), max_samples=0)
    assert fp["spacing_median"] == [0.5, 0.5, 5.0] and fp["anisotropy"] == 10.0 and fp["n_slices_median"] == 24
    plan = make_plan(fp, PreprocessConfig())
    assert (plan.preset, plan.spatial_dims, plan.mode, plan.slice_context) == ("mr", 3, "2.5d", 1)
    assert plan.spacing[2] == pytest.approx(3.0)  # 10th percentile of [3, 3, 5 x 8], not the median 5
    assert plan.spacing[0] == plan.spacing[1] > 0.5  # in-plane coarsened first to fit the budget
    assert plan.input_size[2] == 40  # 24 x 5 mm / 3 mm, slice axis not rounded to 8
    assert plan.input_size[0] % 8 == 0 and math.prod(plan.input_size) <= VOXEL_BUDGETS["cpu"][3]
    assert plan.ct_window is None and plan.intensity_percentiles == (0.5, 99.5)
    assert plan.model_kwargs() == {"spatial_dims": 3, "slice_mode": "2.5d", "context": 1}
    assert any("10th percentile" in reason for reason in plan.reasons)
    assert any("mode 2.5d" in reason for reason in plan.reasons)


def test_anisotropic_with_many_slices_stays_3d() -> None:
    fp = fingerprint(_manifest(5, "CT", (0.7, 0.7, 5.0), (512, 512, FEW_SLICES + 20)), max_samples=0)
    assert make_plan(fp).mode == "3d"


def test_radiographs_without_slice_spacing() -> None:
    manifest = _radiographs().assign(spacing_z=float("nan"))
    assert fingerprint(manifest, max_samples=0)["spacing_median"] == [0.15, 0.15]


def test_radiographs_are_2d() -> None:
    fp = fingerprint(_radiographs(), max_samples=0)
    assert fp["spatial_dims"] == 2 and fp["spacing_median"] == [0.15, 0.15]
    plan = make_plan(fp, PreprocessConfig())
    assert (plan.preset, plan.spatial_dims, plan.mode) == ("xr", 2, "2d")
    assert len(plan.spacing) == 2 and len(plan.input_size) == 2
    assert math.prod(plan.input_size) <= VOXEL_BUDGETS["cpu"][2]
    assert plan.spacing[0] == plan.spacing[1] > 1.0
    assert not plan.crop_foreground
    assert plan.model_kwargs() == {"spatial_dims": 2}
    deterministic, _ = build_transforms(plan, include_loader=False)
    image = MetaTensor(torch.rand(1, 2500, 2000) * 4000, affine=torch.diag(torch.tensor([-0.15, -0.15, 1.0, 1.0])))
    assert deterministic({"image": image})["image"].shape == (1, *plan.input_size)


def test_config_values_win_and_say_so() -> None:
    fp = fingerprint(_thick_slice_mr(), max_samples=0)
    config = PreprocessConfig(preset="ct", ct_window="lung", spacing=[1.0, 1.0, 5.0], input_size=[96, 96, 24],
                              mode="3d", augment=False)
    plan = make_plan(fp, config)
    assert (plan.preset, plan.mode, plan.spacing, plan.input_size) == ("ct", "3d", (1.0, 1.0, 5.0), (96, 96, 24))
    assert plan.ct_window == (-1350.0, 150.0) and plan.augment is None
    for start in ("preset ct", "mode 3d", "spacing [1, 1, 5]", "input size [96, 96, 24]", "CT window lung"):
        assert any(r.startswith(start) and r.endswith("from config") for r in plan.reasons), start


def test_custom_window_and_explicit_spacing_caps_size() -> None:
    fp = fingerprint(_isotropic_ct(shape=(512, 512, 300)), max_samples=0)
    plan = make_plan(fp, PreprocessConfig(ct_window=[-100, 300], spacing=[1.0, 1.0, 1.0]))
    assert plan.spacing == (1.0, 1.0, 1.0) and math.prod(plan.input_size) <= VOXEL_BUDGETS["cpu"][3]
    assert plan.ct_window == (-100.0, 300.0) and plan.ct_window_name == "custom"
    assert any("center-cropped" in reason for reason in plan.reasons)


@pytest.mark.parametrize(
    ("manifest", "config", "match"),
    [
        (_radiographs, {"mode": "3d"}, "preprocessing.mode"),
        (_radiographs, {"spacing": [1, 1, 1]}, "preprocessing.spacing: .* 2D"),
        (_isotropic_ct, {"input_size": [64, 64]}, "preprocessing.input_size"),
    ],
)
def test_contradicting_config_is_a_config_error(manifest, config: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_plan(fingerprint(manifest(), max_samples=0), PreprocessConfig(**config))


def test_no_geometry_needs_explicit_spacing() -> None:
    manifest = _isotropic_ct().drop(columns=["spacing_x"])
    fp = fingerprint(manifest, max_samples=0)
    with pytest.raises(ConfigError, match="set preprocessing.spacing"):
        make_plan(fp)
    plan = make_plan(fp, PreprocessConfig(spacing=[1, 1, 1], input_size=[32, 32, 32], mode="3d"))
    assert plan.input_size == (32, 32, 32)


def test_plan_is_json_serialisable() -> None:
    plan = make_plan(fingerprint(_thick_slice_mr(), max_samples=0))
    again = Plan.model_validate_json(plan.model_dump_json())
    assert again == plan
    assert isinstance(plan.model_dump(mode="json")["reasons"], list)


def test_sagittal_geometry_is_mapped_to_ras_axes() -> None:
    # Sagittal: rows along A-P (y), columns along S-I (z), slices along L-R (x).
    fp = fingerprint(_manifest(3, "MR", (0.5, 0.6, 4.0), (200, 100, 30), orientation="sagittal"), max_samples=0)
    assert fp["spacing_median"] == [4.0, 0.5, 0.6]
    assert fp["extent_median_mm"] == [120.0, 100.0, 60.0]


class _Phantoms:
    """A sample loader for hand-made manifests: CT volumes with a 'body' of known HU in air."""

    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def __call__(self, row) -> MetaTensor:
        self.calls.append(row["sample_id"])
        if row["sample_id"] in self.fail:
            raise ValueError("broken file")
        volume = torch.full((1, 64, 64, 48), -1000.0)
        volume[0, 10:50, 20:40, 4:44] = 50.0  # body 40 x 20 x 40 voxels of 1 mm
        return MetaTensor(volume, affine=torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64)))


def test_fingerprint_intensities_and_foreground_extent_from_loaded_samples() -> None:
    loader = _Phantoms()
    fp = fingerprint(_isotropic_ct(20), sample_loader=loader, max_samples=5, seed=3)
    assert len(loader.calls) == 5
    assert fp["intensity"]["n_loaded"] == 5
    assert fp["intensity"]["p50"] == 50.0 and fp["intensity"]["std"] == 0.0  # foreground = body only (HU > -500)
    assert fp["foreground_extent_median_mm"] == [40.0, 20.0, 40.0]
    plan = make_plan(fp)
    assert plan.input_size == (40, 24, 40)  # from the foreground, rounded up to multiples of 8
    assert any("foreground" in reason for reason in plan.reasons)
    # Without cropping the full field of view is used.
    assert make_plan(fp, PreprocessConfig(crop_foreground=False)).input_size == (64, 64, 48)


def test_fingerprint_subsample_is_seeded() -> None:
    first, second, other = _Phantoms(), _Phantoms(), _Phantoms()
    fingerprint(_isotropic_ct(30), sample_loader=first, max_samples=4, seed=1)
    fingerprint(_isotropic_ct(30), sample_loader=second, max_samples=4, seed=1)
    fingerprint(_isotropic_ct(30), sample_loader=other, max_samples=4, seed=2)
    assert first.calls == second.calls and first.calls != other.calls


def test_unloadable_samples_are_counted_not_fatal() -> None:
    fp = fingerprint(_isotropic_ct(4), sample_loader=_Phantoms(fail={"s001"}), max_samples=4)
    assert fp["n_load_failures"] == 1 and fp["intensity"]["n_loaded"] == 3


def test_unknown_modality_with_hu_values_is_ct() -> None:
    manifest = _isotropic_ct(4).assign(modality="")
    plan = make_plan(fingerprint(manifest, sample_loader=_Phantoms(), max_samples=4))
    assert plan.preset == "ct" and any("look like HU" in reason for reason in plan.reasons)
    with pytest.raises(ConfigError, match="set preprocessing.preset"):
        make_plan(fingerprint(manifest, max_samples=0))


def test_empty_manifest_is_refused() -> None:
    with pytest.raises(ConfigError, match="no rows"):
        fingerprint(pd.DataFrame(columns=["sample_id"]))


def test_intensity_percentiles_match_numpy() -> None:
    rng = np.random.default_rng(0)
    images = [rng.normal(100, 20, (1, 20, 20, 10)).astype(np.float32) for _ in range(3)]

    def loader(row) -> MetaTensor:
        return MetaTensor(torch.from_numpy(images[int(row["sample_id"][1:])]), affine=torch.eye(4, dtype=torch.float64))

    # CT: every voxel (about 100 HU) is above the -500 HU body threshold, so all count.
    manifest = _manifest(3, "CT", (1.0, 1.0, 1.0), (20, 20, 10))
    fp = fingerprint(manifest, sample_loader=loader, max_samples=3)
    voxels = np.concatenate([image.ravel() for image in images])
    assert fp["intensity"]["p50"] == pytest.approx(np.percentile(voxels, 50), rel=1e-3)
    assert fp["intensity"]["p99_5"] == pytest.approx(np.percentile(voxels, 99.5), rel=1e-3)
    assert fp["intensity"]["mean"] == pytest.approx(voxels.mean(), rel=1e-4)


def test_finding_size_refines_a_spacing_that_would_blur_the_smallest_finding() -> None:
    manifest = _manifest(10, "CT", (2.8, 2.8, 5.0), (96, 96, 36))
    plan = make_plan(fingerprint(manifest, max_samples=0), PreprocessConfig(mode="3d"), finding_size_mm=12.0,
                     finding_size_source="5th percentile of 40 annotated training lesions")
    assert plan.spacing == (2.8, 2.8, 3.0)  # 12 mm / 4 voxels on the slice axis; in-plane is fine already
    assert plan.input_size == (96, 96, 64)  # 180 mm / 3 mm = 60 slices, a multiple of 8; within the budget
    assert any("smallest finding (12 mm, 5th percentile" in reason for reason in plan.reasons)


def test_finding_size_caps_how_far_a_large_input_is_coarsened() -> None:
    manifest = _manifest(10, "CT", (0.7, 0.7, 1.0), (512, 512, 300))
    budget = VOXEL_BUDGETS["cpu"][3]
    free = make_plan(fingerprint(manifest, max_samples=0), PreprocessConfig(mode="3d"))
    capped = make_plan(fingerprint(manifest, max_samples=0), PreprocessConfig(mode="3d"), finding_size_mm=10.0)
    assert max(free.spacing) > 2.5 and math.prod(free.input_size) <= budget  # the budget alone blurs 10 mm away
    assert capped.spacing == (2.5, 2.5, 2.5)  # coarsened towards the budget, stopped at a quarter of 10 mm
    extent = np.array([512 * 0.7, 512 * 0.7, 300 * 1.0])
    assert all(n >= e / 2.5 for n, e in zip(capped.input_size, extent, strict=True))
    assert any("at most a quarter of the smallest finding" in reason for reason in capped.reasons)
    assert any("not coarsened further" in reason for reason in capped.reasons)


def test_finding_size_does_not_stop_coarsening_that_fits_the_budget_first() -> None:
    manifest = _manifest(10, "CT", (0.8, 0.8, 0.8), (160, 160, 120))
    plan = make_plan(fingerprint(manifest, max_samples=0), PreprocessConfig(mode="3d"), finding_size_mm=20.0)
    assert max(plan.spacing) < 5.0 and math.prod(plan.input_size) <= VOXEL_BUDGETS["cpu"][3]
    assert not any("not coarsened further" in reason for reason in plan.reasons)


def test_config_finding_size_overrides_the_annotations() -> None:
    manifest = _manifest(10, "CT", (2.8, 2.8, 5.0), (128, 128, 36))
    plan = make_plan(fingerprint(manifest, max_samples=0), PreprocessConfig(mode="3d", finding_size_mm=8.0),
                     finding_size_mm=30.0)
    assert plan.spacing == (2.0, 2.0, 2.0)
    assert any("preprocessing.finding_size_mm" in reason for reason in plan.reasons)
