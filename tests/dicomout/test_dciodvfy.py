"""Every kind of object medrec writes passes dciodvfy (no "Error" line) and reads back with pydicom and highdicom."""

from __future__ import annotations

import dataclasses

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from reportlab.pdfgen import canvas

from medrec.dicomout import Finding, SeriesResult, encapsulated_pdf, finding_seg, study_sr, write_dataset
from tests.dicomout.conftest import dciodvfy_lines, requires_dciodvfy


def _map(path, centre_lps, value: float):
    """A 2 mm map (RAS affine) that is ``value`` within 15 mm of ``centre_lps``, else 0."""
    centre_ras = np.array(centre_lps) * [-1.0, -1.0, 1.0]
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = centre_ras - 2.0 * 20  # voxel (20, 20, 20) at the centre
    ras = 2.0 * np.indices((41, 41, 41)).reshape(3, -1).T + affine[:3, 3]
    inside = np.linalg.norm(ras - centre_ras, axis=1) <= 15.0
    nib.save(nib.Nifti1Image((inside * value).reshape(41, 41, 41).astype(np.float32), affine), str(path))
    return path


@pytest.fixture(scope="module")
def objects(cohort, lesion_study, normal_study, algorithm, tmp_path_factory):
    """name -> (written path, reader) for each kind and variant of object."""
    folder = tmp_path_factory.mktemp("validate")
    truth = lesion_study.lesions[0]
    finding = Finding(*truth.center_lps, diameter_mm=truth.diameter_mm, probability=0.9)
    far = dataclasses.replace(finding, z=finding.z + 500.0)
    with_finding = SeriesResult("P0002-S01", lesion_study.files, 0.9, finding)
    page = canvas.Canvas(str(folder / "report.pdf"))
    page.drawString(72, 720, "medrec validation report")
    page.save()
    built = {
        "sr circle": (study_sr([with_finding], algorithm), hd.sr.srread),
        "sr point + study score": (study_sr([SeriesResult("far", lesion_study.files, 0.9, far)], algorithm, 0.9),
                                   hd.sr.srread),
        "sr no finding": (study_sr([SeriesResult("P0001-S01", normal_study.files, 0.1)], algorithm), hd.sr.srread),
        "seg": (finding_seg(with_finding, _map(folder / "m.nii.gz", truth.center_lps, 1.0), algorithm), hd.seg.segread),
        "seg empty": (finding_seg(with_finding, _map(folder / "e.nii.gz", truth.center_lps, 0.2), algorithm),
                      hd.seg.segread),
        "pdf one study": (encapsulated_pdf(folder / "report.pdf", [normal_study.files[0]], "report"), None),
        "pdf two patients": (encapsulated_pdf(folder / "report.pdf", [s.files[0] for s in cohort.studies], "report"),
                             None),
    }
    return {name: (write_dataset(ds, folder / "out"), reader) for name, (ds, reader) in built.items()}


NAMES = ["sr circle", "sr point + study score", "sr no finding", "seg", "seg empty", "pdf one study",
         "pdf two patients"]


@requires_dciodvfy
@pytest.mark.parametrize("name", NAMES)
def test_dciodvfy_reports_no_error(objects, name):
    path, _reader = objects[name]
    lines = dciodvfy_lines(path)
    errors = [line for line in lines if "Error" in line]
    assert not errors, f"{name}: dciodvfy {path}:\n" + "\n".join(lines)
    for line in lines:
        if "Warning" in line:
            print(f"{name}: {line}")  # visible with -s / -rA


@pytest.mark.parametrize("name", NAMES)
def test_reads_back(objects, name):
    path, reader = objects[name]
    ds = pydicom.dcmread(path)
    assert path.name == f"{ds.Modality}_{ds.SOPInstanceUID}.dcm"
    if reader is not None:
        assert reader(path).SOPInstanceUID == ds.SOPInstanceUID
