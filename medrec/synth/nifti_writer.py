"""Write a study volume as gzipped NIfTI-1 with a RAS affine (qform and sform, scanner space, mm)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from medrec.atomicio import write_bytes

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti_bytes(volume: np.ndarray, affine_lps: np.ndarray) -> bytes:
    """The .nii.gz bytes of ``volume`` (vol[i, j, k]) with RAS affine ``diag(-1, -1, 1, 1) @ affine_lps``.

    The gzip stream is written with mtime 0 and no file name, so the same volume always gives the
    same bytes (nibabel's own writer stamps neither, but going through bytes also makes the write atomic).
    """
    affine_ras = LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)
    image = nib.Nifti1Image(np.asarray(volume), affine_ras)
    image.set_qform(affine_ras, code=1)
    image.set_sform(affine_ras, code=1)
    image.header.set_xyzt_units(xyz="mm", t="sec")
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def write_nifti(path: Path, volume: np.ndarray, affine_lps: np.ndarray) -> Path:
    """Write ``volume`` to ``path`` (.nii.gz) atomically; returns the path."""
    write_bytes(path, nifti_bytes(volume, affine_lps), fsync=False)
    return path
