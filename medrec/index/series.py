"""Group DICOM headers into series, order slices along the normal, check each stack's geometry.

Grouping is by SeriesInstanceUID only: two series in one folder never mix, and one series spread
over several folders stays one series. Within a series:

* a multi-frame file (NumberOfFrames > 1) is a sample of its own;
* projection images (DX, CR, MG, XA, RF, ...) are one 2D sample per file, and so is a series of a
  single file (n_slices 1);
* the other single-frame files form a stack, sorted by position along the slice normal
  ``dot(ImagePositionPatient, cross(row, col))`` (never by InstanceNumber).

Stack checks (excluded -> qc.csv; warning -> the manifest ``warnings`` column):

=============================================  ==========================================
problem                                        outcome
=============================================  ==========================================
files without position / orientation           excluded (slices cannot be ordered)
different Rows x Columns                       excluded
orientation differs by > orientation_tolerance excluded (slight differences: warning)
two slices at one position                     excluded (phases / echoes mixed in one series)
fewer than min_slices_3d slices                excluded
gap > gap_factor x median spacing              excluded (``allow_missing_slices``: warning)
spacing off the median by > spacing_tolerance  excluded (1% .. tolerance: warning)
gantry tilt > tilt_tolerance_deg               warning (``exclude_gantry_tilt``: excluded)
=============================================  ==========================================
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medrec.index.headers import DicomHeader
from medrec.index.nifti import plane_of_normal
from medrec.index.problems import FileProblem
from medrec.index.selection import SelectionRules, header_eligibility_problem

# Modalities whose images are projections or photographs: each file is its own 2D sample.
PROJECTION_MODALITIES: frozenset[str] = frozenset(
    {"DX", "CR", "MG", "XA", "RF", "IO", "PX", "US", "ES", "XC", "GM", "SM", "OP", "DG", "SC", "OT", "BMD"}
)
_AGE_PATTERN = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"Y": 1.0, "": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


@dataclass
class Candidate:
    """A would-be sample (one row of manifest.csv) before selection and labelling."""

    sample_key: str
    series_uid: str
    study_uid: str
    patient_id: str
    accession: str
    modality: str
    format: str
    path: str
    files: list[str]
    n_slices: int
    rows: int
    cols: int
    spacing_x: float
    spacing_y: float
    spacing_z: float
    slice_thickness: float | None
    orientation: str
    manufacturer: str = ""
    sex: str = ""
    age: float | None = None
    series_description: str = ""
    image_type: tuple[str, ...] = ()
    sop_class_uid: str = ""
    warnings: list[str] = field(default_factory=list)
    selection: str = ""
    label: str = ""
    sample_id: str = ""

    def __post_init__(self) -> None:
        if not self.sample_id:
            self.sample_id = hashlib.sha1(self.sample_key.encode("utf-8")).hexdigest()[:12]

    def problems(self, code: str, reason: str) -> list[FileProblem]:
        """One qc row per file of this candidate (the file itself for NIfTI)."""
        paths = self.files if self.files else [self.path]
        return [FileProblem(path, code, reason, self.series_uid) for path in paths]

    def manifest_row(self) -> dict[str, object]:
        """The manifest.csv row (MANIFEST_COLUMNS)."""
        return {
            "sample_id": self.sample_id,
            "patient_id": self.patient_id,
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "accession": self.accession,
            "modality": self.modality,
            "format": self.format,
            "path": self.path,
            "files": json.dumps(self.files) if self.format == "dicom" else "",
            "label": self.label,
            "n_slices": self.n_slices,
            "rows": self.rows,
            "cols": self.cols,
            "spacing_x": _round(self.spacing_x),
            "spacing_y": _round(self.spacing_y),
            "spacing_z": _round(self.spacing_z),
            "slice_thickness": _round(self.slice_thickness),
            "orientation": self.orientation,
            "manufacturer": self.manufacturer,
            "sex": self.sex,
            "age": self.age,
            "series_description": self.series_description,
            "selection": self.selection,
            "warnings": ";".join(self.warnings),
        }


# Ages above 89 identify people (HIPAA Safe Harbor groups them as "90 or older"): the manifest
# records 90 for all of them.
AGE_CAP_YEARS = 90.0


def parse_age(text: str) -> float | None:
    """PatientAge (``063Y``, ``006M``, ``010W``, ``003D``) in years, at most :data:`AGE_CAP_YEARS`.

    None when absent or malformed.
    """
    match = _AGE_PATTERN.match(text or "")
    if not match:
        return None
    return min(AGE_CAP_YEARS, round(int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2).upper()], 3))


def build_dicom_candidates(
    headers: Sequence[DicomHeader], rules: SelectionRules
) -> tuple[list[Candidate], list[FileProblem], int]:
    """Deduplicate SOP instances, group into series, split into samples and check geometry.

    Returns:
        (candidates, qc problems, number of series found).
    """
    problems: list[FileProblem] = []
    first_path_of: dict[str, str] = {}
    unique: list[DicomHeader] = []
    # of two copies keep the one among most files of its series (a stray copy elsewhere is dropped)
    in_folder = Counter((h.series_uid, os.path.dirname(h.path)) for h in headers)
    for header in sorted(headers, key=lambda h: (-in_folder[h.series_uid, os.path.dirname(h.path)], h.path)):
        uid = header.sop_instance_uid
        if uid and uid in first_path_of:
            problems.append(
                FileProblem(
                    header.path,
                    "duplicate_sop",
                    f"duplicate SOP instance: SOPInstanceUID {uid} is also in {first_path_of[uid]} (kept that file)",
                    header.series_uid,
                )
            )
            continue
        if uid:
            first_path_of[uid] = header.path
        unique.append(header)

    groups: dict[str, list[DicomHeader]] = defaultdict(list)
    for header in unique:
        key = header.series_uid or f"unknown-series-{hashlib.sha1(header.path.encode()).hexdigest()[:16]}"
        groups[key].append(header)

    candidates: list[Candidate] = []
    for series_uid in sorted(groups):
        series_candidates, series_problems = _series_samples(series_uid, groups[series_uid], rules)
        candidates.extend(series_candidates)
        problems.extend(series_problems)
    return candidates, problems, len(groups)


def _series_samples(
    series_uid: str, headers: list[DicomHeader], rules: SelectionRules
) -> tuple[list[Candidate], list[FileProblem]]:
    multi_frame = [h for h in headers if h.frames > 1]
    single_frame = [h for h in headers if h.frames == 1]
    modality = headers[0].modality
    per_file = bool(single_frame) and (modality in PROJECTION_MODALITIES or len(single_frame) == 1)
    units: list[list[DicomHeader]] = [[h] for h in multi_frame]
    units += [[h] for h in single_frame] if per_file else ([single_frame] if single_frame else [])
    problems: list[FileProblem] = []
    candidates: list[Candidate] = []
    for unit in units:
        ineligible = _header_problem(unit, rules)
        if ineligible is not None:
            problems.extend(FileProblem(h.path, *ineligible, series_uid) for h in unit)
            continue
        key = series_uid if len(units) == 1 else f"{series_uid}/{unit[0].sop_instance_uid or unit[0].path}"
        if len(unit) > 1:
            result = _stack_candidate(key, series_uid, unit, rules)
        else:
            result = _single_file_candidate(key, series_uid, unit[0])
        if isinstance(result, Candidate):
            candidates.append(result)
        else:
            code, reason = result
            problems.extend(FileProblem(h.path, code, reason, series_uid) for h in unit)
    return candidates, problems


def _header_problem(unit: list[DicomHeader], rules: SelectionRules) -> tuple[str, str] | None:
    """The first header-level exclusion (non-image object, modality, localizer, derived) among a unit's files."""
    for header in unit:
        problem = header_eligibility_problem(
            header.modality, header.image_type, header.series_description, rules, header.sop_class_uid
        )
        if problem is not None:
            return problem
    return None


def _stack_candidate(
    key: str, series_uid: str, headers: list[DicomHeader], rules: SelectionRules
) -> Candidate | tuple[str, str]:
    """Order a single-frame stack along its normal and check its geometry."""
    n = len(headers)
    missing = [h for h in headers if h.position is None or h.orientation is None]
    if missing:
        return (
            "no_geometry",
            f"cannot order slices: {len(missing)} of {n} files lack ImagePositionPatient/ImageOrientationPatient",
        )
    sizes = Counter((h.rows, h.cols) for h in headers)
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c} ({k} files)" for (r, c), k in sizes.most_common())
        return "inconsistent_size", f"inconsistent image size within series: {listed}"

    warnings: list[str] = []
    orientations = np.array([h.orientation for h in headers], dtype=float)
    deviation = float(np.max(np.abs(orientations - orientations[0])))
    if deviation > rules.orientation_tolerance:
        return (
            "inconsistent_orientation",
            f"inconsistent orientation within series: ImageOrientationPatient differs by up to {deviation:.3g}",
        )
    if deviation > 1e-4:
        warnings.append(f"orientation varies slightly (up to {deviation:.2g})")
    row, col = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 0.5:
        return ("invalid_orientation",
                f"invalid ImageOrientationPatient {tuple(orientations[0])}: row and column not orthogonal")
    normal /= norm

    positions = np.array([h.position for h in headers], dtype=float)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along_sorted = along[order]
    steps = np.diff(along_sorted)
    duplicates = int(np.sum(steps < rules.position_tolerance_mm))
    if duplicates:
        where = float(along_sorted[1:][steps < rules.position_tolerance_mm][0])
        return (
            "duplicate_position",
            f"duplicate slice positions: {duplicates} slice(s) share a position with another (first at "
            f"{where:.2f} mm along the normal); several phases/echoes in one series?",
        )
    if n < rules.min_slices_3d:
        return "too_few_slices", f"too few slices for a 3D volume: {n} < min_slices_3d {rules.min_slices_3d}"

    median = float(np.median(steps))
    gap_mask = steps > rules.gap_factor * median
    relative = np.abs(steps - median) / median
    if gap_mask.any():
        first = int(np.argmax(gap_mask))
        missing_count = int(sum(round(s / median) - 1 for s in steps[gap_mask]))
        message = (
            f"missing slices: gap of {steps[first]:.2f} mm after slice {first + 1} of {n} (median spacing "
            f"{median:.2f} mm; about {missing_count} slice(s) missing in {int(gap_mask.sum())} gap(s))"
        )
        if not rules.allow_missing_slices:
            return "missing_slices", message
        warnings.append(message)
    elif float(relative.max()) > rules.spacing_tolerance:
        return (
            "inconsistent_spacing",
            f"inconsistent slice spacing: {steps.min():.3f}..{steps.max():.3f} mm (median {median:.3f} mm)",
        )
    elif float(relative.max()) > 0.01:
        warnings.append(f"slice spacing jitter up to {100 * float(relative.max()):.1f}% (median {median:.3f} mm)")

    stacking = positions[order[-1]] - positions[order[0]]
    cosine = abs(float(stacking @ normal)) / float(np.linalg.norm(stacking))
    tilt = math.degrees(math.acos(min(1.0, cosine)))
    if tilt > rules.tilt_tolerance_deg:
        message = f"gantry tilt {tilt:.1f} deg: slices are sheared along the stack"
        if rules.exclude_gantry_tilt:
            return "gantry_tilt", message
        warnings.append(message)

    ordered = [headers[i] for i in order]
    return _candidate(key, series_uid, ordered, n, median, plane_of_normal(normal), warnings)


def _single_file_candidate(key: str, series_uid: str, header: DicomHeader) -> Candidate | tuple[str, str]:
    """One file: a 2D image (n_slices 1) or a multi-frame object (n_slices = frames)."""
    warnings: list[str] = []
    orientation = ""
    normal = None
    if header.orientation is not None:
        normal = np.cross(np.asarray(header.orientation[:3]), np.asarray(header.orientation[3:]))
        if np.linalg.norm(normal) > 0.5:
            normal = normal / np.linalg.norm(normal)
            orientation = plane_of_normal(normal)
        else:
            normal = None
    if header.frames == 1:
        spacing_z = header.slice_thickness or 1.0
        return _candidate(key, series_uid, [header], 1, spacing_z, orientation, warnings)
    spacing_z = header.spacing_between_slices or header.slice_thickness or 1.0
    if header.frame_positions and normal is not None:
        along = np.asarray(header.frame_positions, dtype=float) @ normal
        steps = np.diff(np.sort(along))
        if np.any(steps < 0.01):
            warnings.append("frames share positions (temporal or multi-phase frames)")
        elif steps.size:
            spacing_z = float(np.median(steps))
            if np.any(np.diff(along) < 0):
                warnings.append("frames not stored in ascending position along the normal")
    return _candidate(key, series_uid, [header], header.frames, spacing_z, orientation, warnings)


def _candidate(
    key: str,
    series_uid: str,
    ordered: list[DicomHeader],
    n_slices: int,
    spacing_z: float,
    orientation: str,
    extra_warnings: list[str],
) -> Candidate:
    first = ordered[0]
    warnings: list[str] = []
    counts = Counter(w for h in ordered for w in h.warnings)
    for text, count in counts.items():
        warnings.append(text if count == 1 else f"{text} ({count} files)")
    if not first.series_uid:
        warnings.append("no SeriesInstanceUID: file treated as its own series")
    study_uid = first.study_uid
    if not study_uid:
        study_uid = series_uid
        warnings.append("no StudyInstanceUID: series treated as its own study")
    patient_id = first.patient_id
    if not patient_id:
        patient_id = study_uid
        warnings.append("no PatientID: StudyInstanceUID used as patient_id")
    if first.pixel_spacing is None:
        spacing_x = spacing_y = 1.0
        warnings.append("no PixelSpacing: 1.0 mm assumed")
    else:
        spacing_y, spacing_x = first.pixel_spacing
    warnings.extend(extra_warnings)
    files = [h.path for h in ordered]
    folders = {os.path.dirname(path) for path in files}
    path = folders.pop() if len(folders) == 1 else os.path.commonpath(files)
    return Candidate(
        sample_key=key,
        series_uid=series_uid,
        study_uid=study_uid,
        patient_id=patient_id,
        accession=first.accession,
        modality=first.modality,
        format="dicom",
        path=path,
        files=files,
        n_slices=n_slices,
        rows=first.rows,
        cols=first.cols,
        spacing_x=spacing_x,
        spacing_y=spacing_y,
        spacing_z=float(spacing_z),
        slice_thickness=first.slice_thickness,
        orientation=orientation,
        manufacturer=first.manufacturer,
        sex=first.sex,
        age=parse_age(first.age_text),
        series_description=first.series_description,
        image_type=first.image_type,
        sop_class_uid=first.sop_class_uid,
        warnings=warnings,
    )


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return round(float(value), 6)
