"""DICOM headers, geometry and pixel values read back with pydicom."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID, ExplicitVRLittleEndian

REQUIRED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "StudyDate", "StudyTime", "SeriesNumber",
    "InstanceNumber", "AccessionNumber", "Modality", "Manufacturer", "ManufacturerModelName", "InstitutionName",
    "ImageType", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "PhotometricInterpretation", "SamplesPerPixel", "WindowCenter", "WindowWidth", "PixelSpacing",
)
REQUIRED_3D = ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness",
               "SpacingBetweenSlices", "SliceLocation")
SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4", "DX": "1.2.840.10008.5.1.4.1.1.1.1"}


def _read(path):
    return pydicom.dcmread(path)


@pytest.mark.parametrize("cohort_name", ["ct_dicom", "mr_dicom", "xr_dicom"])
def test_required_tags_file_meta_and_preamble(cohort_name, request):
    cohort = request.getfixturevalue(cohort_name)
    sop_uids = set()
    for study in cohort.studies:
        for path in study.files:
            raw = path.read_bytes()
            assert raw[:128] == b"\x00" * 128 and raw[128:132] == b"DICM"
            ds = _read(path)
            names = REQUIRED + (REQUIRED_3D if ds.Modality != "DX" else ("ImagerPixelSpacing",))
            missing = [n for n in names if n not in ds]
            assert not missing, (path, missing)
            assert ds.SOPClassUID == SOP_CLASS[ds.Modality]
            meta = ds.file_meta
            assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
            assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert UID(meta.ImplementationClassUID).is_valid
            for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
                assert UID(uid).is_valid and len(uid) <= 64
            sop_uids.add(ds.SOPInstanceUID)
            assert ds.StudyInstanceUID == study.study_uid and ds.SeriesInstanceUID == study.series_uid
            assert ds.AccessionNumber == study.accession and ds.PatientID == study.patient_id
            assert ds.PatientAge == f"{study.age:03d}Y"
            assert ds.BitsAllocated == 16 and ds.HighBit == ds.BitsStored - 1
            assert ds.Manufacturer == study.manufacturer
    assert len(sop_uids) == sum(len(s.files) for s in cohort.studies)


def test_age_matches_birth_and_study_dates(ct_dicom):
    for study in ct_dicom.studies:
        ds = _read(study.files[0])
        birth, day = ds.PatientBirthDate, ds.StudyDate
        years = int(day[:4]) - int(birth[:4]) - ((day[4:]) < (birth[4:]))
        assert ds.PatientAge == f"{years:03d}Y"


@pytest.mark.parametrize("cohort_name", ["ct_dicom", "mr_dicom"])
def test_geometry_and_values_match_volume(cohort_name, request):
    cohort = request.getfixturevalue(cohort_name)
    for study in cohort.studies:
        datasets = [_read(p) for p in study.files]
        first = datasets[0]
        iop = np.array(first.ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        positions = np.array([np.array(ds.ImagePositionPatient, dtype=float) @ normal for ds in datasets])
        steps = np.diff(positions)
        assert np.allclose(steps, float(first.SpacingBetweenSlices), atol=1e-4)
        assert np.allclose(steps, float(first.SliceThickness), atol=1e-4)
        # files are listed along the normal: the affine reproduces every IPP
        affine = study.affine_lps
        for k, ds in enumerate(datasets):
            position = np.array(ds.ImagePositionPatient, dtype=float)
            assert np.allclose(position, affine[:3, 3] + k * affine[:3, 2], atol=1e-4)
            assert float(ds.SliceLocation) == pytest.approx(positions[k], abs=1e-4)
        assert np.allclose(affine[:3, 0] / np.linalg.norm(affine[:3, 0]), iop[:3])
        assert np.allclose(affine[:3, 1] / np.linalg.norm(affine[:3, 1]), iop[3:])
        assert np.linalg.norm(affine[:3, 0]) == pytest.approx(float(first.PixelSpacing[1]))
        assert np.linalg.norm(affine[:3, 1]) == pytest.approx(float(first.PixelSpacing[0]))
        # real-world values: stored * slope + intercept, slice k = vol[:, :, k].T
        for k, ds in enumerate(datasets):
            slope = float(getattr(ds, "RescaleSlope", 1.0))
            intercept = float(getattr(ds, "RescaleIntercept", 0.0))
            real = ds.pixel_array.astype(np.float64) * slope + intercept
            np.testing.assert_array_equal(real, study.volume[:, :, k].T.astype(np.float64))


def test_ct_storage_variants_and_hu_range(ct_dicom):
    seen = set()
    for study in ct_dicom.studies:
        ds = _read(study.files[0])
        seen.add((ds.Manufacturer, int(ds.PixelRepresentation), float(ds.RescaleIntercept)))
        assert ds.RescaleType == "HU" and study.volume.dtype == np.int16
        assert study.volume.min() >= -1024 and study.volume.max() < 3072
    assert len(seen) >= 2


def test_mr_scanners_differ_in_scaling(mr_dicom):
    gains = {}
    for study in mr_dicom.studies:
        ds = _read(study.files[0])
        gains[ds.Manufacturer] = (float(getattr(ds, "RescaleSlope", 1.0)), float(np.percentile(study.volume, 95)))
    assert len(gains) == 3
    assert any(slope != 1.0 for slope, _ in gains.values())
    assert len({round(p95, -2) for _, p95 in gains.values()}) >= 2


def test_radiograph_photometric_and_inversion(xr_dicom):
    photometrics = set()
    for study in xr_dicom.studies:
        ds = _read(study.files[0])
        photometrics.add(ds.PhotometricInterpretation)
        assert ds.Modality == "DX" and ds.PresentationIntentType == "FOR PRESENTATION"
        assert list(ds.ImagerPixelSpacing) == list(ds.PixelSpacing)
        stored = ds.pixel_array.astype(np.int64)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            shown = (2 ** ds.BitsStored - 1) - stored
            assert ds.PresentationLUTShape == "INVERSE"
        else:
            shown = stored
        np.testing.assert_array_equal(shown, study.volume.T.astype(np.int64))
        # MONOCHROME2 sense: the mediastinum / spine (centre column) is brighter than the lung fields
        img = study.volume
        n = img.shape[0]
        assert img[n // 2, n // 3] > img[n // 4, n // 3]
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}


def test_fast_encoder_matches_pydicom_save_as():
    """The series encoder writes the same bytes as pydicom's own writer, non-ASCII names included."""
    from medrec.synth import plan_cohort, render_study
    from medrec.synth.dicom_encoder import SeriesEncoder, encode
    from medrec.synth.dicom_study import _localizer_specs, _main_spec
    from medrec.synth.dicom_writer import build_series_datasets, series_template

    for kind in ("ct-lesion", "mri-tumor", "xr-nodule"):
        plan = plan_cohort(kind, patients=1, seed=1, image_size=16, slice_thickness=20.0,
                           identity={"patient_name": "Müller^Jörg 李{index}"})[0]
        rendered = render_study(plan)
        specs = [_main_spec(plan, rendered, quirks=True)]
        if plan.phantom.dims == 3:
            specs += _localizer_specs(plan, rendered, 1, 2)
        for spec in specs:
            template, values = series_template(plan, spec)
            encoder = SeriesEncoder(template, values(0))
            for k, ds in build_series_datasets(plan, spec):
                assert encoder.encode(values(k)) == encode(ds)
