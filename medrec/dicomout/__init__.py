"""medrec's results as DICOM objects (highdicom): SR (TID 1500), SEG of finding maps, Encapsulated PDF.

One module per object: :mod:`~medrec.dicomout.sr` (the study's scores and findings as a
Comprehensive 3D SR, and :func:`sr_text` to read one), :mod:`~medrec.dicomout.seg` (a finding map
as a binary Segmentation on the source slices), :mod:`~medrec.dicomout.pdf` (the validation
report); :mod:`~medrec.dicomout.writer` writes any of them. Codes and why they were chosen:
:mod:`~medrec.dicomout.codes`; stable UIDs, series numbers and descriptions:
:mod:`~medrec.dicomout.identity`.

Example::

    algorithm = Algorithm("finding_fcn", "0.1.0", weights_sha256, 0.42, "validation: Youden", "lesion")
    result = SeriesResult("P0001-S01", files, score=0.91, finding=Finding(-78.0, -15.0, -232.0, 34.0, 0.97))
    write_dataset(study_sr([result], algorithm), out_dir)
"""

from __future__ import annotations

from medrec.dicomout.pdf import encapsulated_pdf
from medrec.dicomout.results import Algorithm, DicomExportError, Finding, SeriesResult
from medrec.dicomout.seg import finding_seg
from medrec.dicomout.sr import sr_text, study_sr
from medrec.dicomout.writer import write_dataset

__all__ = [
    "Algorithm",
    "DicomExportError",
    "Finding",
    "SeriesResult",
    "encapsulated_pdf",
    "finding_seg",
    "sr_text",
    "study_sr",
    "write_dataset",
]
