"""Cohort sampling without pixels: fractions, identities, dates, validation."""

from __future__ import annotations

import datetime as dt

import pytest

from medrec.errors import ConfigError
from medrec.synth import plan_cohort
from medrec.synth.plan import age_on


@pytest.mark.parametrize("kind", ["ct-lesion", "mri-tumor", "xr-nodule"])
def test_prevalence_and_follow_up_fractions(kind):
    plans = plan_cohort(kind, patients=200, seed=1, prevalence=0.3, follow_up_fraction=0.2)
    patients = {p.patient_id: p for p in plans if p.study_index == 0}
    assert len(patients) == 200
    assert sum(p.label for p in patients.values()) == 60
    assert sum(p.study_index == 1 for p in plans) == 40
    assert len({p.scanner.manufacturer for p in plans}) >= 2
    for plan in plans:
        assert (len(plan.lesions) > 0) == bool(plan.label)
        assert len(plan.lesions) <= plan.phantom.max_lesions
        lo, hi = plan.phantom.default_diameter_mm
        assert all(lo * 0.5 <= lesion.diameter_mm <= hi * 1.3 for lesion in plan.lesions)
    assert len({p.study_uid for p in plans}) == len(plans)
    assert len({p.accession for p in plans}) == len(plans)


def test_ages_follow_from_birth_and_study_dates():
    for plan in plan_cohort("ct-lesion", patients=30, seed=2):
        birth = dt.date.fromisoformat(f"{plan.birth_date[:4]}-{plan.birth_date[4:6]}-{plan.birth_date[6:]}")
        day = dt.date.fromisoformat(f"{plan.study_date[:4]}-{plan.study_date[4:6]}-{plan.study_date[6:]}")
        assert plan.age == age_on(birth, day) and 18 <= plan.age <= 100
        assert plan.sex in ("M", "F")


def test_identity_override():
    identity = {"patient_name": "CANARY^ZED{index}", "patient_id": "MRN-{index:05d}", "birth_date": "19600229",
                "institution_name": "Canary Clinic"}
    plans = plan_cohort("xr-nodule", patients=3, seed=0, identity=identity)
    assert [p.patient_id for p in plans if p.study_index == 0] == ["MRN-00001", "MRN-00002", "MRN-00003"]
    assert all(p.patient_name.startswith("CANARY^ZED") for p in plans)
    assert all(p.birth_date == "19600229" and p.institution == "Canary Clinic" for p in plans)
    assert all(p.patient_key.startswith("P0") for p in plans)  # folders never carry the identity
    with pytest.raises(ConfigError, match="duplicate"):
        plan_cohort("xr-nodule", patients=2, identity={"patient_id": "SAME"})
    with pytest.raises(ConfigError, match="unknown key"):
        plan_cohort("xr-nodule", patients=2, identity={"mrn": "x"})


def test_default_identity():
    plan = plan_cohort("ct-lesion", patients=7, seed=0)[-1]
    assert plan.patient_id == "P0007" and plan.patient_name == "PHANTOM^P0007"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patients": 0}, "patients"),
        ({"kind": "ct-lesions"}, "did you mean 'ct-lesion'"),
        ({"prevalence": 1.5}, "prevalence"),
        ({"lesion_diameter_mm": (30, 10)}, "lesion_diameter_mm"),
        ({"noise": -1}, "noise"),
        ({"image_size": 4}, "image_size"),
        ({"slice_thickness": 0}, "slice_thickness"),
    ],
)
def test_bad_values_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        plan_cohort(**{"kind": "ct-lesion", "patients": 2, **kwargs})


def test_lesions_too_large_for_the_organ():
    with pytest.raises(ConfigError, match="smaller"):
        plan_cohort("xr-nodule", patients=2, prevalence=1.0, lesion_diameter_mm=(400, 500))


def test_default_lesions_stay_visible_at_64_cubed():
    """At the default diameters every lesion spans >= 3 voxels after resampling the volume to 64^3."""
    for kind in ("ct-lesion", "mri-tumor"):
        for plan in plan_cohort(kind, patients=60, seed=0, prevalence=1.0):
            voxel = max(plan.scanner.field_of_view_mm / 64, plan.n_slices * plan.slice_thickness / 64)
            assert all(lesion.diameter_mm / voxel >= 3.0 for lesion in plan.lesions if plan.study_index == 0)


def test_bad_identity_template_and_quirks_for_nifti(tmp_path):
    from medrec.synth import generate_cohort

    with pytest.raises(ConfigError, match="template"):
        plan_cohort("xr-nodule", patients=1, identity={"patient_id": "X{nope}"})
    with pytest.raises(ConfigError, match="DICOM only"):
        generate_cohort(tmp_path, kind="xr-nodule", patients=1, fmt="nifti", quirks=True)
