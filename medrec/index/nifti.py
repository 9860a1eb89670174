"""NIfTI files: one sample per file, with header sanity checks.

Decisions (documented in ``medrec index --help`` and the index package docstring):

* pixdim of a used axis zero, negative or not finite -> excluded.
* more than one volume along dim 4 (time series, multi-channel) -> excluded.
* qform and sform both set and disagreeing by more than 1e-3 mm/units -> warning (nibabel, and medrec's
  loader, use the sform); neither set -> warning (orientation unknown, pixdim-only affine).
* scl_slope 0 or NaN means "unscaled" in NIfTI-1 (nibabel writes NaN by default), so it is not an
  error on its own; it is excluded when scl_inter is set at the same time (the intended scaling is
  ambiguous), and an infinite scl_slope / scl_inter is excluded.
* a shape whose float32 voxels exceed the memory budget (``MEDREC_MAX_BYTES``, the loader's) -> excluded
  before anything is read; an uncompressed file shorter than its header's data size -> excluded (truncated).
* NaN / inf voxels -> excluded. Finding them needs the data; only floating-point files are read
  (integer voxels cannot be NaN), and ``check_values=False`` skips it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medrec.budget import MAX_BYTES_ENV, format_bytes, resolve_max_bytes
from medrec.index.problems import FileProblem

AFFINE_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True)
class NiftiSample:
    """One usable NIfTI file and its geometry (vol[i, j, k] axes = NIfTI axes 0, 1, 2)."""

    path: str
    relative_path: str
    patient_id: str
    study_uid: str
    modality: str
    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    orientation: str
    manufacturer: str = ""
    sex: str = ""
    age: float | None = None
    series_description: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)


def nifti_stem(path: str | os.PathLike[str]) -> str:
    """File name without .nii / .nii.gz."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def relative_to_root(path: str, scans_root: str) -> str:
    """Path relative to the scan root (POSIX separators); the absolute path when outside it."""
    if scans_root:
        try:
            return Path(path).absolute().relative_to(Path(scans_root).absolute()).as_posix()
        except ValueError:
            pass
    return Path(path).absolute().as_posix()


def path_hash(relative_path: str) -> str:
    """sha1 hex digest of a relative path: the stable identity of a NIfTI sample."""
    return hashlib.sha1(relative_path.encode("utf-8")).hexdigest()


def inspect_nifti(path: str, scans_root: str = "", check_values: bool = True) -> NiftiSample | FileProblem:
    """Read a NIfTI header (and, for float data, the voxels) and check it.

    Args:
        path: a .nii or .nii.gz file.
        scans_root: the indexed folder; identifiers are derived from the path relative to it.
        check_values: scan floating-point voxels for NaN / inf.

    Returns:
        A :class:`NiftiSample`, or a :class:`FileProblem` saying why the file is excluded.
    """
    import nibabel as nib

    try:
        # the header as stored: nib.load would silently "fix" zero pixdim and similar faults
        header = _raw_header(path)
        shape = tuple(int(n) for n in header.get_data_shape())
    except Exception as e:  # noqa: BLE001 - any nibabel failure on a user file becomes a qc row
        return _unreadable(path, e)

    file_warnings: list[str] = []
    if len(shape) < 2:
        return FileProblem(path, "nifti_geometry", f"NIfTI has {len(shape)} dimension(s); need a 2D image or 3D volume")
    if min(shape) <= 0:
        return FileProblem(path, "nifti_geometry", f"NIfTI header shape {shape} has an empty or negative axis")
    extra_volumes = math.prod(shape[3:])  # exact: np.prod wraps around on a header claiming huge axes
    if extra_volumes > 1:
        return FileProblem(
            path,
            "nifti_geometry",
            f"NIfTI holds {extra_volumes} volumes (shape {shape}); medrec expects one 2D/3D image per file: "
            "split it (e.g. with nibabel.four_to_three)",
        )
    spatial = shape[:3]
    pixdim = [float(v) for v in header["pixdim"][1 : 1 + len(spatial)]]
    bad = [(axis, value) for axis, value in enumerate(pixdim, start=1) if not math.isfinite(value) or value <= 0]
    if bad:
        listed = ", ".join(f"pixdim[{axis}]={value:g}" for axis, value in bad)
        return FileProblem(path, "nifti_pixdim", f"NIfTI voxel size invalid: {listed} (must be > 0); fix the header")

    slope = float(header["scl_slope"])
    intercept = float(header["scl_inter"])
    if math.isinf(slope) or math.isinf(intercept):
        return FileProblem(path, "nifti_scaling",
                           f"NIfTI scaling invalid: scl_slope={slope:g}, scl_inter={intercept:g}")
    if (slope == 0 or math.isnan(slope)) and math.isfinite(intercept) and intercept != 0:
        return FileProblem(
            path,
            "nifti_scaling",
            f"NIfTI scaling ambiguous: scl_slope={slope:g} (means unscaled) but scl_inter={intercept:g}; "
            "set scl_slope to 1 to apply the intercept or scl_inter to 0",
        )

    # the header alone decides these two, before nibabel maps or reads a single voxel
    claimed = math.prod(spatial) * 4
    max_bytes = resolve_max_bytes()
    if claimed > max_bytes:
        return FileProblem(
            path,
            "over_budget",
            f"NIfTI header claims shape {shape}: {format_bytes(claimed)} of float32 voxels, over the memory budget "
            f"of {format_bytes(max_bytes)}; if the file is genuine, raise {MAX_BYTES_ENV}",
        )
    try:
        item_size, data_offset = header.get_data_dtype().itemsize, int(header.get_data_offset())
    except Exception:  # noqa: BLE001 - unknown datatype code or non-finite vox_offset: nib.load below names it
        item_size = data_offset = 0
    if item_size and not path.lower().endswith(".gz"):
        needed = data_offset + math.prod(spatial) * item_size
        size = os.path.getsize(path)
        if size < needed:
            return FileProblem(
                path,
                "truncated",
                f"truncated: NIfTI header (shape {shape}, {item_size}-byte voxels from byte {data_offset}) needs "
                f"{needed} bytes but the file holds {size}",
            )

    try:
        image = nib.load(path)
    except Exception as e:  # noqa: BLE001
        return _unreadable(path, e)
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    if sform_code and qform_code:
        difference = float(np.max(np.abs(np.asarray(sform) - np.asarray(qform))))
        if difference > AFFINE_TOLERANCE:
            file_warnings.append(f"qform and sform disagree (max difference {difference:.3g}); sform used")
    elif not sform_code and not qform_code:
        file_warnings.append("no qform/sform: orientation unknown (pixdim-only affine)")

    if check_values and np.issubdtype(header.get_data_dtype(), np.floating):
        data = np.asanyarray(image.dataobj)
        n_nan = int(np.isnan(data).sum())
        n_inf = int(np.isinf(data).sum())
        if n_nan or n_inf:
            return FileProblem(
                path,
                "nifti_values",
                f"NIfTI data has {n_nan} NaN and {n_inf} inf voxel(s) of {data.size}; clean or mask them first",
            )

    relative = relative_to_root(path, scans_root)
    digest = path_hash(relative)
    parent = Path(relative).parent
    # a file straight in the scan root has no patient folder: its own name is the best identity
    patient_id = parent.name if parent.name and str(parent) != "." else nifti_stem(path)
    sidecar = _read_sidecar(path)
    while len(spatial) < 3:
        spatial = (*spatial, 1)
    spacing = (pixdim[0], pixdim[1], pixdim[2] if len(pixdim) > 2 else 1.0)
    return NiftiSample(
        path=str(Path(path).absolute()),
        relative_path=relative,
        patient_id=patient_id,
        study_uid=f"nifti-{digest[:20]}",
        modality=str(sidecar.get("Modality", "")).upper(),
        shape=tuple(spatial),
        spacing=spacing,
        orientation=_orientation_from_affine(image.affine, len(shape)),
        manufacturer=str(sidecar.get("Manufacturer", "")),
        sex=str(sidecar.get("PatientSex", "")).upper(),
        series_description=str(sidecar.get("SeriesDescription", "")),
        warnings=tuple(file_warnings),
    )


def _unreadable(path: str, error: Exception) -> FileProblem:
    """The qc row of a file nibabel cannot read: the error's type and first 160 characters, on one line."""
    message = " ".join(str(error).split())[:160]
    return FileProblem(path, "nifti_unreadable", f"NIfTI unreadable: {type(error).__name__}: {message}")


def _raw_header(path: str):  # Nifti1Header | Nifti2Header
    """The NIfTI-1 or NIfTI-2 header exactly as stored (no automatic fixes)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    with ImageOpener(path) as handle:
        first = handle.read(4)
        handle.seek(0)
        sizes = {int.from_bytes(first, "little"), int.from_bytes(first, "big")}
        header_class = nib.Nifti2Header if 540 in sizes else nib.Nifti1Header
        if not sizes & {348, 540}:
            raise ValueError(f"sizeof_hdr is {min(sizes)}, not 348 (NIfTI-1) or 540 (NIfTI-2)")
        return header_class.from_fileobj(handle, check=False)


def _read_sidecar(path: str) -> dict:
    """BIDS-style JSON sidecar beside the image (Modality, Manufacturer, ...), or {}."""
    sidecar = Path(path).with_name(nifti_stem(path) + ".json")
    if not sidecar.is_file() or sidecar.stat().st_size > 1_000_000:
        return {}
    try:
        content = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return content if isinstance(content, dict) else {}


def _orientation_from_affine(affine: np.ndarray, ndim: int) -> str:
    """Plane of the slices: the direction of voxel axis 2 (RAS), or of the image normal for 2D."""
    if ndim < 3:
        return ""
    direction = np.asarray(affine, dtype=float)[:3, 2]
    norm = float(np.linalg.norm(direction))
    if norm == 0 or not math.isfinite(norm):
        return ""
    return plane_of_normal(direction / norm)


def plane_of_normal(normal: np.ndarray) -> str:
    """axial / coronal / sagittal when one patient axis dominates the slice normal, else oblique."""
    components = np.abs(np.asarray(normal, dtype=float))
    axis = int(np.argmax(components))
    if components[axis] < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]
