"""Include / exclude glob patterns: files left out are listed in qc.csv, never dropped silently."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd

from medrec.index import SelectionRules, index_folder


def _write_case(folder, case: str) -> None:
    data = np.arange(8 * 8 * 10, dtype=np.int16).reshape(8, 8, 10)
    for sequence in ("flair", "t1", "seg"):
        path = folder / case / f"{case}_{sequence}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), path)


def test_include_keeps_only_matching_files_and_lists_the_rest(tmp_path):
    scans = tmp_path / "brats"
    for case in ("Case_001", "Case_002"):
        _write_case(scans, case)
    result = index_folder(scans, tmp_path / "index", rules=SelectionRules(include=("*_flair.nii.gz",)),
                          show_progress=False)
    assert sorted(pd.Series(result.manifest["path"]).map(lambda p: p.rsplit("/", 1)[-1])) == [
        "Case_001_flair.nii.gz", "Case_002_flair.nii.gz"]
    assert sorted(result.manifest["patient_id"]) == ["Case_001", "Case_002"]
    left_out = result.qc[result.qc["code"] == "not_included"]
    assert len(left_out) == 4
    assert all("include patterns" in reason for reason in left_out["reason"])


def test_exclude_pattern_on_relative_path(tmp_path):
    scans = tmp_path / "brats"
    _write_case(scans, "Case_001")
    result = index_folder(scans, tmp_path / "index", rules=SelectionRules(exclude=("*_seg.nii.gz", "*/*_t1.*")),
                          show_progress=False)
    assert [p.rsplit("/", 1)[-1] for p in result.manifest["path"]] == ["Case_001_flair.nii.gz"]
    assert sorted(result.qc.loc[result.qc["code"] == "excluded_by_pattern", "path"].map(
        lambda p: p.rsplit("/", 1)[-1])) == ["Case_001_seg.nii.gz", "Case_001_t1.nii.gz"]
