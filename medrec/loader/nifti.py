"""Read one NIfTI file into a float32 volume (RAS affine as stored, never reoriented).

nibabel is called directly rather than through ``monai.data.NibabelReader``: the reader gives
the same RAS affine and voxel order (``as_closest_canonical=False`` is its default), but medrec
must look at the header (shape, pixdim, scaling) and refuse what it cannot trust before any voxel
is read, which the reader's read-then-get_data interface does not allow.

Rules: ``scl_slope`` / ``scl_inter`` are applied (in float64, then stored as float32); by the
NIfTI-1 standard a slope of 0 or NaN means "no scaling", which nibabel implements and medrec keeps;
an infinite slope or intercept, a non-finite or singular affine, a zero / negative / non-finite
pixdim of a spatial axis, or NaN / infinite voxels are refused with :class:`NiftiError`.
A trailing axis of length 1 is dropped; a 3D file with one slice is a 2D image ``(I, J)``; a 4D file
with more than one volume is refused (medrec loads one single-channel image per sample).
"""

from __future__ import annotations

import math
import os
import warnings

import nibabel as nib
import numpy as np

from medrec.budget import check_budget
from medrec.errors import MedrecError, NiftiError
from medrec.loader.volume import Volume

_AFFINE_SOURCES = {0: "fallback (pixdim only)", 1: "qform", 2: "sform"}


def _raw_header(path: str, image: nib.Nifti1Image) -> nib.Nifti1Header:
    """The header exactly as stored: nibabel's image header has pixdim 'fixed' and scaling moved away."""
    holder = image.file_map.get("header") or image.file_map.get("image")
    header_file = (holder.filename if holder is not None else None) or path
    try:
        with nib.openers.ImageOpener(header_file) as handle:
            return type(image.header).from_fileobj(handle, check=False)
    except Exception as e:  # nibabel raises many unrelated types for corrupt files
        raise NiftiError(f"{path}: cannot read the NIfTI header ({type(e).__name__}: {e})") from e


def read_nifti(path: str, max_bytes: int) -> Volume:
    """Decode a NIfTI-1/2 file into float32 real-world values with its RAS affine.

    Args:
        path: the ``.nii`` / ``.nii.gz`` file.
        max_bytes: memory budget for the decoded float32 array.

    Returns:
        The decoded :class:`Volume` (``(I, J, K)``, or ``(I, J)`` for a single slice).

    Raises:
        NiftiError: unreadable file, invalid header, non-finite values.
        ResourceBudgetError: the header's shape claims more than ``max_bytes``.
    """
    if not os.path.isfile(path):
        raise NiftiError(f"{path}: NIfTI file listed in the manifest does not exist; re-run 'medrec index'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel warns while "fixing" headers; the raw header is checked below
            image = nib.load(path)
    except Exception as e:  # nibabel raises many unrelated types for corrupt files
        raise NiftiError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(f"{path}: {type(image).__name__} is not a NIfTI-1/2 image")
    header = _raw_header(path, image)
    shape = tuple(int(d) for d in header.get_data_shape())
    if not shape or min(shape) <= 0:
        raise NiftiError(f"{path}: header shape {shape} has an empty axis")
    claimed = math.prod(shape) * 4
    check_budget(path, claimed, max_bytes, f"shape {' x '.join(map(str, shape))} x 4 bytes")

    spatial = list(shape)
    while len(spatial) > 3 and spatial[-1] == 1:
        spatial.pop()
    if len(spatial) > 3:
        raise NiftiError(
            f"{path}: {len(shape)}D image of shape {shape} holds {math.prod(spatial[3:])} volumes; medrec loads "
            f"one 3D volume per sample (split the file, one volume per file)"
        )
    while len(spatial) > 2 and spatial[-1] == 1:
        spatial.pop()
    if len(spatial) < 2:
        raise NiftiError(f"{path}: shape {shape} is not an image (needs at least two axes longer than 1)")

    pixdim = np.asarray(header["pixdim"], dtype=np.float64)[1 : 1 + min(len(shape), 3)]
    if not np.isfinite(pixdim).all() or (pixdim <= 0).any():
        raise NiftiError(
            f"{path}: pixdim {list(pixdim)} of the spatial axes must be finite and positive; fix the header"
        )
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise NiftiError(f"{path}: affine {affine.tolist()} is not finite and invertible")
    slope, inter = (float(v) for v in (header["scl_slope"], header["scl_inter"]))
    if math.isinf(slope) or math.isinf(inter):
        raise NiftiError(f"{path}: scl_slope={slope}, scl_inter={inter}; infinite scaling is refused")
    if slope == 0 or math.isnan(slope):  # NIfTI-1: no scaling
        slope, inter = 1.0, 0.0
    elif math.isnan(inter):
        inter = 0.0
    try:
        stored = np.asanyarray(image.dataobj.get_unscaled())
    except MedrecError:
        raise
    except Exception as e:
        raise NiftiError(f"{path}: cannot read the voxel data ({type(e).__name__}: {e})") from e
    if stored.dtype.names is not None or stored.dtype.kind not in "biuf":
        raise NiftiError(f"{path}: voxel type {stored.dtype} is not a single real-valued channel")
    if stored.size * 4 != claimed:
        raise NiftiError(f"{path}: read {stored.size} voxels, header shape {shape} says {claimed // 4}")
    stored = stored.reshape(spatial)
    values = np.empty(stored.shape, dtype=np.float32)
    if len(spatial) == 3:
        for k in range(stored.shape[2]):  # slice by slice: the float64 copy stays one slice large
            values[:, :, k] = stored[:, :, k].astype(np.float64) * slope + inter
    else:
        values[...] = stored.astype(np.float64) * slope + inter
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise NiftiError(f"{path}: {bad} voxels are NaN or infinite; medrec refuses non-finite images")
    form_code = 2 if int(header["sform_code"]) > 0 else (1 if int(header["qform_code"]) > 0 else 0)
    notes = []
    if form_code == 0:
        notes.append("NIfTI has neither sform nor qform: affine built from pixdim only")
    return Volume(
        array=values,
        affine_ras=affine,
        modality="",
        photometric="",
        notes=notes,
        extra={"affine_source": _AFFINE_SOURCES[form_code], "scl_slope": slope, "scl_inter": inter},
    )
