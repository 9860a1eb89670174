"""What a written cohort is: one :class:`SynthStudy` per study with its lesions' ground truth
(:class:`LesionTruth`), the :class:`SynthCohort` around them, and the ``labels.csv`` / ``ground_truth.csv``
tables built from them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrec.synth.dicom_study import MAIN_SERIES_NUMBER
from medrec.synth.dicom_writer import series_uid
from medrec.synth.plan import StudyPlan
from medrec.synth.render import RenderedStudy, body_to_lps, lesion_index

LABEL_COLUMNS: tuple[str, ...] = ("patient_id", "study_uid", "accession", "label", "lesion_type", "path")
GROUND_TRUTH_COLUMNS: tuple[str, ...] = (
    "patient_id", "study_uid", "series_uid", "lesion_index", "center_x", "center_y", "center_z",
    "diameter_mm", "lesion_type", "contrast", "center_i", "center_j", "center_k",
)


@dataclass(frozen=True)
class LesionTruth:
    """One rendered lesion: centre in LPS mm and in (fractional) voxel indices of the main series."""

    lesion_index: int
    center_lps: tuple[float, ...]
    center_index: tuple[float, ...]
    diameter_mm: float
    lesion_type: str
    contrast: float


@dataclass
class SynthStudy:
    """One written study (its main series).

    ``mask_path``: the lesion mask written with ``masks=True`` (positive studies only).
    ``volume`` holds the real-world values a correct reader returns (CT: int16 HU; MR: stored *
    slope + intercept; XR: MONOCHROME2-sense values) in the vol[i, j, k] / img[i, j] convention;
    None unless ``return_volumes``. ``files``: the main series' files sorted along the slice normal
    (DICOM) or the one NIfTI file. ``spacing``: (x, y, z) mm, (x, y) for a radiograph.
    """

    patient_id: str
    study_uid: str
    series_uid: str
    accession: str
    label: int
    lesion_type: str
    manufacturer: str
    sex: str
    age: int
    files: list[Path]
    spacing: tuple[float, ...]
    affine_lps: np.ndarray
    volume: np.ndarray | None = None
    lesions: tuple[LesionTruth, ...] = ()
    kind: str = ""
    modality: str = ""
    study_date: str = ""
    path: Path | None = None
    plan: StudyPlan | None = field(default=None, repr=False)
    mask_path: Path | None = None


@dataclass
class SynthCohort:
    """What :func:`generate_cohort` wrote."""

    out_dir: Path
    labels_csv: Path
    ground_truth_csv: Path
    studies: list[SynthStudy]
    kind: str = ""
    fmt: str = ""
    seed: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


def _study_record(
    plan: StudyPlan, rendered: RenderedStudy, files: list[Path], path: Path, keep_volume: bool
) -> SynthStudy:
    dims = plan.phantom.dims
    spacing = (plan.pixel_spacing, plan.pixel_spacing, plan.slice_thickness) if dims == 3 else (plan.pixel_spacing,) * 2
    lesions = []
    for number, lesion in enumerate(plan.lesions):
        lesions.append(LesionTruth(
            lesion_index=number,
            center_lps=tuple(round(float(v), 3) for v in body_to_lps(plan, lesion.center)),
            center_index=tuple(round(float(v), 3) for v in lesion_index(plan, lesion.center)),
            diameter_mm=lesion.diameter_mm,
            lesion_type=lesion.lesion_type,
            contrast=lesion.contrast,
        ))
    return SynthStudy(
        patient_id=plan.patient_id,
        study_uid=plan.study_uid,
        series_uid=series_uid(plan, MAIN_SERIES_NUMBER[plan.kind]),
        accession=plan.accession,
        label=plan.label,
        lesion_type=plan.lesion_type,
        manufacturer=plan.scanner.manufacturer,
        sex=plan.sex,
        age=plan.age,
        files=list(files),
        spacing=tuple(float(s) for s in spacing),
        affine_lps=rendered.affine_lps,
        volume=rendered.volume if keep_volume else None,
        lesions=tuple(lesions),
        kind=plan.kind,
        modality=plan.phantom.modality,
        study_date=plan.study_date,
        path=path,
        plan=plan,
    )


def labels_frame(studies: list[SynthStudy], out_dir: Path, with_masks: bool = False) -> pd.DataFrame:
    """labels.csv: one row per study (patient_id, study_uid, accession, label, lesion_type, path[, mask])."""

    def relative(path: Path | None) -> str:
        return Path(os.path.relpath(path, out_dir)).as_posix() if path else ""

    rows = [
        {"patient_id": s.patient_id, "study_uid": s.study_uid, "accession": s.accession, "label": s.label,
         "lesion_type": s.lesion_type, "path": relative(s.path), "mask": relative(s.mask_path)}
        for s in studies
    ]
    return pd.DataFrame(rows, columns=[*LABEL_COLUMNS, *(["mask"] if with_masks else [])])


def ground_truth_frame(studies: list[SynthStudy]) -> pd.DataFrame:
    """ground_truth.csv: one row per lesion (centre in LPS mm and voxel indices of the main series)."""
    rows = []
    for s in studies:
        for lesion in s.lesions:
            index = (*lesion.center_index, 0.0)[:3]
            rows.append({
                "patient_id": s.patient_id, "study_uid": s.study_uid, "series_uid": s.series_uid,
                "lesion_index": lesion.lesion_index, "center_x": lesion.center_lps[0],
                "center_y": lesion.center_lps[1], "center_z": lesion.center_lps[2],
                "diameter_mm": lesion.diameter_mm, "lesion_type": lesion.lesion_type, "contrast": lesion.contrast,
                "center_i": index[0], "center_j": index[1], "center_k": index[2],
            })
    return pd.DataFrame(rows, columns=list(GROUND_TRUTH_COLUMNS))
