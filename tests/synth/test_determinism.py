"""Same seed, same bytes; another seed, other bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from medrec.synth import generate_cohort


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize(
    ("kind", "fmt", "quirks"),
    [("ct-lesion", "dicom", True), ("mri-tumor", "nifti", False), ("xr-nodule", "dicom", False)],
)
def test_same_seed_same_bytes(tmp_path, kind, fmt, quirks):
    kw = {"kind": kind, "patients": 2, "fmt": fmt, "quirks": quirks, "image_size": 32, "slice_thickness": 12.0,
          "follow_up_fraction": 0.5}
    first = generate_cohort(tmp_path / "a", seed=11, **kw)
    second = generate_cohort(tmp_path / "b", seed=11, **kw)
    other = generate_cohort(tmp_path / "c", seed=12, **kw)
    a, b, c = _hashes(first.out_dir), _hashes(second.out_dir), _hashes(other.out_dir)
    assert len(a) > 3 and a == b
    assert a["labels.csv"] != c["labels.csv"]
    assert not set(a.values()) & set(c.values()) - {a.get("synth.json")}
