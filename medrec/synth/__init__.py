"""Synthetic phantom cohorts: abdominal CT with liver lesions, brain MR with tumors, chest X-rays with nodules.

``generate_cohort`` writes DICOM series (realistic headers, geometry, scanner variation and, with
``quirks``, the oddities of real exports) or NIfTI volumes, plus ``labels.csv`` and ``ground_truth.csv``.
``plan_cohort`` draws the same cohort without rendering pixels.
"""

from __future__ import annotations

from medrec.synth.cohort import generate_cohort
from medrec.synth.plan import FORMATS, KINDS, Identity, StudyPlan, plan_cohort
from medrec.synth.records import GROUND_TRUTH_COLUMNS, LABEL_COLUMNS, LesionTruth, SynthCohort, SynthStudy
from medrec.synth.render import render_modality_image, render_study

__all__ = [
    "FORMATS",
    "GROUND_TRUTH_COLUMNS",
    "KINDS",
    "LABEL_COLUMNS",
    "Identity",
    "LesionTruth",
    "StudyPlan",
    "SynthCohort",
    "SynthStudy",
    "generate_cohort",
    "plan_cohort",
    "render_modality_image",
    "render_study",
]
