"""labels.csv and ground_truth.csv agree with the studies and with the pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medrec.synth import LABEL_COLUMNS, plan_cohort
from medrec.synth.render import lesion_index, render_modality_image


def _read(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_labels_csv_matches_studies(ct_dicom):
    labels = _read(ct_dicom.labels_csv)
    assert tuple(labels.columns) == LABEL_COLUMNS
    assert len(labels) == len(ct_dicom.studies)
    for row, study in zip(labels.itertuples(), ct_dicom.studies, strict=True):
        assert (row.patient_id, row.study_uid, row.accession) == (study.patient_id, study.study_uid, study.accession)
        assert int(row.label) == study.label
        assert row.lesion_type == ("none" if not study.label else study.lesion_type)
        assert (ct_dicom.out_dir / row.path).exists()
    assert set(labels.lesion_type) <= {"none", "hypodense", "hyperdense"}


def test_ground_truth_rows_and_counts(ct_dicom):
    truth = _read(ct_dicom.ground_truth_csv)
    for study in ct_dicom.studies:
        rows = truth[truth.study_uid == study.study_uid]
        if study.label:
            assert 1 <= len(rows) <= 3
            assert set(rows.lesion_type) == {study.lesion_type}
            assert (rows.series_uid == study.series_uid).all()
        else:
            assert rows.empty
        for lesion, row in zip(study.lesions, rows.itertuples(), strict=True):
            # the LPS centre is the affine applied to the voxel centre
            centre = study.affine_lps @ np.r_[lesion.center_index, 1.0]
            stated = [float(row.center_x), float(row.center_y), float(row.center_z)]
            np.testing.assert_allclose(centre[:3], stated, atol=0.01)
            assert all(0 <= i < n for i, n in zip(lesion.center_index, study.volume.shape, strict=True))


def test_follow_up_keeps_label_and_is_later(ct_dicom):
    by_patient = {}
    for study in ct_dicom.studies:
        by_patient.setdefault(study.patient_id, []).append(study)
    pairs = [s for s in by_patient.values() if len(s) == 2]
    assert pairs
    for base, follow in pairs:
        assert follow.study_date > base.study_date and follow.label == base.label
        assert follow.study_uid != base.study_uid and follow.accession != base.accession


def _lesion_effect(kind, sign_of):
    plans = [p for p in plan_cohort(kind, patients=6, seed=4, prevalence=1.0, image_size=48, slice_thickness=6.0)
             if p.lesions][:2]
    assert plans
    for plan in plans:
        with_lesion = render_modality_image(plan, with_lesions=True, with_noise=False)
        without = render_modality_image(plan, with_lesions=False, with_noise=False)
        for lesion in plan.lesions:
            index = tuple(int(round(v)) for v in lesion_index(plan, lesion.center))
            difference = float(with_lesion[index] - without[index])
            margin = 0.3 * abs(lesion.contrast) * (1.0 if kind == "ct-lesion" else 0.0) + 1e-3
            assert sign_of(lesion) * difference > margin
        changed = np.abs(with_lesion - without) > 1e-3
        assert changed.any()


def test_ct_lesions_change_the_liver_in_their_direction():
    _lesion_effect("ct-lesion", lambda lesion: np.sign(lesion.contrast))


def test_mr_tumor_and_xr_nodule_are_brighter_at_their_centre():
    _lesion_effect("mri-tumor", lambda lesion: 1.0 if lesion.core_fraction == 0 else -1.0)
    _lesion_effect("xr-nodule", lambda lesion: 1.0)


def test_ct_lesions_lie_in_the_liver():
    plans = [p for p in plan_cohort("ct-lesion", patients=6, seed=9, prevalence=1.0, image_size=48, slice_thickness=8.0)
             if p.study_index == 0]
    for plan in plans:
        points = np.array([lesion.center for lesion in plan.lesions])
        assert (plan.phantom.lesion_clearance(plan.anatomy, points) > 0).all()
        # liver tissue (~95-125 HU, portal venous) surrounds the lesion centres
        image = render_modality_image(plan, with_lesions=False, with_noise=False)
        for lesion in plan.lesions:
            i, j, k = (int(round(v)) for v in lesion_index(plan, lesion.center))
            assert 80.0 < image[i, j, k] < 190.0
