"""The model registry: every registered model builds and runs in 2D and 3D; errors suggest names."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from medrec.errors import ModelError
from medrec.models import (
    SliceAggregator,
    count_parameters,
    create_model,
    list_models,
    model_family,
    model_names,
    register_model,
)
from medrec.models.registry import _REGISTRY

EXPECTED = {"cnn_small", "resnet10", "resnet18", "resnet34", "resnet50", "densenet121", "seresnet50",
            "efficientnet_b0", "finding_fcn", "anomaly_autoencoder"}


def test_registry_holds_the_promised_models() -> None:
    assert EXPECTED <= set(model_names())


# Weight initialisation of these takes seconds each on a shared 2-core machine; their families keep a
# fast case (resnet10 and resnet18 in 2D and 3D, the 2D builds of the others).
HEAVY = {("resnet34", 2), ("resnet34", 3), ("resnet50", 2), ("resnet50", 3), ("seresnet50", 3), ("densenet121", 3)}


def _cases() -> list:
    return [
        pytest.param(name, dims, marks=pytest.mark.slow) if (name, dims) in HEAVY else (name, dims)
        for name in model_names()
        for dims in (2, 3)
    ]


@pytest.mark.parametrize(("name", "spatial_dims"), _cases())
def test_every_model_builds_and_gives_logits(name: str, spatial_dims: int) -> None:
    torch.manual_seed(0)
    # finding-map models score one finding per study: binary only
    classes = 2 if model_family(name) == "finding-map" else 3
    model = create_model(name, spatial_dims=spatial_dims, in_channels=1, num_classes=classes).eval()
    batch = torch.randn(2, 1, *([32] * spatial_dims))
    with torch.no_grad():
        logits = model(batch)
    assert logits.shape == (2, classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["cnn_small", "resnet10", "densenet121", "seresnet50", "efficientnet_b0"])
def test_two_input_channels(name: str) -> None:
    model = create_model(name, spatial_dims=2, in_channels=2, num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 2, 32, 32)).shape == (2, 2)


@pytest.mark.slow
def test_stated_parameter_counts_match_the_networks() -> None:
    for info in list_models():
        for dims, stated in ((2, info.params_m_2d), (3, info.params_m_3d)):
            if dims in info.supports:
                counted = count_parameters(info.name, dims) / 1e6
                assert stated == pytest.approx(counted, abs=0.001), (info.name, dims)


@pytest.mark.parametrize("name", ["cnn_small", "resnet10", "efficientnet_b0"])
def test_stated_counts_of_light_models(name: str) -> None:
    info = next(i for i in list_models() if i.name == name)
    assert info.params_m_2d == pytest.approx(count_parameters(name, 2) / 1e6, abs=0.001)
    assert info.params_m_3d == pytest.approx(count_parameters(name, 3) / 1e6, abs=0.001)
    real = create_model(name, 3, 1, 2)
    assert count_parameters(name, 3) == sum(p.numel() for p in real.parameters())


@pytest.mark.parametrize(("typo", "suggestion"), [("resnet81", "resnet18"), ("densenet-121", "densenet121"),
                                                  ("cnn-small", "cnn_small")])
def test_unknown_name_suggests_the_nearest(typo: str, suggestion: str) -> None:
    with pytest.raises(ModelError, match=f"did you mean '{suggestion}'"):
        create_model(typo, 3, 1, 2)


def test_unknown_name_lists_the_models() -> None:
    with pytest.raises(ModelError, match="available models: .*cnn_small"):
        create_model("vit_gigantic_zzz", 3, 1, 2)


def test_names_are_case_insensitive() -> None:
    assert isinstance(create_model("CNN_Small", 2, 1, 2), torch.nn.Module)


@pytest.mark.parametrize("kwargs", [{"spatial_dims": 4}, {"in_channels": 0}, {"num_classes": -1},
                                    {"slice_mode": "3d"}, {"slice_mode": "2d", "context": 1}])
def test_bad_arguments_raise_model_error(kwargs: dict) -> None:
    arguments = {"spatial_dims": 3, "in_channels": 1, "num_classes": 2} | kwargs
    with pytest.raises(ModelError):
        create_model("cnn_small", **arguments)


def test_unknown_factory_keyword_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="bad argument"):
        create_model("cnn_small", 2, 1, 2, no_such_option=True)


def test_factory_keywords_pass_through() -> None:
    model = create_model("cnn_small", 2, 1, 2, channels=(4, 8), dropout=0.0)
    assert model.classifier.in_features == 16


def test_resnet_stem_keeps_resolution_for_small_inputs() -> None:
    model = create_model("resnet18", 3, 1, 2)
    assert model.conv1.stride == (2, 2, 2)
    assert model.no_max_pool
    custom = create_model("resnet18", 3, 1, 2, conv1_t_size=3, conv1_t_stride=1)
    assert custom.conv1.stride == (1, 1, 1)


def test_register_twice_is_refused() -> None:
    with pytest.raises(ModelError, match="registered twice"):
        register_model("cnn_small", family="cnn", description="dup")(lambda **kw: torch.nn.Identity())


def test_register_a_new_model_shows_in_list() -> None:
    name = "tiny_linear_for_test"

    @register_model(name, family="test", description="flatten + linear", supports=(2,))
    def _tiny(spatial_dims: int, in_channels: int, num_classes: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(in_channels,
                                                                                                    num_classes))

    try:
        info = next(i for i in list_models() if i.name == name)
        assert info.supports == (2,) and info.params_m_3d is None
        assert count_parameters(name, 2) == 1 * 2 + 2
        with pytest.raises(ModelError, match="supports spatial_dims 2"):
            create_model(name, 3, 1, 2)
    finally:
        _REGISTRY.pop(name)


@pytest.mark.parametrize("mode", ["2d", "2.5d"])
def test_slice_mode_wraps_a_2d_network(mode: str) -> None:
    model = create_model("cnn_small", 3, 1, 2, slice_mode=mode, aggregation="topk_mean", top_k=2).eval()
    assert isinstance(model, SliceAggregator)
    expected_context = 1 if mode == "2.5d" else 0
    assert model.context == expected_context
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 2 * expected_context + 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 16, 16, 5)).shape == (2, 2)


def test_cnn_small_learns_a_bright_blob() -> None:
    """The baseline must learn 'is there a lesion' quickly: a bright 4^3 blob in noise, 3D."""
    generator = torch.Generator().manual_seed(0)
    volumes = torch.randn(8, 1, 12, 12, 12, generator=generator) * 0.3
    labels = torch.arange(8) % 2
    for index in range(8):
        if labels[index]:
            x, y, z = torch.randint(1, 8, (3,), generator=generator).tolist()
            volumes[index, 0, x : x + 3, y : y + 3, z : z + 3] += 1.5
    torch.manual_seed(0)
    model = create_model("cnn_small", 3, 1, 2, channels=(4, 8, 16))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only wait on each other on a busy machine
    try:
        for _ in range(25):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(volumes), labels)
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        accuracy = (model(volumes).argmax(1) == labels).float().mean().item()
    assert accuracy == 1.0


def test_models_cli_lists_every_model() -> None:
    from medrec.cli import app

    result = CliRunner().invoke(app, ["models"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in model_names():
        assert name in result.output


def test_models_cli_json() -> None:
    from medrec.cli import app

    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert {item["name"] for item in listed} == set(model_names())
    cnn = next(item for item in listed if item["name"] == "cnn_small")
    assert cnn["supports"] == [2, 3] and cnn["params_m_3d"] > 0


def test_model_kwargs_are_the_network_arguments_a_recipe_may_set() -> None:
    from medrec.models.registry import model_kwargs

    assert model_kwargs("cnn_small") == ("channels", "convs_per_block", "dropout", "norm")
    assert set(model_kwargs("finding_fcn")) == {"context", "pooling", "top_k", "channels", "chunk_size",
                                                "distance_layers", "positive_output"}
    resnet = set(model_kwargs("resnet18"))
    assert {"conv1_t_size", "conv1_t_stride", "no_max_pool", "widen_factor", "norm"} <= resnet
    # set by the factory itself: passing them again would fail
    assert not resnet & {"spatial_dims", "n_input_channels", "num_classes", "block", "layers", "pretrained"}
    densenet = set(model_kwargs("densenet121"))
    assert {"growth_rate", "dropout_prob", "bn_size"} <= densenet  # DenseNet's own, reached through **kwargs
    assert not densenet & {"spatial_dims", "in_channels", "out_channels", "pretrained"}


@pytest.mark.parametrize("name", ["cnn_small", "resnet18", "densenet121", "seresnet50", "efficientnet_b0",
                                  "finding_fcn"])
def test_every_accepted_kwarg_builds(name: str) -> None:
    import inspect

    from medrec.models.registry import model_kwargs

    defaults: dict[str, object] = {}
    network = type(create_model(name, 2, 1, 2))
    for cls in network.__mro__:
        for parameter in inspect.signature(cls.__init__).parameters.values():
            if parameter.default is not inspect.Parameter.empty:
                defaults.setdefault(parameter.name, parameter.default)
    accepted = model_kwargs(name)
    assert accepted
    with torch.device("meta"):
        create_model(name, 2, 1, 2, **{key: defaults[key] for key in accepted})

