"""Small synthetic cohorts, indexed with their labels.csv, shared by the annotation tests (built once)."""

from __future__ import annotations

import pytest

from .builders import IndexedCohort, indexed_cohort


@pytest.fixture(scope="session", params=["dicom", "nifti"])
def ct_cohort(request, tmp_path_factory) -> IndexedCohort:
    base = tmp_path_factory.mktemp(f"ct_{request.param}")
    return indexed_cohort(base / "scans", base / "index", kind="ct-lesion", fmt=request.param)


@pytest.fixture(scope="session")
def ct_nifti(tmp_path_factory) -> IndexedCohort:
    base = tmp_path_factory.mktemp("ct_nifti_masks")
    return indexed_cohort(base / "scans", base / "index", kind="ct-lesion", fmt="nifti")


@pytest.fixture(scope="session")
def xr_cohort(tmp_path_factory) -> IndexedCohort:
    base = tmp_path_factory.mktemp("xr")
    return indexed_cohort(base / "scans", base / "index", kind="xr-nodule", fmt="dicom", slice_thickness=None)
