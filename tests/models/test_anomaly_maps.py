"""The anomaly scorers beside the finding-map head: the Gaussian of features, the autoencoder's
reconstruction error, and the normal reference that makes their maps logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from medrec.errors import ModelError
from medrec.models import create_model
from medrec.models.findings import pool_map
from medrec.models.normal_reference import FeatureDistance, NormalReference


def test_the_gaussian_and_its_distances_match_numpy():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(4, 4))
    bank = rng.normal(size=(5000, 4)) @ mixing + np.array([1.0, -2.0, 0.5, 3.0])
    distance = FeatureDistance(4)
    distance.fit(torch.from_numpy(bank), ridge=0.01)
    covariance = np.cov(bank, rowvar=False)
    covariance += 0.01 * np.trace(covariance) / 4 * np.eye(4)
    np.testing.assert_allclose(distance.mean.numpy(), bank.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(distance.precision.numpy(), np.linalg.inv(covariance), rtol=1e-4, atol=1e-5)
    points = rng.normal(size=(3, 4, 2, 2))  # (N, F, X, Y) feature maps
    got = distance.squared_distance(torch.from_numpy(points).float()).numpy()
    centred = points.transpose(0, 2, 3, 1) - bank.mean(0)
    expected = np.einsum("nxyf,fg,nxyg->nxy", centred, np.linalg.inv(covariance), centred)[:, None]
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_the_reference_puts_the_median_normal_study_at_logit_zero():
    reference = NormalReference()
    scores = torch.tensor([3.0, 5.0, 4.0, 10.0, 6.0])
    reference.set_reference(scores)
    assert float(reference.offset) == 5.0 and float(reference.scale) == pytest.approx(float(scores.std()))
    assert float(reference.standardise(torch.tensor(5.0 + float(scores.std())))) == pytest.approx(1.0)
    assert bool(reference.fitted)


def _volume() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 1, 24, 20, 5)


def test_an_unfitted_feature_distance_leaves_the_head_map_and_a_fitted_one_replaces_it():
    torch.manual_seed(0)
    plain = create_model("finding_fcn", 3, 1, 2, context=1).eval()
    scored = create_model("finding_fcn", 3, 1, 2, context=1, distance_layers=(3, 5)).eval()
    scored.load_state_dict(plain.state_dict(), strict=False)
    x = _volume()
    with torch.no_grad():
        assert torch.allclose(plain.finding_map(x), scored.finding_map(x), atol=1e-5)
        scored.distance.fit(torch.randn(500, 112))
        scored.distance.set_reference(torch.tensor([1.0, 2.0, 3.0]))
        maps = scored.finding_map(x)
        # independently: the features of the centre stack of slice 2, their distance, standardised, upsampled
        stack = torch.cat([x[:1, :, :, :, z] for z in (1, 2, 3)], dim=1)
        features = scored.net.layer_features(stack, (3, 5))
        expected = (scored.distance.squared_distance(features) - 2.0) / 1.0
        expected = F.interpolate(expected, size=(24, 20), mode="bilinear", align_corners=False)
        assert torch.allclose(maps[0, :, :, :, 2], expected[0], rtol=1e-4, atol=1e-3)
        logits = scored(x)
        assert torch.allclose(logits[:, 1] * 2, pool_map(maps, "max"), atol=1e-4)


def test_the_fitted_reference_travels_with_the_weights(tmp_path):
    model = create_model("finding_fcn", 3, 1, 2, context=1, distance_layers=[3, 5]).eval()
    model.distance.fit(torch.randn(500, 112))
    model.distance.set_reference(torch.tensor([4.0, 8.0]))
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    again = create_model("finding_fcn", 3, 1, 2, context=1, distance_layers=[3, 5]).eval()
    again.load_state_dict(load_file(tmp_path / "w.safetensors"))
    x = _volume()
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_the_autoencoder_redraws_stacks_and_maps_its_error():
    model = create_model("anomaly_autoencoder", 3, 1, 2, context=1)
    stacks = torch.randn(4, 3, 24, 20)
    assert model(stacks, dense=True).shape == stacks.shape  # what training fits
    model.eval()
    x = _volume()
    with torch.no_grad():
        maps = model.finding_map(x)
        stack = torch.cat([x[:1, :, :, :, z] for z in (1, 2, 3)], dim=1)
        error = (stack - model.net.reconstruct(stack)).abs().mean(dim=1, keepdim=True)
        expected = F.avg_pool2d(error, 5, stride=1, padding=2, count_include_pad=False)
    assert maps.shape == (2, 1, 24, 20, 5)
    assert torch.allclose(maps[0, :, :, :, 2], expected[0], atol=1e-5)


@pytest.mark.parametrize("name", ["finding_fcn", "anomaly_autoencoder"])
def test_the_finding_logit_goes_where_the_positive_class_is(name):
    torch.manual_seed(0)
    first = create_model(name, 3, 1, 2, context=1, positive_output=0).eval()
    last = create_model(name, 3, 1, 2, context=1).eval()
    last.load_state_dict(first.state_dict())
    x = _volume()
    with torch.no_grad():
        assert torch.allclose(first(x), last(x).flip(1))
        assert torch.allclose(torch.softmax(first(x), 1)[:, 0], torch.sigmoid(pool_map(first.finding_map(x), "max")))


def test_bad_arguments_name_the_model():
    with pytest.raises(ModelError, match="distance_layers must index the 6 convolutions"):
        create_model("finding_fcn", 3, 1, 2, distance_layers=[6])
    with pytest.raises(ModelError, match="positive_output must be 0 or 1"):
        create_model("finding_fcn", 3, 1, 2, positive_output=2)
    with pytest.raises(ModelError, match="anomaly_autoencoder .* exactly 2 classes"):
        create_model("anomaly_autoencoder", 3, 1, 3)
