"""SliceAggregator: a 2D network per axial slice, pooled per study; 2.5D channel stacking."""

from __future__ import annotations

import pytest
import torch

from medrec.errors import ModelError
from medrec.models import SliceAggregator, create_model, create_slice_model, stack_slice_context


def _manual(model2d: torch.nn.Module, volume: torch.Tensor, context: int, aggregation: str, top_k: int) -> torch.Tensor:
    depth = volume.shape[-1]
    per_slice = []
    for k in range(depth):
        neighbours = [volume[..., min(max(k + offset, 0), depth - 1)] for offset in range(-context, context + 1)]
        per_slice.append(model2d(torch.cat(neighbours, dim=1)))
    logits = torch.stack(per_slice, dim=1)  # (B, Z, K)
    if aggregation == "max":
        return logits.max(dim=1).values
    if aggregation == "mean":
        return logits.mean(dim=1)
    values = torch.sort(logits, dim=1, descending=True).values[:, : min(top_k, depth)]
    return values.mean(dim=1)


@pytest.mark.parametrize("aggregation", ["max", "mean", "topk_mean"])
@pytest.mark.parametrize("context", [0, 1, 2])
def test_equals_a_manual_slice_loop(aggregation: str, context: int) -> None:
    torch.manual_seed(0)
    in_channels = 2
    model2d = create_model("cnn_small", 2, in_channels * (2 * context + 1), 3, channels=(4, 8)).eval()
    wrapper = SliceAggregator(model2d, aggregation=aggregation, top_k=3, context=context, chunk_size=4).eval()
    volume = torch.randn(2, in_channels, 12, 10, 7)
    with torch.no_grad():
        expected = _manual(model2d, volume, context, aggregation, 3)
        actual = wrapper(volume)
    assert actual.shape == (2, 3)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_slice_logits_shape_and_chunking_do_not_change_results() -> None:
    torch.manual_seed(0)
    model2d = create_model("cnn_small", 2, 1, 2, channels=(4, 8)).eval()
    volume = torch.randn(3, 1, 8, 8, 10)
    with torch.no_grad():
        one_chunk = SliceAggregator(model2d, chunk_size=1000).slice_logits(volume)
        small_chunks = SliceAggregator(model2d, chunk_size=3).slice_logits(volume)
    assert one_chunk.shape == (3, 10, 2)
    torch.testing.assert_close(one_chunk, small_chunks)


def test_context_stacking_repeats_edge_slices() -> None:
    depth = 5
    # Channel c of slice k holds 10 * c + k, so every stacked value names its source.
    volume = torch.zeros(1, 2, 3, 3, depth)
    for channel in range(2):
        for k in range(depth):
            volume[0, channel, :, :, k] = 10 * channel + k
    stacks = stack_slice_context(volume, context=1)
    assert stacks.shape == (1, depth, 6, 3, 3)
    corner = stacks[0, :, :, 0, 0]
    # Offset-major: (k-1: c0, c1), (k: c0, c1), (k+1: c0, c1).
    assert corner[0].tolist() == [0, 10, 0, 10, 1, 11]
    assert corner[2].tolist() == [1, 11, 2, 12, 3, 13]
    assert corner[depth - 1].tolist() == [3, 13, 4, 14, 4, 14]


def test_context_two_at_both_ends() -> None:
    volume = torch.arange(4, dtype=torch.float32).reshape(1, 1, 1, 1, 4).expand(1, 1, 2, 2, 4)
    stacks = stack_slice_context(volume, context=2)[0, :, :, 0, 0]
    assert stacks[0].tolist() == [0, 0, 0, 1, 2]
    assert stacks[3].tolist() == [1, 2, 3, 3, 3]


def test_max_aggregation_finds_the_one_positive_slice() -> None:
    class SliceMean(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean = x.mean(dim=(1, 2, 3))
            return torch.stack([-mean, mean], dim=1)

    volume = torch.zeros(1, 1, 4, 4, 9)
    volume[..., 6] = 5.0
    logits = SliceAggregator(SliceMean(), aggregation="max")(volume)
    assert logits[0, 1].item() == pytest.approx(5.0)
    assert SliceAggregator(SliceMean(), aggregation="mean")(volume)[0, 1].item() == pytest.approx(5.0 / 9)
    assert SliceAggregator(SliceMean(), aggregation="topk_mean", top_k=3)(volume)[0, 1].item() == pytest.approx(5 / 3)


def test_top_k_larger_than_depth_uses_all_slices() -> None:
    model2d = create_model("cnn_small", 2, 1, 2, channels=(4,)).eval()
    volume = torch.randn(1, 1, 8, 8, 2)
    with torch.no_grad():
        top = SliceAggregator(model2d, aggregation="topk_mean", top_k=10)(volume)
        mean = SliceAggregator(model2d, aggregation="mean")(volume)
    torch.testing.assert_close(top, mean)


def test_gradients_reach_the_2d_network() -> None:
    model = create_slice_model("cnn_small", in_channels=1, num_classes=2, context=1, channels=(4, 8))
    loss = model(torch.randn(2, 1, 8, 8, 4)).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("kwargs", [{"aggregation": "median"}, {"top_k": 0}, {"context": -1}, {"chunk_size": 0}])
def test_bad_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ModelError):
        SliceAggregator(torch.nn.Identity(), **kwargs)


def test_rejects_non_volumes() -> None:
    with pytest.raises(ModelError, match="expected a \\(B, C, X, Y, Z\\) volume"):
        SliceAggregator(torch.nn.Identity())(torch.zeros(1, 1, 4, 4))
