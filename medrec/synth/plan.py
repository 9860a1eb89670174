"""The cohort plan: every random decision about a synthetic cohort, drawn before any pixel exists.

Sampling is separated from rendering so that cohort statistics (prevalence, follow-ups, scanners,
lesion sizes) can be checked cheaply and so that each study renders deterministically from its
plan alone. All identifiers and dates derive from the seed (no clock, no global state).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.uid import generate_uid

from medrec.errors import ConfigError
from medrec.synth.anatomy import PHANTOMS, Anatomy, Phantom
from medrec.synth.lesions import Lesion
from medrec.synth.scanners import SCANNERS, ScannerProfile
from medrec.synth.shapes import rotation_matrix

KINDS: tuple[str, ...] = tuple(PHANTOMS)
FORMATS: tuple[str, ...] = ("dicom", "nifti")
_EPOCH = dt.date(2016, 1, 4)


@dataclass(frozen=True)
class Identity:
    """Patterns for the identifying header values (override them for PHI canary tests).

    Each pattern is a :meth:`str.format` template that receives ``index`` (1-based patient number)
    and ``patient_key`` (``P0007``). ``birth_date`` (``YYYYMMDD``) replaces the sampled birth date
    of every patient (ages then follow from it); ``institution_name`` replaces every scanner's site.
    """

    patient_name: str = "PHANTOM^{patient_key}"
    patient_id: str = "{patient_key}"
    birth_date: str | None = None
    institution_name: str | None = None

    @classmethod
    def coerce(cls, identity: Identity | Mapping[str, Any] | None) -> Identity:
        if identity is None:
            return cls()
        if isinstance(identity, Identity):
            return identity
        unknown = sorted(set(identity) - {"patient_name", "patient_id", "birth_date", "institution_name"})
        if unknown:
            raise ConfigError(
                f"identity: unknown key(s) {unknown}; use patient_name, patient_id, birth_date, institution_name"
            )
        merged = cls(**{k: v for k, v in identity.items() if v is not None})
        if merged.birth_date is not None:
            _parse_date(merged.birth_date, "identity.birth_date")
        return merged


@dataclass(frozen=True)
class StudyPlan:
    """Everything needed to render and write one study."""

    kind: str
    seed: int
    patient_index: int  # 1-based
    patient_key: str  # pseudonymous folder name, P0007
    study_index: int  # 0 baseline, 1 follow-up
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    age: int
    study_date: str
    study_time: str
    study_uid: str
    accession: str
    scanner: ScannerProfile
    institution: str
    label: int
    lesion_type: str
    lesions: tuple[Lesion, ...]
    anatomy: Anatomy = field(repr=False, compare=False)
    pose_rotation: np.ndarray = field(repr=False, compare=False)
    pose_translation: np.ndarray = field(repr=False, compare=False)
    image_size: int = 128
    pixel_spacing: float = 1.0
    slice_thickness: float = 0.0
    n_slices: int = 1
    origin: tuple[float, ...] = ()
    noise_sigma: float = 0.0
    render_seed: int = 0
    series_order: str = "ascending"  # quirks: ascending | descending | permuted instance numbers
    second_recon: bool = False  # quirks: a thicker axial reconstruction in the main folder

    @property
    def phantom(self) -> Phantom:
        return PHANTOMS[self.kind]

    @property
    def study_key(self) -> str:
        return f"S{self.study_index + 1:02d}"


def _one_of(value: str, choices: tuple[str, ...], key: str, what: str) -> str:
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.0)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{key}: unknown {what} {value!r}, expected one of {', '.join(choices)}{hint}")


def validate_kind(kind: str) -> str:
    """Return ``kind`` if it is a phantom kind, else raise naming the nearest valid one."""
    return _one_of(kind, KINDS, "kind", "phantom kind")


def validate_format(fmt: str) -> str:
    """Return ``fmt`` if it is an output format, else raise naming the nearest valid one."""
    return _one_of(fmt, FORMATS, "format", "output format")


def stable_int(*parts: object) -> int:
    """A 63-bit integer hash of ``parts`` (stable across runs and platforms)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_uid(*parts: object) -> str:
    """A valid DICOM UID derived deterministically from ``parts``."""
    return str(generate_uid(entropy_srcs=["medrec-synth", *[str(p) for p in parts]]))


def _parse_date(text: str, what: str) -> dt.date:
    if not re.fullmatch(r"\d{8}", text or ""):
        raise ConfigError(f"{what}: expected a date YYYYMMDD, got {text!r}")
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError as e:
        raise ConfigError(f"{what}: {text!r} is not a calendar date ({e})") from e


def _fill(pattern: str, fields: dict[str, object], what: str) -> str:
    try:
        return pattern.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"{what}: pattern {pattern!r} is not a valid template ({e}); use {{index}} / {{patient_key}}") from e


def age_on(birth: dt.date, day: dt.date) -> int:
    """Completed years between ``birth`` and ``day``."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def _pick(rng: np.random.Generator, scanners: tuple[ScannerProfile, ...]) -> ScannerProfile:
    weights = np.array([s.weight for s in scanners], dtype=float)
    return scanners[int(rng.choice(len(scanners), p=weights / weights.sum()))]


def _check_range(
    name: str, value: tuple[float, float] | None, default: tuple[float, float], positive: bool
) -> tuple[float, float]:
    if value is None:
        return default
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: expected two numbers LO,HI, got {value!r}") from e
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or (positive and lo <= 0):
        raise ConfigError(f"{name}: expected {'0 < ' if positive else ''}LO <= HI, got {lo:g},{hi:g}")
    return lo, hi


def plan_cohort(
    kind: str = "ct-lesion",
    patients: int = 40,
    seed: int = 0,
    prevalence: float = 0.5,
    lesion_diameter_mm: tuple[float, float] | None = None,
    contrast: tuple[float, float] | None = None,
    noise: float = 1.0,
    image_size: int | None = None,
    slice_thickness: float | None = None,
    follow_up_fraction: float = 0.2,
    identity: Identity | Mapping[str, Any] | None = None,
) -> list[StudyPlan]:
    """Draw every random decision of a cohort (no pixels): patients, studies, scanners, lesions.

    Exactly ``round(prevalence * patients)`` patients are positive and ``round(follow_up_fraction *
    patients)`` have a follow-up study (same label and lesion type; lesions regrown by 0.85-1.3x).
    Arguments are those of :func:`medrec.synth.generate_cohort`.

    Returns:
        One :class:`StudyPlan` per study, patients in order, baseline before follow-up.

    Raises:
        ConfigError: a value is out of range (the message names it and the allowed range).
    """
    phantom = PHANTOMS[validate_kind(kind)]
    if isinstance(patients, bool) or not isinstance(patients, int | np.integer) or patients < 1:
        raise ConfigError(f"patients: expected a whole number >= 1, got {patients!r}")
    for name, value in (("prevalence", prevalence), ("follow_up_fraction", follow_up_fraction)):
        if not (isinstance(value, int | float) and 0.0 <= float(value) <= 1.0):
            raise ConfigError(f"{name}: expected a fraction between 0 and 1, got {value!r}")
    if not (isinstance(noise, int | float) and math.isfinite(noise) and noise >= 0.0):
        raise ConfigError(f"noise: expected a multiplier >= 0, got {noise!r}")
    size = phantom.default_image_size if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 16 <= size <= 1024:
        raise ConfigError(f"image_size: expected a whole number between 16 and 1024, got {image_size!r}")
    if slice_thickness is not None and not (
        isinstance(slice_thickness, int | float) and 0.5 <= slice_thickness <= 20.0
    ):
        raise ConfigError(f"slice_thickness: expected mm between 0.5 and 20, got {slice_thickness!r}")
    diameters = _check_range("lesion_diameter_mm", lesion_diameter_mm, phantom.default_diameter_mm, positive=True)
    contrasts = _check_range("contrast", contrast, phantom.default_contrast, positive=False)
    people = Identity.coerce(identity)

    rng = np.random.default_rng([stable_int("cohort", kind), int(seed) & 0xFFFFFFFF, int(seed) >> 32])
    n_positive = int(round(prevalence * patients))
    n_follow = int(round(follow_up_fraction * patients))
    positive = np.zeros(patients, dtype=bool)
    positive[rng.permutation(patients)[:n_positive]] = True
    follow = np.zeros(patients, dtype=bool)
    follow[rng.permutation(patients)[:n_follow]] = True

    plans: list[StudyPlan] = []
    seen_ids: set[str] = set()
    study_counter = 0
    for p in range(patients):
        index = p + 1
        key = f"P{index:04d}"
        prng = np.random.default_rng([stable_int("patient", kind, seed, index)])
        sex = "M" if prng.random() < 0.5 else "F"
        scanner = _pick(prng, SCANNERS[kind])
        anatomy = phantom.sample_anatomy(prng, sex)
        label = int(positive[p])
        lesion_type = "none"
        lesions: tuple[Lesion, ...] = ()
        if label:
            lesion_type = phantom.lesion_types[int(prng.integers(len(phantom.lesion_types)))]
            count = int(prng.integers(1, phantom.max_lesions + 1))
            lesions = phantom.sample_lesions(prng, anatomy, count, diameters, contrasts, lesion_type)
            if not lesions:
                raise ConfigError(
                    f"lesion_diameter_mm: no {lesion_type} lesion of {diameters[0]:g}-{diameters[1]:g} mm fits the "
                    f"{kind} organ of patient {key}; use smaller diameters"
                )
        first_day = _EPOCH + dt.timedelta(days=int(prng.integers(0, 6 * 365)))
        if people.birth_date is not None:
            birth = _parse_date(people.birth_date, "identity.birth_date")
        else:
            birth = first_day - dt.timedelta(days=int(prng.integers(25 * 365, 88 * 365)))
        fields = {"index": index, "patient_key": key}
        patient_id = _fill(people.patient_id, fields, "identity.patient_id")
        if patient_id in seen_ids:
            raise ConfigError(
                f"identity.patient_id: pattern {people.patient_id!r} gives duplicate id; include {{index}}")
        seen_ids.add(patient_id)
        patient_name = _fill(people.patient_name, fields, "identity.patient_name")
        n_studies = 2 if follow[p] else 1
        day = first_day
        for s in range(n_studies):
            if s:
                day = day + dt.timedelta(days=int(prng.integers(60, 500)))
            srng = np.random.default_rng([stable_int("study", kind, seed, index, s)])
            study_lesions = lesions if s == 0 else tuple(
                lesion.scaled(float(prng.uniform(0.85, 1.3))) for lesion in lesions)
            plans.append(
                _study_plan(phantom, srng, seed, index, key, s, patient_id, patient_name, birth, sex, day, scanner,
                            people, label, lesion_type, study_lesions, anatomy, size, slice_thickness, noise,
                            study_counter)
            )
            study_counter += 1
    return plans


def _study_plan(
    phantom: Phantom, rng: np.random.Generator, seed: int, index: int, key: str, s: int, patient_id: str,
    patient_name: str, birth: dt.date, sex: str, day: dt.date, scanner: ScannerProfile, people: Identity,
    label: int, lesion_type: str, lesions: tuple[Lesion, ...], anatomy: Anatomy, size: int,
    slice_thickness: float | None, noise: float, counter: int,
) -> StudyPlan:
    kind = phantom.kind
    seconds = int(rng.integers(7 * 3600, 19 * 3600))
    study_time = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    spacing = round(scanner.field_of_view_mm / size, 6)
    angles = tuple(float(rng.uniform(-a, a)) for a in phantom.pose_rotation_deg)
    shift = np.array([float(rng.uniform(-d, d)) for d in phantom.pose_shift_mm])
    half_in_plane = round((size - 1) / 2.0 * spacing, 4)
    noise_sigma = scanner.noise * noise
    if phantom.dims == 3:
        thickness = float(slice_thickness if slice_thickness is not None else scanner.slice_thickness_mm)
        thickness = round(thickness, 3)
        n_slices = max(int(round(phantom.coverage_mm / thickness)), 4)
        table_range = (-360.0, -120.0) if kind == "ct-lesion" else (-40.0, 40.0)
        table_z = round(float(rng.uniform(*table_range)) * 2.0) / 2.0
        origin = (-half_in_plane, -half_in_plane, table_z)
        centre_z = table_z + (n_slices - 1) * thickness / 2.0
        translation = np.array([shift[0], shift[1], centre_z + shift[2]])
        # thinner slices are noisier (fewer photons / less averaging per voxel)
        noise_sigma *= math.sqrt(scanner.slice_thickness_mm / thickness)
    else:
        thickness = 0.0
        n_slices = 1
        origin = (-half_in_plane, -half_in_plane)
        translation = shift
    institution = people.institution_name or scanner.institution
    return StudyPlan(
        kind=kind,
        seed=seed,
        patient_index=index,
        patient_key=key,
        study_index=s,
        patient_id=patient_id,
        patient_name=patient_name,
        birth_date=birth.strftime("%Y%m%d"),
        sex=sex,
        age=age_on(birth, day),
        study_date=day.strftime("%Y%m%d"),
        study_time=study_time,
        study_uid=make_uid(kind, seed, index, s, "study"),
        accession=f"A{stable_int('accession', kind, seed, index, s) % 10**9:09d}",
        scanner=scanner,
        institution=institution,
        label=label,
        lesion_type=lesion_type,
        lesions=lesions,
        anatomy=anatomy,
        pose_rotation=rotation_matrix(angles),
        pose_translation=translation,
        image_size=size,
        pixel_spacing=spacing,
        slice_thickness=thickness,
        n_slices=n_slices,
        origin=origin,
        noise_sigma=noise_sigma,
        render_seed=stable_int("render", kind, seed, index, s),
        series_order=("permuted", "descending", "ascending")[counter % 3],
        second_recon=phantom.dims == 3 and counter % 2 == 0,
    )
