"""Which series become samples: :class:`SelectionRules` and the one-series-per-study choice.

A candidate (a DICOM series, one multi-frame file, one 2D image or one NIfTI file) is first
checked for eligibility (an image, not a non-image object such as SEG / RTDOSE / SR unless
``include_non_image``; modality allowed, not a localizer / scout, optionally not derived, at
least ``min_slices`` slices). Among the eligible candidates of a study one is chosen by:

1. the preferred orientation (axial by default),
2. more slices,
3. thinner slices (SliceThickness, else the slice spacing; volumes only),
4. ORIGINAL over DERIVED / SECONDARY images,
5. the larger matrix (Rows x Columns),
6. the series UID (only to make ties deterministic).

The chosen sample's ``selection`` column says why; every other candidate goes to qc.csv with
``not selected: ...``. ``all_series=True`` keeps every eligible candidate (eligibility still applies).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from medrec.index.problems import FileProblem
from medrec.index.sop_classes import non_image_object

Orientation = Literal["axial", "coronal", "sagittal"]


class SelectionRules(BaseModel):
    """Frozen rules for geometry checks and series selection (all have sensible defaults).

    Attributes:
        modalities: allowed modalities (e.g. ``("CT",)``); empty means any. Samples with unknown
            modality (NIfTI without a JSON sidecar) are always allowed.
        min_slices: fewest slices a sample needs to be selected (1 keeps 2D images).
        min_slices_3d: fewest slices for a multi-slice stack to count as a 3D volume; a stack of
            2..min_slices_3d-1 slices is excluded as "too few slices".
        exclude_image_types: ImageType values that mark a series as unusable (localizers).
        localizer_descriptions: words in SeriesDescription that mark a localizer.
        exclude_derived: also exclude ImageType DERIVED / SECONDARY (reformats, MIPs, screenshots).
        preferred_orientation: plane preferred when choosing a study's series (``None``: no preference).
        all_series: keep every eligible series instead of one per study.
        gap_factor: a spacing above ``gap_factor`` x the median spacing means missing slices.
        allow_missing_slices: keep series with missing slices (a warning instead of exclusion).
        spacing_tolerance: relative deviation from the median spacing above which spacing is
            inconsistent (excluded); deviations above 1% and up to this are warnings.
        position_tolerance_mm: slices closer than this along the normal share a position (duplicates).
        tilt_tolerance_deg: angle between the slice normal and the stacking direction above which
            the stack counts as gantry-tilted.
        exclude_gantry_tilt: exclude tilted stacks (default: keep them with a warning).
        include: glob patterns (``*_flair.nii.gz``, ``CT/**``) a file must match, by name or by path
            relative to the scan folder, to be read; others go to qc.csv as ``not_included``.
        exclude: glob patterns of files to leave out (qc.csv: ``excluded_by_pattern``).
        orientation_tolerance: largest difference of ImageOrientationPatient components within a
            series before it counts as inconsistent (excluded); above 1e-4 is a warning.
        include_non_image: keep non-image objects (SEG, RTDOSE, RTSTRUCT, SR, PR, KO, ...; see
            :mod:`medrec.index.sop_classes`) as samples instead of excluding them as ``non_image_object``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    modalities: tuple[str, ...] = ()
    min_slices: int = 1
    min_slices_3d: int = 5
    exclude_image_types: tuple[str, ...] = ("LOCALIZER", "SCOUT")
    localizer_descriptions: tuple[str, ...] = ("localizer", "localiser", "scout", "topogram", "surview", "survey")
    exclude_derived: bool = False
    preferred_orientation: Orientation | None = "axial"
    all_series: bool = False
    gap_factor: float = 1.5
    allow_missing_slices: bool = False
    spacing_tolerance: float = 0.1
    position_tolerance_mm: float = 0.01
    tilt_tolerance_deg: float = 0.5
    exclude_gantry_tilt: bool = False
    orientation_tolerance: float = 0.01
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_non_image: bool = False

    @field_validator("modalities", "exclude_image_types")
    @classmethod
    def _upper(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().upper() for v in values if v.strip())

    @field_validator("min_slices", "min_slices_3d")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    @field_validator("gap_factor")
    @classmethod
    def _gap(cls, value: float) -> float:
        if value <= 1.0:
            raise ValueError(f"gap_factor must be > 1 (a gap is larger than the median spacing), got {value}")
        return value


def header_eligibility_problem(
    modality: str,
    image_type: tuple[str, ...],
    series_description: str,
    rules: SelectionRules,
    sop_class_uid: str = "",
) -> tuple[str, str] | None:
    """(code, reason) when header fields alone rule a series out (checked before its geometry).

    A localizer's few slices in several planes would otherwise be reported as a geometry fault,
    and a segmentation's frames as a stack of images.
    """
    if not rules.include_non_image:
        non_image = non_image_object(sop_class_uid, modality)
        if non_image is not None:
            return (
                "non_image_object",
                f"not selected: non-image object {non_image}; pass --include-non-image "
                "(index rule include_non_image: true) to index it as a sample",
            )
    if rules.modalities and modality and modality not in rules.modalities:
        return (
            "modality_not_allowed",
            f"not selected: modality {modality} not allowed (allowed: {', '.join(rules.modalities)})",
        )
    joined = "\\".join(image_type)
    if any(value in rules.exclude_image_types for value in image_type):
        return "localizer", f"not selected: localizer (ImageType {joined})"
    description = series_description.lower()
    words = [word for word in rules.localizer_descriptions if word and word.lower() in description]
    if words:
        return "localizer", f"not selected: localizer (series description contains '{words[0]}')"
    if rules.exclude_derived and {"DERIVED", "SECONDARY"} & set(image_type):
        return "derived", f"not selected: derived/secondary image (ImageType {joined})"
    return None


def eligibility_problem(candidate, rules: SelectionRules) -> tuple[str, str] | None:  # Candidate
    """(code, reason) when a candidate may not be selected at all, else None."""
    problem = header_eligibility_problem(
        candidate.modality, candidate.image_type, candidate.series_description, rules, candidate.sop_class_uid
    )
    if problem is not None:
        return problem
    if candidate.n_slices < rules.min_slices:
        return "below_min_slices", f"not selected: {candidate.n_slices} slice(s) < min_slices {rules.min_slices}"
    return None


def _thickness(candidate) -> float:
    """Slice thickness of a volume (SliceThickness, else spacing); 2D images have none."""
    if candidate.n_slices <= 1:
        return float("inf")
    value = candidate.slice_thickness if candidate.slice_thickness else candidate.spacing_z
    return float(value) if value else float("inf")


def _is_derived(candidate) -> bool:
    return bool({"DERIVED", "SECONDARY"} & set(candidate.image_type))


def _rank_key(candidate, rules: SelectionRules) -> tuple:
    preferred = rules.preferred_orientation is not None and candidate.orientation == rules.preferred_orientation
    return (
        not preferred,
        -candidate.n_slices,
        _thickness(candidate),
        _is_derived(candidate),
        -(candidate.rows * candidate.cols),
        candidate.sample_key,
    )


def _why_better(winner, loser, rules: SelectionRules) -> str:
    """The first ranking criterion on which ``winner`` beats ``loser``."""
    if rules.preferred_orientation is not None and (winner.orientation == rules.preferred_orientation) != (
        loser.orientation == rules.preferred_orientation
    ):
        return f"preferred orientation {rules.preferred_orientation} vs {loser.orientation or 'unknown'}"
    if winner.n_slices != loser.n_slices:
        return f"more slices: {winner.n_slices} vs {loser.n_slices}"
    if _thickness(winner) != _thickness(loser):
        return f"thinner slices: {_thickness(winner):g} vs {_thickness(loser):g} mm"
    if _is_derived(winner) != _is_derived(loser):
        return "original image vs derived/secondary"
    if winner.rows * winner.cols != loser.rows * loser.cols:
        return f"larger matrix: {winner.rows}x{winner.cols} vs {loser.rows}x{loser.cols}"
    return "equal on every rule; first by series UID"


def select_candidates(candidates: Sequence, rules: SelectionRules) -> tuple[list, list[FileProblem]]:
    """Apply eligibility and the per-study choice.

    Args:
        candidates: objects with ``study_uid, modality, sop_class_uid, image_type, series_description,
            n_slices, orientation, slice_thickness, spacing_z, sample_key, series_uid, files, path`` and
            a writable ``selection``.
        rules: the selection rules.

    Returns:
        (kept candidates with ``selection`` filled in, qc problems for the rest, one per file).
    """
    problems: list[FileProblem] = []
    by_study: dict[str, list] = defaultdict(list)
    for candidate in candidates:
        problem = eligibility_problem(candidate, rules)
        if problem is not None:
            problems.extend(candidate.problems(*problem))
            continue
        by_study[candidate.study_uid].append(candidate)

    kept = []
    for study_uid in sorted(by_study):
        group = sorted(by_study[study_uid], key=lambda c: _rank_key(c, rules))
        if rules.all_series:
            for candidate in group:
                candidate.selection = f"all series kept (all_series); {len(group)} eligible in study"
                kept.append(candidate)
            continue
        winner = group[0]
        if len(group) == 1:
            winner.selection = "only eligible series in study"
        else:
            reasons = sorted({_why_better(winner, other, rules).split(":")[0] for other in group[1:]})
            winner.selection = (
                f"best of {len(group)} eligible series in study ({'; '.join(reasons)}): "
                f"{winner.orientation or 'unknown orientation'}, {winner.n_slices} slice(s)"
            )
        kept.append(winner)
        for other in group[1:]:
            problems.extend(
                other.problems(
                    "not_best_series",
                    f"not selected: study {study_uid} has a better series {winner.series_uid} "
                    f"({_why_better(winner, other, rules)})",
                )
            )
    return kept, problems
