"""failure_reason: the one-line cause of a sample that failed inside a MONAI transform chain."""

from __future__ import annotations

import re

import pytest
import torch
from monai import transforms as mt
from monai.transforms import MapTransform

from medrec.data.dataset import PreprocessDataset, failure_reason
from medrec.errors import DicomError


class SmoothAlongThreeAxesd(MapTransform):
    """Fails on a 2D image the way a 3D-only filter does."""

    def __call__(self, data):
        for key in self.key_iterator(data):
            if data[key].ndim != 4:
                raise RuntimeError("sequence argument must have length equal to input rank")
        return data


class RaisesMedrecErrord(MapTransform):
    def __call__(self, data):
        raise DicomError("scan/IM0001: truncated pixel data")


def _error_of(chain: mt.Compose, image: torch.Tensor) -> str:
    item = PreprocessDataset([{"sample_id": "s1", "image": image}], chain)[0]
    assert item["image"] is None
    return item["error"]


def test_monai_wrapper_is_unwrapped_to_its_cause_and_names_the_transform() -> None:
    chain = mt.Compose([mt.Identityd("image"), SmoothAlongThreeAxesd("image")])
    error = _error_of(chain, torch.zeros(1, 8, 8))
    assert error == (
        "SmoothAlongThreeAxesd failed: RuntimeError: sequence argument must have length equal to input rank"
    )
    assert not re.search(r"0x[0-9a-f]+", error)


def test_nested_compose_names_the_innermost_transform() -> None:
    inner = mt.Compose([SmoothAlongThreeAxesd("image")])
    chain = mt.Compose([mt.Identityd("image"), inner])
    assert _error_of(chain, torch.zeros(1, 8, 8)).startswith("SmoothAlongThreeAxesd failed: RuntimeError: ")


def test_a_medrec_error_inside_the_chain_is_reported_as_it_is() -> None:
    chain = mt.Compose([RaisesMedrecErrord("image")])
    assert _error_of(chain, torch.zeros(1, 8, 8)) == "scan/IM0001: truncated pixel data"


def test_an_error_outside_monai_keeps_its_type_and_text() -> None:
    assert failure_reason(ValueError("preprocessed image holds NaN")) == "ValueError: preprocessed image holds NaN"


@pytest.mark.parametrize("limit", [40, 80])
def test_reason_is_cut_to_the_limit(limit: int) -> None:
    try:
        try:
            raise OSError("x" * 200)
        except OSError as inner:
            raise RuntimeError("applying transform <medrec.loader.transforms.LoadSampled object at 0x7f00>") from inner
    except RuntimeError as outer:
        reason = failure_reason(outer, limit=limit)
    assert len(reason) == limit and reason.startswith("LoadSampled failed: OSError: ") and reason.endswith("...")
