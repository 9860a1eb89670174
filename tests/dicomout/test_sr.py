"""study_sr: TID 1500 content checked against the inputs and an independent geometry computation."""

from __future__ import annotations

import dataclasses
import random

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medrec.dicomout import Algorithm, DicomExportError, Finding, SeriesResult, sr_text, study_sr, write_dataset
from medrec.dicomout.codes import ABSENT, PRESENT, PROBABILITY, finding_code
from tests.dicomout.conftest import OTHER_WEIGHTS, headers, pixel_centre_lps, slice_normal

LESION = finding_code("lesion")


def _finding(study, **changes) -> Finding:
    truth = study.lesions[0]
    finding = Finding(*truth.center_lps, diameter_mm=truth.diameter_mm, probability=0.93)
    return dataclasses.replace(finding, **changes)


def _written(ds, tmp_path):
    """Write, then read back with highdicom (the way a user's tool would)."""
    return hd.sr.srread(write_dataset(ds, tmp_path))


def _score(group) -> float:
    values = [m.value for m in group.get_measurements(name=PROBABILITY) if m.derivation is None]
    assert len(values) == 1
    return float(values[0])


def _decision(group) -> hd.sr.CodedConcept:
    (evaluation,) = group.get_qualitative_evaluations(name=LESION)
    return evaluation.value


def test_series_without_finding_holds_score_decision_and_references(normal_study, algorithm, tmp_path):
    files = list(normal_study.files)
    random.Random(0).shuffle(files)  # any file order
    sr = _written(study_sr([SeriesResult("P0001-S01", files, score=0.731)], algorithm), tmp_path)

    (group,) = sr.content.get_image_measurement_groups()
    assert _score(group) == pytest.approx(0.731)
    assert _decision(group) == PRESENT
    assert group.tracking_identifier == "P0001-S01"
    assert group.finding_type == LESION
    referenced = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in group[0].ContentSequence
                  if item.name == pydicom.sr.codedict.codes.DCM.SourceOfMeasurement}
    assert referenced == {ds.SOPInstanceUID for ds in headers(normal_study.files)}
    evidence = {uid for _study, _series, uid, _class in sr.get_evidence()}
    assert evidence == referenced


def test_patient_and_study_copied_from_source(normal_study, algorithm):
    source = pydicom.dcmread(normal_study.files[0], stop_before_pixels=True)
    sr = study_sr([SeriesResult("s", normal_study.files, score=0.1)], algorithm)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                    "AccessionNumber", "StudyDate", "StudyID"):
        assert sr[keyword].value == source[keyword].value, keyword
    assert sr.Modality == "SR" and sr.SeriesNumber == 9901
    assert sr.SeriesDescription == "medrec finding_fcn results"
    assert "InstitutionName" not in sr  # nothing beyond patient and study is copied


@pytest.mark.parametrize(("score", "expected"), [(0.42 - 1e-6, ABSENT), (0.42, PRESENT), (0.42 + 1e-6, PRESENT),
                                                 (0.0, ABSENT), (1.0, PRESENT)])
def test_decision_flips_at_the_threshold(normal_study, algorithm, score, expected):
    sr = hd.sr.Comprehensive3DSR.from_dataset(study_sr([SeriesResult("s", normal_study.files, score=score)], algorithm))
    (group,) = sr.content.get_image_measurement_groups()
    assert _decision(group) == expected
    assert _score(group) == pytest.approx(score, abs=1e-12)


def test_finding_is_a_circle_on_the_nearest_slice(lesion_study, algorithm, tmp_path):
    finding = _finding(lesion_study)
    sr = _written(study_sr([SeriesResult("P0002-S01", lesion_study.files, score=0.88, finding=finding)], algorithm),
                  tmp_path)
    (group,) = sr.content.get_planar_roi_measurement_groups()
    assert _score(group) == pytest.approx(0.88)
    assert _decision(group) == PRESENT
    peak = [m.value for m in group.get_measurements(name=PROBABILITY) if m.derivation is not None]
    assert peak == [pytest.approx(0.93)]

    region = group.roi
    assert region.graphic_type == hd.sr.GraphicTypeValues.CIRCLE
    referenced = region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    slices = headers(lesion_study.files)
    centre = np.array(finding.center_lps)
    distances = [abs(np.dot(centre - np.array(ds.ImagePositionPatient, dtype=float), slice_normal(ds)))
                 for ds in slices]
    nearest = slices[int(np.argmin(distances))]
    assert referenced == nearest.SOPInstanceUID

    (column, row), edge = np.asarray(region.value, dtype=float)
    orientation = np.array(nearest.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in nearest.PixelSpacing)
    relative = centre - np.array(nearest.ImagePositionPatient, dtype=float)
    expected = (np.dot(relative, orientation[:3]) / column_spacing + 0.5,
                np.dot(relative, orientation[3:]) / row_spacing + 0.5)
    np.testing.assert_allclose((column, row), expected, atol=1e-4)
    # SCOORD (0, 0) is the top-left corner of the top-left pixel: pixel index = coordinate - 0.5
    back = pixel_centre_lps(nearest, column - 0.5, row - 0.5)
    offset = back - centre
    normal = slice_normal(nearest)
    in_plane = offset - np.dot(offset, normal) * normal
    assert np.linalg.norm(in_plane) <= float(nearest.PixelSpacing[1])  # within one pixel
    assert abs(np.dot(offset, normal)) <= 5.0  # half the 10 mm slice spacing
    radius_mm = np.linalg.norm(pixel_centre_lps(nearest, *(edge - 0.5)) - back)
    assert radius_mm == pytest.approx(finding.diameter_mm / 2, rel=1e-6)


def test_finding_outside_every_slice_is_a_3d_point(lesion_study, algorithm):
    last = max(headers(lesion_study.files), key=lambda ds: float(ds.ImagePositionPatient[2]))
    outside = _finding(lesion_study, z=float(last.ImagePositionPatient[2]) + 50.0)
    sr = hd.sr.Comprehensive3DSR.from_dataset(
        study_sr([SeriesResult("s", lesion_study.files, score=0.7, finding=outside)], algorithm))
    (group,) = sr.content.get_planar_roi_measurement_groups()
    assert group.roi.graphic_type == hd.sr.GraphicTypeValues3D.POINT
    assert group.roi.frame_of_reference_uid == last.FrameOfReferenceUID
    np.testing.assert_allclose(np.asarray(group.roi.value).ravel(), outside.center_lps)


def test_study_score_is_a_group_of_its_own(lesion_study, algorithm):
    results = [SeriesResult("a", lesion_study.files, score=0.2), SeriesResult("b", lesion_study.files[:5], score=0.3)]
    sr = hd.sr.Comprehensive3DSR.from_dataset(study_sr(results, algorithm, study_score=0.3))
    groups = {group.tracking_identifier: group for group in sr.content.get_image_measurement_groups()}
    assert set(groups) == {"a", "b", "study"}
    assert _score(groups["study"]) == pytest.approx(0.3)
    assert _decision(groups["study"]) == ABSENT


def test_uids_are_stable_and_follow_the_weights(lesion_study, algorithm, tmp_path):
    results = [SeriesResult("P0002-S01", lesion_study.files, score=0.5, finding=_finding(lesion_study))]
    first, second = study_sr(results, algorithm), study_sr(results, algorithm)
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (second.SOPInstanceUID, second.SeriesInstanceUID)
    for uid in (first.SOPInstanceUID, first.SeriesInstanceUID):  # 2.25 + a 128-bit UUID (PS3.5 B.2)
        assert uid.startswith("2.25.") and len(uid) <= 64 and int(uid[5:]) < 2**128
    assert write_dataset(first, tmp_path) == write_dataset(second, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1  # written twice: replaced, not duplicated

    other = study_sr(results, dataclasses.replace(algorithm, weights_sha256=OTHER_WEIGHTS))
    assert other.SOPInstanceUID != first.SOPInstanceUID
    assert other.SeriesInstanceUID != first.SeriesInstanceUID
    more = study_sr([*results, SeriesResult("other", lesion_study.files[:3], score=0.1)], algorithm)
    assert more.SOPInstanceUID != first.SOPInstanceUID
    assert more.SeriesInstanceUID == first.SeriesInstanceUID  # one series per model and study


def test_device_observer_and_algorithm_identification(normal_study, algorithm):
    sr = hd.sr.Comprehensive3DSR.from_dataset(study_sr([SeriesResult("s", normal_study.files, score=0.1)], algorithm))
    (device,) = sr.content.get_observer_contexts(observer_type=pydicom.sr.codedict.codes.DCM.Device)
    attributes = device.observer_identifying_attributes
    identity = (attributes.name, attributes.manufacturer_name, attributes.model_name)
    assert identity == ("finding_fcn", "medrec", "finding_fcn")
    text = sr_text(sr)
    assert f"weights_sha256={algorithm.weights_sha256}" in text
    assert "operating_threshold=0.42 (validation: Youden)" in text
    assert 'Algorithm Version = "0.1.0"' in text


def test_results_of_two_studies_are_refused(cohort, algorithm):
    a, b = cohort.studies
    with pytest.raises(ValueError, match=f"{a.study_uid}.*{b.study_uid}"):
        study_sr([SeriesResult("a", a.files, 0.1), SeriesResult("b", b.files, 0.2)], algorithm)


def test_bad_inputs_are_refused(normal_study, algorithm):
    with pytest.raises(DicomExportError, match="score"):
        SeriesResult("s", normal_study.files, score=1.5)
    with pytest.raises(DicomExportError, match="weights_sha256"):
        Algorithm("m", "1", "not-a-hash", 0.5, "fixed", "lesion")
    assert Algorithm("m", "1", "AB" * 32, 0.5, "fixed", "lesion").weights_sha256 == "ab" * 32
    with pytest.raises(DicomExportError, match="more than once"):
        study_sr([SeriesResult("s", normal_study.files, 0.1), SeriesResult("s", normal_study.files, 0.2)], algorithm)


def test_sr_text_shows_score_decision_and_location(lesion_study, algorithm):
    finding = _finding(lesion_study)
    text = sr_text(study_sr([SeriesResult("P0002-S01", lesion_study.files, score=0.88, finding=finding)], algorithm))
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "Imaging Measurement Report"
    assert "Probability = 0.88 [no units]" in lines
    assert "Lesion = Present (52101004, SCT)" in lines
    assert 'Tracking Identifier = "P0002-S01"' in lines
    assert any(line.startswith("Image Region = CIRCLE (column ") for line in lines)
    assert any(line.startswith("Source = CT Image Storage ") for line in lines)
    absent = sr_text(study_sr([SeriesResult("P0002-S01", lesion_study.files, score=0.1)], algorithm))
    assert "Lesion = Absent (272519000, SCT)" in [line.strip() for line in absent.splitlines()]
