"""The series of one synthetic DICOM study and where their files go.

Without quirks: the main series alone, ``OUT/P0007/S01/SE002/IM0001.dcm ...``. With quirks, what scanner
exports look like: localizers (coronal / sagittal reformats), a second thicker reconstruction or a derived
key image, shuffled or non-monotonic instance numbers, two series in one opaque folder
(``OUT/DICOM/<6 hex>/<7 digits>``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medrec.synth.dicom_writer import SeriesSpec, write_series
from medrec.synth.plan import StudyPlan, stable_int
from medrec.synth.render import RenderedStudy, store

MAIN_SERIES_NUMBER = {"ct-lesion": 2, "mri-tumor": 2, "xr-nodule": 1}


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
