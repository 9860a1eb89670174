"""encapsulated_pdf: exact bytes, the sources it describes, and whose patient and study it joins."""

from __future__ import annotations

import pydicom
import pytest
from reportlab.pdfgen import canvas

from medrec.dicomout import DicomExportError, SeriesResult, encapsulated_pdf, study_sr, write_dataset

TITLE = "medrec validation report: finding_fcn"


def _pdf(path, odd: bool):
    """A real one-page PDF of odd or even length (trailing newlines after %%EOF are allowed)."""
    page = canvas.Canvas(str(path))
    page.drawString(72, 720, "medrec validation report")
    page.save()
    data = path.read_bytes()
    if (len(data) % 2 == 1) != odd:
        path.write_bytes(data + b"\n")
    return path


@pytest.mark.parametrize("odd", [True, False])
def test_pdf_bytes_round_trip(normal_study, tmp_path, odd):
    pdf = _pdf(tmp_path / "report.pdf", odd)
    path = write_dataset(encapsulated_pdf(pdf, [normal_study.files[0]], TITLE), tmp_path / "out")
    assert path.name.startswith("DOC_")
    back = pydicom.dcmread(path)
    data = pdf.read_bytes()
    assert len(back.EncapsulatedDocument) % 2 == 0
    assert back.EncapsulatedDocumentLength == len(data)
    assert back.EncapsulatedDocument[: back.EncapsulatedDocumentLength] == data
    assert back.EncapsulatedDocument == data + (b"\x00" if odd else b"")
    assert back.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert back.DocumentTitle == TITLE and back.BurnedInAnnotation == "YES"
    assert back.SOPClassUID == pydicom.uid.EncapsulatedPDFStorage and back.Modality == "DOC"


def test_one_study_is_joined(normal_study, tmp_path):
    pdf = _pdf(tmp_path / "report.pdf", odd=False)
    sources = [normal_study.files[0], normal_study.files[5]]
    ds = encapsulated_pdf(pdf, sources, TITLE)
    source = pydicom.dcmread(sources[0], stop_before_pixels=True)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                    "AccessionNumber", "StudyDate", "StudyID", "StudyDescription"):
        assert ds[keyword].value == source[keyword].value, keyword
    listed = [(item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID) for item in ds.SourceInstanceSequence]
    expected = [(ds.SOPClassUID, ds.SOPInstanceUID) for ds in (pydicom.dcmread(p, stop_before_pixels=True)
                                                               for p in sources)]
    assert listed == expected


def test_two_patients_leave_patient_empty_and_get_a_new_study(cohort, algorithm, tmp_path):
    pdf = _pdf(tmp_path / "report.pdf", odd=False)
    # the caller's usual sources: the SR of each study (datasets in memory)
    srs = [study_sr([SeriesResult(study.patient_id, study.files, score=0.5)], algorithm) for study in cohort.studies]
    ds = encapsulated_pdf(pdf, srs, TITLE)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        assert keyword in ds and not ds[keyword].value, keyword  # type 2: present, empty
    assert ds.StudyInstanceUID not in {study.study_uid for study in cohort.studies}
    assert ds.StudyDescription == "medrec validation report"
    assert ds.AccessionNumber in ("", None)
    listed = [(item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID) for item in ds.SourceInstanceSequence]
    assert listed == [(sr.SOPClassUID, sr.SOPInstanceUID) for sr in srs]

    again = encapsulated_pdf(pdf, list(reversed(srs)), TITLE)  # same sources, any order: same object
    assert (again.StudyInstanceUID, again.SOPInstanceUID) == (ds.StudyInstanceUID, ds.SOPInstanceUID)
    other = tmp_path / "other.pdf"
    other.write_bytes(pdf.read_bytes() + b"\n\n")
    assert encapsulated_pdf(other, srs, TITLE).SOPInstanceUID != ds.SOPInstanceUID  # another PDF: another object


def test_not_a_pdf_is_refused(normal_study, tmp_path):
    fake = tmp_path / "report.pdf"
    fake.write_text("<html>not a pdf</html>")
    with pytest.raises(DicomExportError, match="not a PDF"):
        encapsulated_pdf(fake, [normal_study.files[0]], TITLE)
    with pytest.raises(DicomExportError, match="at least one source"):
        encapsulated_pdf(_pdf(tmp_path / "ok.pdf", odd=True), [], TITLE)
