from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, Orientationd, ScaleIntensityRanged, Spacingd
from score_helpers import StandInRun
from torch import nn

from medrec.loader import LoadSampled
from medrec.score import ScoreOptions, read_rows, score_manifest
from medrec.score.explain import GradCamExplainer, grad_cam, resample_to_grid, safe_file_stem


class BrightSpotDetector(nn.Module):
    """Positive logit = max response of a bright-spot filter, negative logit = max of a dark-spot filter.

    The evidence for the positive class is known by construction: the bright spot.
    """

    def __init__(self, spatial_dims: int = 3) -> None:
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.detect = conv(1, 2, 3, padding=1)
        self.mix = conv(2, 2, 1)
        with torch.no_grad():
            self.detect.weight.zero_()
            self.detect.weight[0] = 1.0 / 27
            self.detect.weight[1] = -1.0 / 27
            self.detect.bias.fill_(-0.2)
            self.mix.weight.zero_()
            self.mix.weight[0, 0] = 1.0
            self.mix.weight[1, 1] = 1.0
            self.mix.bias.zero_()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.mix(self.act(self.detect(x)))
        pooled = features.flatten(2).amax(dim=2)  # (B, 2): [bright, dark]
        return torch.stack([4.0 * pooled[:, 1], 4.0 * pooled[:, 0]], dim=1)  # classes: negative, positive


def _volume_with_spot(shape=(20, 18, 10), centre=(14, 5, 6), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    volume = rng.normal(0.0, 0.05, size=shape).astype(np.float32)
    region = tuple(slice(c - 1, c + 2) for c in centre)
    volume[region] += 1.0
    return volume


def test_positive_class_map_is_high_at_the_bright_spot():
    volume = _volume_with_spot()
    heat = grad_cam(BrightSpotDetector(), torch.from_numpy(volume)[None], class_index=1)
    assert heat.shape == volume.shape and heat.max() == pytest.approx(1.0) and heat.min() >= 0
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert np.abs(np.array(peak) - np.array([14, 5, 6])).max() <= 1
    spot = heat[13:16, 4:7, 5:8].mean()
    elsewhere = np.delete(heat.reshape(-1), np.ravel_multi_index(np.indices((3, 3, 3)).reshape(3, -1)
                                                                   + np.array([[13], [4], [5]]), heat.shape)).mean()
    assert spot > 5 * elsewhere  # polarity: high means evidence for the positive class


def test_single_logit_model_and_2d_image():
    class OneLogit(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = BrightSpotDetector(spatial_dims=2)

        def forward(self, x):
            logits = self.inner(x)
            return (logits[:, 1] - logits[:, 0])[:, None]

    image = _volume_with_spot(shape=(16, 16, 3), centre=(4, 11, 1))[:, :, 1]
    heat = grad_cam(OneLogit(), torch.from_numpy(image)[None], class_index=1)
    assert np.unravel_index(np.argmax(heat), heat.shape) == pytest.approx((4, 11), abs=1)


def test_slice_model_map_lands_on_the_right_slice():
    from medrec.models import SliceAggregator

    model = SliceAggregator(BrightSpotDetector(spatial_dims=2), aggregation="max", chunk_size=3)
    volume = _volume_with_spot(shape=(16, 16, 8), centre=(9, 6, 5))
    heat = grad_cam(model, torch.from_numpy(volume)[None], class_index=1)
    assert heat.shape == volume.shape
    assert np.unravel_index(np.argmax(heat), heat.shape) == pytest.approx((9, 6, 5), abs=1)


def test_resample_to_grid_inverts_a_flip_and_zoom():
    values = np.zeros((8, 8, 4), dtype=np.float32)
    values[6, 1, 2] = 1.0
    source = np.diag([-2.0, 2.0, 3.0, 1.0])
    source[:3, 3] = [14.0, 0.0, 0.0]  # voxel i -> x = 14 - 2 i
    target = np.diag([1.0, 1.0, 3.0, 1.0])  # 1 mm grid, not flipped
    out = resample_to_grid(values, source, target, (16, 16, 4))
    assert np.unravel_index(np.argmax(out), out.shape) == (2, 2, 2)  # x = 14 - 12 = 2 mm, y = 2 mm


def test_maps_come_back_on_the_input_grid(tmp_path):
    volume = _volume_with_spot(shape=(24, 20, 12), centre=(17, 6, 8))
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = [-30.0, 12.0, 4.0]
    path = tmp_path / "spot.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    manifest_row = {"sample_id": "abc123", "patient_id": "P1", "study_uid": "1.2", "series_uid": "1.3",
                    "modality": "CT", "format": "nifti", "path": str(path), "files": "", "label": "1"}

    class ResampledRun(StandInRun):
        def deterministic_transforms(self):
            return Compose([
                LoadSampled(keys="image"),
                Orientationd(keys="image", axcodes="LPS"),  # flips i and j
                Spacingd(keys="image", pixdim=(1.6, 1.6, 2.0)),  # halves i and j
                ScaleIntensityRanged(keys="image", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0),
            ])

    run = ResampledRun(model=BrightSpotDetector())
    import pandas as pd

    out = tmp_path / "p.csv"
    explain_dir = tmp_path / "cam"
    score_manifest(run, pd.DataFrame([manifest_row]), out, ScoreOptions(explain_dir=explain_dir), model_sha256="m",
                   show_progress=False)
    row = read_rows(out)[1][0]
    assert row["error"] == "" and float(row["score"]) > 0.5
    saved = nib.load(explain_dir / "abc123.nii.gz")
    np.testing.assert_allclose(saved.affine, affine)
    heat = np.asarray(saved.dataobj)
    assert heat.shape == volume.shape
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert np.abs(np.array(peak) - np.array([17, 6, 8])).max() <= 2  # within the resampling blur
    png = (explain_dir / "abc123.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # deterministic bytes: the same sample explained again gives the same files
    explainer = GradCamExplainer(run, tmp_path / "again")
    image = run.deterministic_transforms()(dict(manifest_row))["image"]
    explainer.explain(manifest_row, torch.as_tensor(image).float(), np.asarray(image.affine))
    assert (tmp_path / "again" / "abc123.png").read_bytes() == png
    assert (tmp_path / "again" / "abc123.nii.gz").read_bytes() == (explain_dir / "abc123.nii.gz").read_bytes()


def test_file_names_never_come_from_unsafe_ids():
    assert safe_file_stem("a1b2c3") == "a1b2c3"
    for unsafe in ("../../etc/passwd", "DOE^JOHN 1970", "", ".hidden", "a/b"):
        stem = safe_file_stem(unsafe)
        assert stem.startswith("sample-") and "/" not in stem and len(stem) == 23
