"""Generate a synthetic phantom cohort on disk: DICOM series or NIfTI volumes plus label tables.

Layout (``fmt="dicom"``, no quirks)::

    OUT/P0007/S01/SE002/IM0001.dcm ...     one file per slice, InstanceNumber ascending along the normal
    OUT/labels.csv, OUT/ground_truth.csv, OUT/synth.json

``fmt="nifti"``: ``OUT/P0007/<study_uid>.nii.gz``. ``quirks=True`` (DICOM) writes what scanner exports
look like instead (see ``datasets/synthetic_phantoms.md`` for exactly what each quirk produces)::

    OUT/DICOM/<6 hex>/<7 digits>           no extension, opaque folders, shuffled file numbers

The series a DICOM study holds are chosen in :mod:`medrec.synth.dicom_study`; the records and label tables
returned and written are defined in :mod:`medrec.synth.records`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medrec import __version__
from medrec.atomicio import write_csv, write_text
from medrec.errors import ConfigError, OutputError
from medrec.synth.dicom_study import _write_dicom_study
from medrec.synth.nifti_writer import write_nifti
from medrec.synth.plan import Identity, StudyPlan, plan_cohort, validate_format, validate_kind
from medrec.synth.records import SynthCohort, SynthStudy, _study_record, ground_truth_frame, labels_frame
from medrec.synth.render import render_lesion_mask, render_study


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
