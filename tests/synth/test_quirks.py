"""--quirks: localizers, opaque extension-less names, shuffled order, two series in one folder."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pydicom


def _headers(cohort):
    files = [p for p in (cohort.out_dir / "DICOM").rglob("*") if p.is_file()]
    return {p: pydicom.dcmread(p, stop_before_pixels=True) for p in files}


def test_layout_is_opaque_and_extension_less(ct_quirks):
    headers = _headers(ct_quirks)
    assert headers
    for path in headers:
        assert path.suffix == "" and path.name.isdigit() and len(path.name) == 7
        assert len(path.parent.name) == 6 and path.parent.parent.name == "DICOM"
    for study in ct_quirks.studies:
        assert all(p in headers for p in study.files)


def test_every_study_has_a_localizer(ct_quirks):
    headers = _headers(ct_quirks)
    for study in ct_quirks.studies:
        localizers = [ds for ds in headers.values()
                      if ds.StudyInstanceUID == study.study_uid and "LOCALIZER" in ds.ImageType]
        assert 1 <= len(localizers) <= 3
        assert len({ds.SeriesInstanceUID for ds in localizers}) == 1
        for ds in localizers:
            iop = np.array(ds.ImageOrientationPatient, dtype=float)
            normal = np.cross(iop[:3], iop[3:])
            assert abs(normal[2]) < 1e-6  # coronal or sagittal, never axial


def test_some_folder_holds_two_series_of_one_study(ct_quirks):
    headers = _headers(ct_quirks)
    series_by_folder = defaultdict(set)
    for path, ds in headers.items():
        series_by_folder[path.parent].add((ds.StudyInstanceUID, ds.SeriesInstanceUID))
    shared = [folder for folder, series in series_by_folder.items() if len(series) == 2]
    assert len(shared) == len(ct_quirks.studies)  # every study: its main series shares its folder
    for series in series_by_folder.values():
        assert len({study for study, _ in series}) == 1


def test_file_order_and_instance_numbers_are_not_position_order(ct_quirks):
    headers = _headers(ct_quirks)
    non_monotonic = 0
    for study in ct_quirks.studies:
        datasets = [headers[p] for p in study.files]  # sorted along the normal
        numbers = [int(ds.InstanceNumber) for ds in datasets]
        if numbers != sorted(numbers) and numbers != sorted(numbers, reverse=True):
            non_monotonic += 1
        names = [p.name for p in study.files]
        assert names != sorted(names)  # file names do not follow position either
        assert sorted(numbers) == list(range(1, len(numbers) + 1))
    assert non_monotonic >= 1


def test_second_reconstruction_is_thicker(ct_quirks):
    headers = _headers(ct_quirks)
    axial = defaultdict(list)
    for ds in headers.values():
        if "AXIAL" in ds.ImageType:
            axial[(ds.StudyInstanceUID, ds.SeriesInstanceUID)].append(float(ds.SliceThickness))
    by_study = defaultdict(list)
    for (study, _), thickness in axial.items():
        by_study[study].append((thickness[0], len(thickness)))
    recon_studies = [v for v in by_study.values() if len(v) == 2]
    assert recon_studies
    for (t1, n1), (t2, n2) in (sorted(v) for v in recon_studies):
        assert t2 == 2 * t1 and n2 < n1


def test_radiograph_quirks(xr_dicom):
    headers = _headers(xr_dicom)
    kinds = {tuple(ds.ImageType)[:2] for ds in headers.values()}
    assert kinds == {("ORIGINAL", "PRIMARY"), ("DERIVED", "SECONDARY")}
