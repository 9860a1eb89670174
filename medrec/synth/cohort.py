"""Generate a synthetic phantom cohort on disk: DICOM series or NIfTI volumes plus label tables.

Layout (``fmt="dicom"``, no quirks)::

    OUT/P0007/S01/SE002/IM0001.dcm ...     one file per slice, InstanceNumber ascending along the normal
    OUT/labels.csv, OUT/ground_truth.csv, OUT/synth.json

``fmt="nifti"``: ``OUT/P0007/<study_uid>.nii.gz``. ``quirks=True`` (DICOM) writes what scanner exports
look like instead (see ``datasets/synthetic_phantoms.md`` for exactly what each quirk produces)::

    OUT/DICOM/<6 hex>/<7 digits>           no extension, opaque folders, shuffled file numbers
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medrec import __version__
from medrec.atomicio import write_csv, write_text
from medrec.errors import ConfigError, OutputError
from medrec.synth.dicom_writer import SeriesSpec, series_uid, write_series
from medrec.synth.nifti_writer import write_nifti
from medrec.synth.plan import Identity, StudyPlan, plan_cohort, stable_int, validate_format, validate_kind
from medrec.synth.render import (
    RenderedStudy,
    body_to_lps,
    lesion_index,
    render_lesion_mask,
    render_study,
    store,
)

LABEL_COLUMNS: tuple[str, ...] = ("patient_id", "study_uid", "accession", "label", "lesion_type", "path")
GROUND_TRUTH_COLUMNS: tuple[str, ...] = (
    "patient_id", "study_uid", "series_uid", "lesion_index", "center_x", "center_y", "center_z",
    "diameter_mm", "lesion_type", "contrast", "center_i", "center_j", "center_k",
)
MAIN_SERIES_NUMBER = {"ct-lesion": 2, "mri-tumor": 2, "xr-nodule": 1}


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


def _instance_numbers(plan: StudyPlan, n: int, salt: str) -> list[int]:
    if plan.series_order == "descending":
        return list(range(n, 0, -1))
    if plan.series_order == "permuted" and n >= 3:
        rng = np.random.default_rng(stable_int("order", plan.render_seed, salt))
        order = [int(x) + 1 for x in rng.permutation(n)]
        if order == sorted(order) or order == sorted(order, reverse=True):
            order[0], order[1] = order[1], order[0]
        return order
    return list(range(1, n + 1))


def _descriptions(plan: StudyPlan) -> dict[str, str]:
    scanner = plan.scanner
    t = f"{plan.slice_thickness:g}"
    t2 = f"{2 * plan.slice_thickness:g}"
    if plan.kind == "ct-lesion":
        return {"main": f"ABD PV {t}mm {scanner.kernel}", "recon": f"ABD PV {t2}mm {scanner.extra['sharp_kernel']}",
                "localizer": "Topogram 0.6 T20s"}
    if plan.kind == "mri-tumor":
        return {"main": f"T1 AX POST GD {t}mm", "recon": f"T1 AX POST GD {t2}mm MPR", "localizer": "localizer"}
    return {"main": "CHEST PA", "derived": "CHEST PA KEY IMAGE"}


def _localizer_specs(plan: StudyPlan, rendered: RenderedStudy, series_number: int, count: int) -> list[SeriesSpec]:
    """Coronal / sagittal reformats through the main volume, one instance each (a scout series)."""
    stored, affine = rendered.stored, rendered.affine_lps
    nx, ny, nz = stored.shape
    specs = []
    planes = [("coronal", ny // 2), ("sagittal", nx // 2), ("coronal", ny // 3)][:count]
    for number, (orientation, position) in enumerate(planes):
        if orientation == "coronal":
            image = stored[:, position, ::-1]
            local = np.eye(4)
            local[:3, 0] = affine[:3, 0]
            local[:3, 1] = -affine[:3, 2]
            local[:3, 3] = affine[:3, :3] @ np.array([0, position, nz - 1]) + affine[:3, 3]
            thickness = float(np.linalg.norm(affine[:3, 1]))
        else:
            image = stored[position, :, ::-1]
            local = np.eye(4)
            local[:3, 0] = affine[:3, 1]
            local[:3, 1] = -affine[:3, 2]
            local[:3, 3] = affine[:3, :3] @ np.array([position, 0, nz - 1]) + affine[:3, 3]
            thickness = float(np.linalg.norm(affine[:3, 0]))
        normal = np.cross(local[:3, 0], local[:3, 1])
        local[:3, 2] = normal / np.linalg.norm(normal) * thickness
        specs.append(SeriesSpec(
            series_number=series_number, description=_descriptions(plan)["localizer"],
            image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), stored=image[:, :, None], affine_lps=local,
            slice_thickness=thickness, instance_numbers=[number + 1], uid_offset=number, localizer=True,
        ))
    return specs


def _recon_spec(plan: StudyPlan, rendered: RenderedStudy, series_number: int) -> SeriesSpec:
    """A second axial reconstruction: slices twice as thick (pairs averaged), sharper kernel label."""
    image = rendered.modality_image
    pairs = image.shape[2] // 2
    thick = (image[:, :, 0 : 2 * pairs : 2] + image[:, :, 1 : 2 * pairs : 2]) / 2.0
    stored, _ = store(plan.scanner, plan.phantom.modality, thick)
    affine = rendered.affine_lps.copy()
    affine[:3, 3] = affine[:3, 3] + 0.5 * affine[:3, 2]
    affine[:3, 2] = 2.0 * affine[:3, 2]
    kernel = plan.scanner.extra.get("sharp_kernel", plan.scanner.kernel)
    return SeriesSpec(
        series_number=series_number, description=_descriptions(plan)["recon"],
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"), stored=stored, affine_lps=affine,
        slice_thickness=2.0 * plan.slice_thickness, instance_numbers=_instance_numbers(plan, pairs, "recon"),
        kernel=kernel,
    )


def _derived_spec(plan: StudyPlan, rendered: RenderedStudy, series_number: int) -> SeriesSpec:
    """A half-resolution DERIVED\\SECONDARY copy of a radiograph (a key image)."""
    stored = rendered.stored
    nx, ny = (stored.shape[0] // 2) * 2, (stored.shape[1] // 2) * 2
    small = stored[:nx, :ny].reshape(nx // 2, 2, ny // 2, 2).mean(axis=(1, 3))
    affine = rendered.affine_lps.copy()
    affine[:3, :2] *= 2.0
    affine[:3, 3] += 0.5 * (rendered.affine_lps[:3, 0] + rendered.affine_lps[:3, 1])
    return SeriesSpec(
        series_number=series_number, description=_descriptions(plan)["derived"],
        image_type=("DERIVED", "SECONDARY"), stored=np.rint(small).astype(np.int32), affine_lps=affine,
        slice_thickness=0.0,
    )


def _main_spec(plan: StudyPlan, rendered: RenderedStudy, quirks: bool) -> SeriesSpec:
    n = 1 if plan.phantom.dims == 2 else plan.n_slices
    return SeriesSpec(
        series_number=MAIN_SERIES_NUMBER[plan.kind],
        description=_descriptions(plan)["main"],
        image_type=("ORIGINAL", "PRIMARY") if plan.phantom.dims == 2 else ("ORIGINAL", "PRIMARY", "AXIAL"),
        stored=rendered.stored,
        affine_lps=rendered.affine_lps,
        slice_thickness=plan.slice_thickness,
        instance_numbers=_instance_numbers(plan, n, "main") if quirks else None,
    )


def _write_dicom_study(
    plan: StudyPlan, rendered: RenderedStudy, out_dir: Path, quirks: bool, used: set[str]
) -> tuple[list[Path], Path, int]:
    """Write the study's series; returns (main series files sorted along the normal, main folder, files written)."""
    main = _main_spec(plan, rendered, quirks)
    if not quirks:
        folder = out_dir / plan.patient_key / plan.study_key / f"SE{main.series_number:03d}"
        paths = [folder / f"IM{k + 1:04d}.dcm" for k in range(main.n_slices)]
        write_series(plan, main, paths)
        return paths, folder, len(paths)

    groups: list[list[SeriesSpec]]
    if plan.phantom.dims == 2:
        groups = [[main, _derived_spec(plan, rendered, main.series_number + 1)]]
    else:
        localizers = _localizer_specs(plan, rendered, 1, 2 if plan.kind == "ct-lesion" else 3)
        if plan.second_recon:
            groups = [[main, _recon_spec(plan, rendered, 3)], localizers]
        else:
            groups = [[main, *localizers]]
    main_paths: list[Path] = []
    main_folder = out_dir
    written = 0
    for number, group in enumerate(groups):
        salt = 0
        while True:
            key = stable_int("folder", plan.kind, plan.seed, plan.patient_index, plan.study_index, number, salt)
            name = f"{key & 0xFFFFFF:06X}"
            if name not in used:
                break
            salt += 1
        used.add(name)
        folder = out_dir / "DICOM" / name
        total = sum(spec.n_slices for spec in group)
        rng = np.random.default_rng(stable_int("files", plan.render_seed, number))
        start = int(rng.integers(1, 900))
        shuffled = rng.permutation(total)
        cursor = 0
        for spec in group:
            paths = [folder / f"{start + int(shuffled[cursor + k]):07d}" for k in range(spec.n_slices)]
            cursor += spec.n_slices
            write_series(plan, spec, paths)
            written += len(paths)
            if spec is main:
                main_paths, main_folder = paths, folder
    return main_paths, main_folder, written


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder; choose a folder for the cohort")
    if not overwrite and (out_dir / "labels.csv").exists():
        raise OutputError(
            f"{out_dir}: already holds a cohort (labels.csv); choose an empty folder or pass overwrite=True "
            "(--overwrite)"
        )


def generate_cohort(
    out_dir: str | os.PathLike[str],
    kind: str = "ct-lesion",
    patients: int = 40,
    fmt: str = "dicom",
    seed: int = 0,
    quirks: bool = False,
    prevalence: float = 0.5,
    lesion_diameter_mm: tuple[float, float] | None = None,
    contrast: tuple[float, float] | None = None,
    noise: float = 1.0,
    image_size: int | None = None,
    slice_thickness: float | None = None,
    follow_up_fraction: float = 0.2,
    return_volumes: bool = False,
    identity: Identity | Mapping[str, Any] | None = None,
    masks: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> SynthCohort:
    """Write a synthetic phantom cohort with ``labels.csv`` and ``ground_truth.csv``.

    Args:
        out_dir: output folder (created; refused if it already holds a ``labels.csv`` unless ``overwrite``).
        kind: ``ct-lesion`` (abdominal CT, liver lesions), ``mri-tumor`` (brain MR, tumor with
            enhancing rim, necrotic core and edema) or ``xr-nodule`` (PA chest radiograph, lung nodule).
        patients: number of patients (>= 1).
        fmt: ``dicom`` (one file per slice) or ``nifti`` (one .nii.gz per study).
        seed: fixes everything; the same seed writes byte-identical files.
        quirks: DICOM only: localizer series, opaque extension-less file names, shuffled and
            non-monotonic instance numbers, two series in one folder.
        prevalence: fraction of positive patients (exactly ``round(prevalence * patients)``).
        lesion_diameter_mm: (lo, hi) diameter range; default per kind (CT 18-40, MR 12-36, XR 10-30).
        contrast: (lo, hi) lesion contrast magnitude; CT in HU (default 10-60), MR rim enhancement
            relative to white matter (0.06-0.5), XR attenuation relative to lung / soft tissue (0.12-0.4).
        noise: multiplier of each scanner's noise level (0 disables noise).
        image_size: in-plane matrix (default 128 for CT / MR, 256 for XR); the field of view is fixed
            per scanner, so a smaller matrix means larger pixels.
        slice_thickness: mm, replaces the scanners' own (CT 3.75-5, MR 4-5); the slab covers 180 mm
            (CT) or 150 mm (MR) whatever the thickness.
        follow_up_fraction: fraction of patients with a second, later study (same label).
        return_volumes: keep each main series' real-world volume in ``SynthStudy.volume``.
        identity: :class:`~medrec.synth.plan.Identity` or a dict overriding PatientName / PatientID /
            birth date / InstitutionName patterns.
        masks: also write each positive study's lesion mask (``masks/<patient>/<study_uid>.nii.gz``,
            uint8 on the main series' grid, in its world geometry) and add a ``mask`` column to
            ``labels.csv`` (relative path; empty for studies without lesions).
        overwrite: write into a folder that already holds a cohort (files with the same names are replaced).
        progress: show a progress bar on the console.

    Returns:
        The :class:`SynthCohort` (paths of the label tables and one :class:`SynthStudy` per study).

    Raises:
        ConfigError: a parameter is out of range (the message names it and the valid values).
        OutputError: the folder cannot be written or already holds a cohort.
    """
    kind = validate_kind(kind)
    fmt = validate_format(fmt)
    if quirks and fmt != "dicom":
        raise ConfigError("quirks: DICOM only (real-export oddities); drop --quirks or use --format dicom")
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    plans = plan_cohort(
        kind=kind, patients=patients, seed=seed, prevalence=prevalence, lesion_diameter_mm=lesion_diameter_mm,
        contrast=contrast, noise=noise, image_size=image_size, slice_thickness=slice_thickness,
        follow_up_fraction=follow_up_fraction, identity=identity,
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot create the output folder ({e.strerror})") from e

    studies: list[SynthStudy] = []
    used_folders: set[str] = set()
    files_written = 0
    bytes_written = 0

    def write_one(plan: StudyPlan) -> None:
        nonlocal files_written
        rendered = render_study(plan)
        if fmt == "dicom":
            files, folder, count = _write_dicom_study(plan, rendered, out, quirks, used_folders)
            main_path = folder
        else:
            # a StudyInstanceUID is digits and dots only: safe as a file name
            main_path = out / plan.patient_key / f"{plan.study_uid}.nii.gz"
            files = [write_nifti(main_path, rendered.volume, rendered.affine_lps)]
            count = 1
        files_written += count
        record = _study_record(plan, rendered, files, main_path, return_volumes)
        if masks and plan.lesions:
            record.mask_path = write_nifti(out / "masks" / plan.patient_key / f"{plan.study_uid}.nii.gz",
                                           render_lesion_mask(plan), rendered.affine_lps)
        studies.append(record)

    if progress:
        from medrec.console import progress as progress_bar

        with progress_bar() as bar:
            task = bar.add_task(f"Writing {kind}", total=len(plans), status="")
            for plan in plans:
                bar.update(task, status=f"{plan.patient_key}/{plan.study_key}")
                write_one(plan)
                bar.advance(task)
            bar.update(task, status="done")
    else:
        for plan in plans:
            write_one(plan)

    labels_csv = out / "labels.csv"
    ground_truth_csv = out / "ground_truth.csv"
    write_csv(labels_csv, labels_frame(studies, out, with_masks=masks))
    write_csv(ground_truth_csv, ground_truth_frame(studies))
    for root, _dirs, names in os.walk(out):
        for name in names:
            bytes_written += (Path(root) / name).stat().st_size if not name.startswith(".") else 0
    summary = {
        "kind": kind,
        "format": fmt,
        "seed": int(seed),
        "patients": int(patients),
        "studies": len(studies),
        "positive_patients": len({s.patient_id for s in studies if s.label}),
        "positive_studies": sum(s.label for s in studies),
        "lesions": sum(len(s.lesions) for s in studies),
        "masks": sum(s.mask_path is not None for s in studies),
        "manufacturers": dict(sorted(Counter(s.manufacturer for s in studies).items())),
        "files_written": files_written,
        "bytes_on_disk": bytes_written,
    }
    settings = {
        "generator": f"medrec {__version__}",
        "kind": kind, "format": fmt, "seed": int(seed), "patients": int(patients), "quirks": bool(quirks),
        "prevalence": prevalence, "follow_up_fraction": follow_up_fraction, "noise": noise,
        "lesion_diameter_mm": list(lesion_diameter_mm) if lesion_diameter_mm is not None else None,
        "contrast": list(contrast) if contrast is not None else None,
        "image_size": image_size, "slice_thickness": slice_thickness, "masks": bool(masks),
    }
    write_text(out / "synth.json", json.dumps({"settings": settings, "summary": summary}, indent=2) + "\n")
    return SynthCohort(out_dir=out, labels_csv=labels_csv, ground_truth_csv=ground_truth_csv, studies=studies,
                       kind=kind, fmt=fmt, seed=int(seed), summary=summary)


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
