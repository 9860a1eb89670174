"""CheckPlanInputd: a sample the plan cannot take is refused before loading, with a one-line reason."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from medrec.data.dataset import PreprocessDataset
from medrec.errors import InputError
from medrec.index import index_folder
from medrec.planning import Plan
from medrec.transforms import build_transforms
from medrec.transforms.validation import CheckPlanInputd


def _plan(**fields) -> Plan:
    base = {"preset": "ct", "spatial_dims": 3, "mode": "3d", "spacing": (1.5, 1.5, 3.0), "input_size": (32, 32, 16),
            "ct_window": (-160.0, 240.0), "fingerprint": {"modalities": {"CT": 12}}}
    return Plan(**(base | fields))


def _errors(plan: Plan, rows: list[dict]) -> list[str]:
    deterministic, _ = build_transforms(plan)
    return [item["error"] for item in PreprocessDataset(rows, deterministic)]


def test_2d_and_rgb_images_scored_by_a_3d_ct_plan_fail_with_the_reason(tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("CT_small.dcm", "SC_rgb.dcm"):  # a 2D CT slice and a 2D RGB secondary capture
        shutil.copyfile(str(get_testdata_file(name)), scans / name)
    manifest = index_folder(scans, tmp_path / "index", show_progress=False).manifest
    assert sorted(manifest["n_slices"]) == [1, 1]
    errors = _errors(_plan(), manifest.to_dict("records"))
    for row, error in zip(manifest.to_dict("records"), errors, strict=True):
        assert error == (
            f"{row['path']}: sample {row['sample_id']} is a 2D image (1 slice) but the plan takes 3D volumes "
            "(spatial_dims 3, mode 3d); score it with a run trained on 2D images"
        )
        assert not re.search(r"0x[0-9a-f]{6,}", error)


def test_a_volume_is_refused_by_a_2d_plan_before_anything_is_read(tmp_path: Path) -> None:
    plan = _plan(preset="xr", spatial_dims=2, mode="2d", spacing=(1.0, 1.0), input_size=(64, 64), ct_window=None,
                 fingerprint={"modalities": {"DX": 30}})
    row = {"sample_id": "v1", "path": str(tmp_path / "missing"), "format": "dicom", "files": "[]", "n_slices": 40,
           "modality": "DX"}
    assert _errors(plan, [row]) == [
        f"{tmp_path / 'missing'}: sample v1 is a volume of 40 slices but the plan takes 2D images "
        "(spatial_dims 2, mode 2d); score it with a run trained on volumes"
    ]


def test_a_modality_of_another_preset_is_refused_unless_the_plan_was_made_with_it(tmp_path: Path) -> None:
    row = {"sample_id": "m1", "path": str(tmp_path / "missing"), "format": "dicom", "files": "[]", "n_slices": 20,
           "modality": "MR"}
    check = CheckPlanInputd(_plan())
    with pytest.raises(InputError) as raised:
        check(row)
    assert str(raised.value) == (
        f"{tmp_path / 'missing'}: sample m1 is MR but the plan preprocesses ct (made from CT); "
        "score MR with a run trained on MR"
    )
    mixed = CheckPlanInputd(_plan(fingerprint={"modalities": {"CT": 12, "MR": 2}}))
    assert mixed(row) is row
    for modality in ("PT", "OT", "", None):  # PT shares the CT preset; OT and unknown have none
        assert check(row | {"modality": modality}) is not None
    assert check({"sample_id": "in-memory"}) == {"sample_id": "in-memory"}  # no geometry, no modality: passes


def test_check_comes_first_and_only_with_the_loader() -> None:
    names = [type(t).__name__ for t in build_transforms(_plan())[0].transforms]
    assert names[:2] == ["CheckPlanInputd", "LoadSampled"]
    without = [type(t).__name__ for t in build_transforms(_plan(), include_loader=False)[0].transforms]
    assert "CheckPlanInputd" not in without
