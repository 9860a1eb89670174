"""The manifest digest in a run's data fingerprint does not depend on where the scans lie."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from medrec.manifest import MANIFEST_COLUMNS, manifest_sha256, write_manifest


def _manifest(root: str, label: str = "1") -> pd.DataFrame:
    rows = []
    for index in range(2):
        folder = f"{root}/P{index}/S1"
        rows.append({column: "" for column in MANIFEST_COLUMNS} | {
            "sample_id": f"s{index}", "patient_id": f"P{index}", "format": "dicom", "path": folder,
            "files": json.dumps([f"{folder}/{k:04d}.dcm" for k in range(3)]), "label": label,
        })
    return pd.DataFrame(rows)


def test_same_scans_in_another_folder_give_the_same_digest(tmp_path: Path) -> None:
    write_manifest(_manifest("/data/site-a/export"), tmp_path / "a.csv")
    write_manifest(_manifest("/home/someone/copy of export"), tmp_path / "b.csv")
    assert manifest_sha256(tmp_path / "a.csv") == manifest_sha256(tmp_path / "b.csv")
    # and it is not the plain file digest, which differs
    raw = [hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in ("a.csv", "b.csv")]
    assert raw[0] != raw[1]


def test_any_other_change_changes_the_digest(tmp_path: Path) -> None:
    write_manifest(_manifest("/data/export"), tmp_path / "a.csv")
    write_manifest(_manifest("/data/export", label="0"), tmp_path / "b.csv")
    other = _manifest("/data/export")
    other.loc[1, "files"] = json.dumps(["/data/export/P1/S1/0000.dcm"])  # a slice fewer
    write_manifest(other, tmp_path / "c.csv")
    digests = {manifest_sha256(tmp_path / name) for name in ("a.csv", "b.csv", "c.csv")}
    assert len(digests) == 3
