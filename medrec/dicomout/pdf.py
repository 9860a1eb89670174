"""The validation report PDF as a DICOM Encapsulated PDF object, linked to the studies it describes.

highdicom has no Encapsulated PDF class (0.28: SR, SEG, PM, SC, KO, PR, ANN, legacy), so the IOD
(PS3.3 A.45.1) is filled in here on top of :class:`highdicom.SOPClass`, which writes the SOP
Common, Patient, General Study, series and General Equipment basics. Added by hand: Encapsulated
Document Series (Modality DOC), SC Equipment (ConversionType WSD: made by a workstation) and
Encapsulated Document (the PDF, its length, title, BurnedInAnnotation YES: a report shows
identifiers, and SourceInstanceSequence: the instances it describes).

Patient and study follow the sources:

- one patient, one study: the PDF joins that study, with its Patient and General Study
  attributes copied from the first source;
- one patient, several studies: the patient is copied, the PDF gets a study of its own;
- several patients: the Patient attributes stay empty (type 2: present, never invented) and the
  PDF gets a study of its own.

A study of its own has a stable UID (from the sorted source UIDs and the PDF's sha256), the
description ``medrec validation report``, and the report's date; its ID, accession number and
referring physician stay empty.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Sequence
from copy import deepcopy
from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian

from medrec import __version__
from medrec.dicomout.identity import (
    INSTANCE_NUMBER,
    MANUFACTURER,
    PDF_SERIES_NUMBER,
    long_string,
    read_header,
    stable_uid,
)
from medrec.dicomout.results import DicomExportError
from medrec.errors import InputError

REPORT_DESCRIPTION = "medrec validation report"
PDF_MIME_TYPE = "application/pdf"

# Patient module (PS3.3 C.7.1.1) and General Study module (C.7.2.1) attributes copied from a
# source, by keyword: the lists are the modules' own, so a source of any SOP class (an image, an
# SR) gives the same copy, and nothing outside these modules (age, weight, institution) is taken.
PATIENT_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "TypeOfPatientID",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientComments", "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    "QualityControlSubject",
)
STUDY_KEYWORDS: tuple[str, ...] = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "IssuerOfAccessionNumberSequence", "StudyDescription", "ProcedureCodeSequence",
)


def _patient_key(ds: Dataset) -> tuple[str, str, str]:
    return (str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", "")), str(ds.get("PatientName", "")))


def _copy(source: Dataset, target: Dataset, keywords: Sequence[str]) -> None:
    for keyword in keywords:
        if keyword in source:
            target.add(deepcopy(source[keyword]))


def _read_pdf(pdf: str | os.PathLike[str]) -> bytes:
    try:
        data = Path(pdf).read_bytes()
    except OSError as e:
        raise InputError(f"{pdf}: cannot read the report PDF ({e.strerror})") from e
    if not data.startswith(b"%PDF-"):
        raise DicomExportError(f"{pdf}: not a PDF (does not start with %PDF-); pass the report's .pdf file")
    return data


def _source_item(ds: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def encapsulated_pdf(pdf: Path, sources: Sequence[Dataset | Path], title: str) -> hd.SOPClass:
    """The report PDF as an Encapsulated PDF object referencing ``sources``.

    Args:
        pdf: the validation report PDF.
        sources: the instances the report describes (datasets or DICOM files): e.g. the SR of each
            study, or one instance per scored series. Listed in SourceInstanceSequence; they decide
            the patient and study (module docstring).
        title: DocumentTitle (e.g. ``medrec validation report: finding_fcn``).

    Returns:
        The Encapsulated PDF dataset (UIDs stable for the same PDF bytes and sources).

    Raises:
        DicomExportError: (a ValueError) no sources, or the file is not a PDF.
        DicomError: a source file is unreadable.
        InputError: the PDF cannot be read.
    """
    if not sources:
        raise DicomExportError("encapsulated_pdf needs at least one source instance (the SR or an image of each study)")
    data = _read_pdf(pdf)
    datasets = [source if isinstance(source, Dataset) else read_header(source) for source in sources]
    unique: dict[str, Dataset] = {}
    for ds in datasets:
        unique.setdefault(str(ds.SOPInstanceUID), ds)
    datasets = list(unique.values())

    patients = {_patient_key(ds) for ds in datasets}
    studies = {str(ds.StudyInstanceUID) for ds in datasets}
    joins_study = len(patients) == 1 and len(studies) == 1
    pdf_sha256 = hashlib.sha256(data).hexdigest()
    source_uids = sorted(unique)
    study_uid = next(iter(studies)) if joins_study else stable_uid("pdf", "study", pdf_sha256, *source_uids)
    now = datetime.datetime.now()

    ds = hd.SOPClass(
        study_instance_uid=study_uid,
        series_instance_uid=stable_uid("pdf", "series", study_uid),
        series_number=PDF_SERIES_NUMBER,
        sop_instance_uid=stable_uid("pdf", "instance", study_uid, pdf_sha256, *source_uids),
        sop_class_uid=EncapsulatedPDFStorage,
        instance_number=INSTANCE_NUMBER,
        modality="DOC",
        manufacturer=MANUFACTURER,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=REPORT_DESCRIPTION,
        manufacturer_model_name="medrec report",
        software_versions=long_string(__version__),
        content_date=now.date(),
        content_time=now.time(),
        # UTF-8 holds any copied name and any title
        specific_character_set="ISO_IR 192",
    )
    if len(patients) == 1:
        _copy(datasets[0], ds, PATIENT_KEYWORDS)
    if joins_study:
        _copy(datasets[0], ds, STUDY_KEYWORDS)
    else:
        ds.StudyDescription = REPORT_DESCRIPTION
        ds.StudyDate = now.strftime("%Y%m%d")
        ds.StudyTime = now.strftime("%H%M%S")

    # SC Equipment (C.8.6.1)
    ds.ConversionType = "WSD"
    ds.SecondaryCaptureDeviceManufacturer = MANUFACTURER
    ds.SecondaryCaptureDeviceManufacturerModelName = "medrec report"
    ds.SecondaryCaptureDeviceSoftwareVersions = long_string(__version__)
    # Encapsulated Document (C.24.2)
    ds.AcquisitionDateTime = None
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = []
    ds.SourceInstanceSequence = [_source_item(source) for source in datasets]
    ds.MIMETypeOfEncapsulatedDocument = PDF_MIME_TYPE
    ds.EncapsulatedDocumentLength = len(data)
    # OB values have even length: one NUL pads an odd PDF (EncapsulatedDocumentLength keeps the true size)
    ds.EncapsulatedDocument = data + (b"\x00" if len(data) % 2 else b"")
    return ds
