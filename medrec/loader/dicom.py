"""Read one DICOM series (the ``files`` of a manifest row) into a float32 volume.

Why not MONAI's readers (as of MONAI 1.6, ``monai/data/image_reader.py``).
``PydicomReader``, given a folder, globs every file directly in it (``*``, filtered only by an
optional file-name regex, or by ``pydicom.misc.is_dicom`` when ``fname_regex=None``) and stacks
every one pydicom can read, whatever series it belongs to; it orders the slices by
``InstanceNumber`` (dropping slices without one), so a series whose instance numbers do not
follow the slice positions is stacked out of order; by default (``prune_metadata=True``) its
metadata keeps only the geometry tags (no ``PatientID``, ``StudyInstanceUID`` or ``Modality``);
it applies only the top-level ``RescaleSlope`` / ``RescaleIntercept`` (not the per-frame values of
an enhanced multi-frame file) and does not invert MONOCHROME1; and for a non-segmentation
multi-frame file without top-level ``ImageOrientationPatient`` / ``ImagePositionPatient`` (Enhanced
CT / MR keep them in the per-frame functional groups) it warns and returns an identity affine.
``ITKReader`` groups a folder by series through GDCM but loads the first series it finds unless
``series_name`` is given, and needs ITK, which medrec does not install. medrec already knows each
series' exact file list from the index, so this module reads exactly those files with pydicom,
sorts them by position along the slice normal itself, and applies the modality LUT per slice or
frame.

One module per step, the same for both paths: :mod:`medrec.loader.dicom_header` reads and checks
each file's header and the geometry and rescale of each frame, :mod:`medrec.loader.dicom_orientation`
turns orientations into slice directions, :mod:`medrec.loader.dicom_geometry` sorts the frames
along the slice normal and builds the affine (the geometry convention and the rules for missing
geometry are written there), and :mod:`medrec.loader.dicom_values` turns pixel data into
real-world values (modality LUT, MONOCHROME1, colour).

Fast path: when every file of the series is a plain uncompressed single-frame greyscale slice
(the scope is in :mod:`medrec.loader.dicom_fast`), the header values and pixel bytes are read
without pydicom and go through the same header parsing, geometry and value rules; the
result is bit-identical to the pydicom path. Any file outside that scope, and any error, sends
the whole series to the pydicom path, which decides the result or the error message.
``FAST_PATH = False`` (or ``read_dicom_series(..., fast_path=False)``) forces pydicom.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset

from medrec.budget import check_budget
from medrec.errors import DicomError, MedrecError
from medrec.loader.dicom_fast import FastFile, Unsupported, read_fast_file, read_fast_pixels
from medrec.loader.dicom_geometry import _consistent, _Geometry, _geometry
from medrec.loader.dicom_header import _as_dicom_error, _FileHeader, _Frame, _frames_of, _parse_header, _read_dataset
from medrec.loader.dicom_values import _decode_file, _rescaled
from medrec.loader.volume import LPS_TO_RAS, Volume

# Read plain uncompressed series without pydicom (see the module docstring); False forces pydicom.
FAST_PATH = True


def read_dicom_series(files: Sequence[str], max_bytes: int, source: str = "",
                      fast_path: bool | None = None) -> Volume:
    """Decode a DICOM series into float32 real-world values in the medrec convention.

    Headers are read first for every file (pixel data deferred: read only when decoded); the
    decoded size is checked against ``max_bytes`` before any pixel data is read or decoded.

    Args:
        files: the series' files (any order; they are sorted by position along the normal).
        max_bytes: memory budget for the decoded float32 volume.
        source: a label for messages when the series has no files (the sample id).
        fast_path: try :func:`read_dicom_series_fast` first; ``None`` follows :data:`FAST_PATH`.
            The result is the same either way; ``False`` is for comparing the two.

    Returns:
        The decoded :class:`Volume` (``(I, J, K)``, or ``(I, J)`` when the series has one frame).

    Raises:
        DicomError: unreadable, truncated, inconsistent or non-image files, duplicate positions.
        ResourceBudgetError: the headers claim more than ``max_bytes``.
    """
    if not files:
        raise DicomError(f"{source or 'series'}: no DICOM files listed; re-run 'medrec index'")
    if FAST_PATH if fast_path is None else fast_path:
        try:
            volume = read_dicom_series_fast(files, max_bytes)
        except Exception:  # noqa: BLE001 - the pydicom path below is the reference: a series this
            # reader does not fully understand is read there, which decides the result or the error
            volume = None
        if volume is not None:
            return volume
    notes: list[str] = []
    headers: list[_FileHeader] = []
    datasets: list[Dataset | None] = []
    frames: list[_Frame] = []
    claimed = 0
    for file_index, path in enumerate(str(p) for p in files):
        ds = _read_dataset(path)
        # values are decoded on first access: a malformed one raises there (e.g. an odd-length US)
        with _as_dicom_error(path, "read the image header values"):
            header = _parse_header(ds, path)
        claimed += header.rows * header.cols * header.n_frames * 4
        what = path if len(files) == 1 else f"{path} (file {file_index + 1} of a {len(files)}-file series)"
        check_budget(what, claimed, max_bytes,
                     f"Rows x Columns x frames x 4 = {header.rows} x {header.cols} x {header.n_frames} x 4"
                     + ("" if len(files) == 1 else " summed over the series so far"))
        headers.append(header)
        datasets.append(ds)
        with _as_dicom_error(path, "read the image geometry"):
            frames.extend(_frames_of(ds, header, file_index, notes))
    _consistent(headers)
    geometry = _geometry(frames, headers, notes)
    slot = {(frames[i].file_index, frames[i].frame_index): k for k, i in enumerate(geometry.order)}
    first = headers[0]
    out = np.empty((first.cols, first.rows, len(frames)), dtype=np.float32)
    for file_index, (ds, header) in enumerate(zip(datasets, headers, strict=True)):
        _decode_file(ds, header, [f for f in frames if f.file_index == file_index], out, slot, notes)
        datasets[file_index] = None  # let the decoded file's pixel bytes go
    return _volume(out, headers, frames, geometry, notes)


def read_dicom_series_fast(files: Sequence[str], max_bytes: int) -> Volume | None:
    """The series read without pydicom, or ``None`` when it must be read with pydicom.

    Same result as the pydicom path of :func:`read_dicom_series`, bit for bit: the header values
    are converted as pydicom converts them (:mod:`medrec.loader.dicom_fast`) and go through the
    same header parsing, geometry, memory-budget and value rules. ``None`` for any file outside
    the fast path's scope and for any error (over budget, truncated, inconsistent), which the
    pydicom path then reports in its own words.

    Args:
        files: the series' files (any order).
        max_bytes: memory budget for the decoded float32 volume.
    """
    try:
        return _read_fast(files, max_bytes)
    except (Unsupported, MedrecError, OSError):
        return None


def _read_fast(files: Sequence[str], max_bytes: int) -> Volume:
    notes: list[str] = []
    headers: list[_FileHeader] = []
    fast_files: list[FastFile] = []
    frames: list[_Frame] = []
    claimed = 0
    for file_index, path in enumerate(str(p) for p in files):
        fast_file = read_fast_file(path)
        header = _parse_header(fast_file.dataset, path)
        claimed += header.rows * header.cols * header.n_frames * 4
        if claimed > max_bytes:
            raise Unsupported("over the memory budget")  # the pydicom path raises the budget error
        headers.append(header)
        fast_files.append(fast_file)
        frames.extend(_frames_of(fast_file.dataset, header, file_index, notes))
    _consistent(headers)
    geometry = _geometry(frames, headers, notes)
    first = headers[0]
    out = np.empty((first.cols, first.rows, len(frames)), dtype=np.float32)
    for k, frame_index in enumerate(geometry.order):
        frame = frames[frame_index]  # single-frame files: frame i is file i
        raw = read_fast_pixels(fast_files[frame.file_index])
        out[:, :, k] = _rescaled(raw, headers[frame.file_index], frame).T
    return _volume(out, headers, frames, geometry, notes)


def _volume(out: np.ndarray, headers: list[_FileHeader], frames: list[_Frame], geometry: _Geometry,
            notes: list[str]) -> Volume:
    first = headers[0]
    if not np.isfinite(out).all():
        raise DicomError(f"{first.path}: decoded series holds NaN or infinite values")
    photometrics = sorted({h.photometric for h in headers})
    return Volume(
        array=out[:, :, 0] if geometry.spatial_dims == 2 else out,
        affine_ras=LPS_TO_RAS @ geometry.affine_lps,
        modality=first.modality,
        photometric="/".join(photometrics),
        notes=list(dict.fromkeys(notes)),
        extra={"n_files": len(headers), "n_frames": len(frames)},
    )
