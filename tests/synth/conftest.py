"""Small synthetic cohorts shared by the synth tests (built once per session)."""

from __future__ import annotations

import pytest

from medrec.synth import generate_cohort, plan_cohort

SMALL = {"image_size": 32, "slice_thickness": 10.0}


def seed_where(kind: str, patients: int, predicate, **kw) -> int:
    """The first seed whose cohort plan satisfies ``predicate(plans)`` (cheap: no pixels)."""
    for seed in range(200):
        if predicate(plan_cohort(kind, patients=patients, seed=seed, **kw)):
            return seed
    raise RuntimeError("no seed found")


@pytest.fixture(scope="session")
def ct_dicom(tmp_path_factory):
    return generate_cohort(tmp_path_factory.mktemp("ct_dicom"), kind="ct-lesion", patients=4, seed=3,
                           follow_up_fraction=0.25, return_volumes=True, **SMALL)


@pytest.fixture(scope="session")
def ct_quirks(tmp_path_factory):
    return generate_cohort(tmp_path_factory.mktemp("ct_quirks"), kind="ct-lesion", patients=3, seed=5, quirks=True,
                           follow_up_fraction=0.34, return_volumes=True, **SMALL)


@pytest.fixture(scope="session")
def mr_dicom(tmp_path_factory):
    seed = seed_where("mri-tumor", 4, lambda plans: len({p.scanner.manufacturer for p in plans}) == 3, **SMALL)
    return generate_cohort(tmp_path_factory.mktemp("mr_dicom"), kind="mri-tumor", patients=4, seed=seed,
                           return_volumes=True, **SMALL)


@pytest.fixture(scope="session")
def xr_dicom(tmp_path_factory):
    seed = seed_where(
        "xr-nodule", 4, lambda plans: {p.scanner.photometric for p in plans} == {"MONOCHROME1", "MONOCHROME2"})
    return generate_cohort(tmp_path_factory.mktemp("xr_dicom"), kind="xr-nodule", patients=4, seed=seed,
                           return_volumes=True, image_size=48, quirks=True)


@pytest.fixture(scope="session")
def mr_nifti(tmp_path_factory):
    return generate_cohort(tmp_path_factory.mktemp("mr_nifti"), kind="mri-tumor", patients=3, seed=2, fmt="nifti",
                           return_volumes=True, **SMALL)
