"""The scoring loader: batches in input order whatever the worker count, errors routed, thread count restored."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from medrec.data.dataset import PreprocessDataset
from medrec.score import pipeline
from medrec.score.pipeline import default_workers, iterate_batches, threads_beside_workers


def _square(row):
    if row["sample_id"] == "bad":
        raise ValueError("cannot read this one")
    return {"image": torch.full((1, 2, 2), float(row["value"]))}


ROWS = [{"sample_id": f"s{i}", "value": i} for i in range(7)] + [{"sample_id": "bad", "value": -1}] + [
    {"sample_id": "s8", "value": 8}
]


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_keep_input_order_and_route_failures(workers):
    batches = list(iterate_batches(PreprocessDataset(ROWS, _square), batch_size=4, workers=workers))
    assert [len(b.indices) + len(b.failed) for b in batches] == [4, 4, 1]
    assert [i for b in batches for i in b.indices] == [0, 1, 2, 3, 4, 5, 6, 8]
    assert [f for b in batches for f in b.failed] == [(7, "ValueError: cannot read this one")]
    values = [float(image[0, 0, 0]) for b in batches for image in b.images]
    assert values == [0, 1, 2, 3, 4, 5, 6, 8]


def test_threads_are_limited_beside_workers_and_restored():
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        with mock.patch.object(pipeline, "usable_cores", return_value=4):
            with threads_beside_workers(3):
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 4
            with threads_beside_workers(0):
                assert torch.get_num_threads() == 4
            with pytest.raises(RuntimeError), threads_beside_workers(2):
                assert torch.get_num_threads() == 2
                raise RuntimeError("stop")
            assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(previous)


def test_default_workers_uses_every_core_up_to_four():
    for cores, expected in ((1, 0), (2, 2), (3, 3), (16, 4)):
        with mock.patch.object(pipeline, "usable_cores", return_value=cores):
            assert default_workers() == expected
