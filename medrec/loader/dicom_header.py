"""What one DICOM file's header says: its image format, and the geometry and rescale of each frame.

Values are checked as they are read (a missing Rows, a non-numeric spacing, inconsistent bit
depths are a :class:`~medrec.errors.DicomError` naming the file); the frames of an enhanced
multi-frame file take their geometry and rescale from the per-frame functional groups.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medrec.errors import DicomError, MedrecError
from medrec.loader.dicom_orientation import _IDENTITY_ORIENTATION, _normal, _patient_orientation

# Header values longer than this (pixel data, big private blobs) are read only when used.
DEFER_BYTES = 4096


@dataclass(frozen=True)
class _Frame:
    """One 2D frame of the series, as its header describes it."""

    file_index: int
    frame_index: int
    position: np.ndarray | None  # ImagePositionPatient (LPS, mm)
    orientation: np.ndarray | None  # ImageOrientationPatient (6,)
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) mm
    thickness: float | None
    slope: float
    intercept: float


@dataclass(frozen=True)
class _FileHeader:
    """What the pixel pass needs to know about one file."""

    path: str
    rows: int
    cols: int
    n_frames: int
    samples: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    signed: bool
    modality: str
    has_modality_lut: bool


@contextlib.contextmanager
def _as_dicom_error(path: str, action: str) -> Iterator[None]:
    """Turn any pydicom / numpy failure into a DicomError naming the file."""
    try:
        yield
    except (MedrecError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:
        # decoders written in Rust (pylibjpeg-rle) panic on corrupt streams with pyo3's PanicException,
        # which derives from BaseException, not Exception
        raise DicomError(f"{path}: cannot {action} ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e


def _read_dataset(path: str) -> Dataset:
    """Read a file's header; values over 4 KiB (the pixel data) are only read when accessed."""
    if not os.path.isfile(path):
        raise DicomError(f"{path}: file listed in the manifest does not exist; re-run 'medrec index'")
    with _as_dicom_error(path, "read the DICOM file"):
        ds = pydicom.dcmread(path, force=True, defer_size=DEFER_BYTES)
        if "Rows" not in ds and "Rows" in pydicom.dcmread(path, force=True, stop_before_pixels=True):
            # pydicom gives up on the whole file when encapsulated pixel data runs past its end
            raise DicomError(f"{path}: truncated pixel data: the file ends inside its pixel data element")
        if "TransferSyntaxUID" not in ds.file_meta:
            # a file without a meta header (pre-Part-10): record the encoding pydicom detected
            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
            )
        return ds


def _int(ds: Dataset, keyword: str, path: str, default: int | None = None) -> int:
    value = ds.get(keyword, None)
    if value is None or value == "":
        if default is None:
            raise DicomError(f"{path}: {keyword} is missing; not a DICOM image (or a damaged one)")
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise DicomError(f"{path}: {keyword} = {value!r} is not an integer") from e


def _floats(value: object, count: int, path: str, keyword: str) -> np.ndarray | None:
    """Parse a multi-valued numeric attribute, or None when absent."""
    if value is None or value == "":
        return None
    try:
        numbers = [float(v) for v in (value if isinstance(value, Sequence) and not isinstance(value, str)
                                      else [value])]
    except (TypeError, ValueError) as e:
        raise DicomError(f"{path}: {keyword} = {value!r} is not numeric") from e
    if len(numbers) != count:
        raise DicomError(f"{path}: {keyword} has {len(numbers)} values, expected {count}")
    if not all(map(math.isfinite, numbers)):
        raise DicomError(f"{path}: {keyword} = {list(np.array(numbers, dtype=np.float64))} is not finite")
    return np.array(numbers, dtype=np.float64)


def _float(value: object, path: str, keyword: str) -> float | None:
    parsed = _floats(value, 1, path, keyword)
    return None if parsed is None else float(parsed[0])


def _functional(ds: Dataset, per_frame: Dataset | None, sequence: str, keyword: str) -> object | None:
    """A value from the per-frame functional group, else the shared one, else None."""
    shared_groups = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_groups[0] if shared_groups else None
    for group in (per_frame, shared):
        if group is None:
            continue
        items = group.get(sequence)
        if items and keyword in items[0]:
            return items[0][keyword].value
    return None


def _parse_header(ds: Dataset, path: str) -> _FileHeader:
    rows = _int(ds, "Rows", path)
    cols = _int(ds, "Columns", path)
    n_frames = _int(ds, "NumberOfFrames", path, default=1)
    samples = _int(ds, "SamplesPerPixel", path, default=1)
    if rows <= 0 or cols <= 0 or n_frames <= 0:
        raise DicomError(f"{path}: Rows={rows}, Columns={cols}, NumberOfFrames={n_frames}; all must be positive")
    if samples not in (1, 3):
        raise DicomError(f"{path}: SamplesPerPixel={samples}; only 1 (grey) or 3 (colour) are images")
    bits_allocated = _int(ds, "BitsAllocated", path, default=32 if "FloatPixelData" in ds else 16)
    if bits_allocated not in (1, 8, 16, 32, 64):
        raise DicomError(f"{path}: BitsAllocated={bits_allocated}; expected 1, 8, 16, 32 or 64")
    bits_stored = _int(ds, "BitsStored", path, default=bits_allocated)
    high_bit = _int(ds, "HighBit", path, default=bits_stored - 1)
    if not 1 <= bits_stored <= bits_allocated:
        raise DicomError(
            f"{path}: BitsStored={bits_stored} is inconsistent with BitsAllocated={bits_allocated} "
            f"(must be 1..BitsAllocated)"
        )
    if high_bit != bits_stored - 1:
        raise DicomError(
            f"{path}: HighBit={high_bit} is inconsistent with BitsStored={bits_stored} (expected HighBit = "
            f"{bits_stored - 1}); the pixel range is ambiguous"
        )
    return _FileHeader(
        path=path,
        rows=rows,
        cols=cols,
        n_frames=n_frames,
        samples=samples,
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper(),
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=_int(ds, "PixelRepresentation", path, default=0) == 1,
        modality=str(ds.get("Modality", "") or ""),
        has_modality_lut=bool(ds.get("ModalityLUTSequence")),
    )


def _frames_of(ds: Dataset, header: _FileHeader, file_index: int, notes: list[str]) -> list[_Frame]:
    """Per-frame geometry and rescale, from the functional groups when present."""
    path = header.path
    top_slope = _float(ds.get("RescaleSlope"), path, "RescaleSlope")
    top_intercept = _float(ds.get("RescaleIntercept"), path, "RescaleIntercept")
    top_spacing = _floats(ds.get("PixelSpacing"), 2, path, "PixelSpacing")
    if top_spacing is not None and (top_spacing <= 0).any():
        notes.append(f"PixelSpacing {list(map(float, top_spacing))} is not positive: ignored")
        top_spacing = None
    if top_spacing is None:
        top_spacing = _floats(ds.get("ImagerPixelSpacing"), 2, path, "ImagerPixelSpacing")
        if top_spacing is not None and (top_spacing <= 0).any():
            top_spacing = None
        if top_spacing is not None:
            notes.append("PixelSpacing missing: used ImagerPixelSpacing (detector plane)")
    top_thickness = _float(ds.get("SliceThickness"), path, "SliceThickness")
    per_frame_groups = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame_groups:
        if len(per_frame_groups) != header.n_frames:
            raise DicomError(
                f"{path}: PerFrameFunctionalGroupsSequence has {len(per_frame_groups)} items for "
                f"NumberOfFrames={header.n_frames}"
            )
        frames = []
        for index, group in enumerate(per_frame_groups):
            slope = _float(_functional(ds, group, "PixelValueTransformationSequence", "RescaleSlope"), path,
                           "RescaleSlope")
            intercept = _float(_functional(ds, group, "PixelValueTransformationSequence", "RescaleIntercept"),
                               path, "RescaleIntercept")
            spacing = _floats(_functional(ds, group, "PixelMeasuresSequence", "PixelSpacing"), 2, path,
                              "PixelSpacing")
            frames.append(_Frame(
                file_index=file_index,
                frame_index=index,
                position=_floats(_functional(ds, group, "PlanePositionSequence", "ImagePositionPatient"), 3,
                                 path, "ImagePositionPatient"),
                orientation=_floats(_functional(ds, group, "PlaneOrientationSequence",
                                                "ImageOrientationPatient"), 6, path, "ImageOrientationPatient"),
                pixel_spacing=tuple(spacing) if spacing is not None else (
                    tuple(top_spacing) if top_spacing is not None else None),
                thickness=_float(_functional(ds, group, "PixelMeasuresSequence", "SliceThickness"), path,
                                 "SliceThickness") or top_thickness,
                slope=slope if slope is not None else (top_slope if top_slope is not None else 1.0),
                intercept=intercept if intercept is not None else (
                    top_intercept if top_intercept is not None else 0.0),
            ))
        return frames

    position = _floats(ds.get("ImagePositionPatient"), 3, path, "ImagePositionPatient")
    orientation = _floats(ds.get("ImageOrientationPatient"), 6, path, "ImageOrientationPatient")
    if orientation is None:
        orientation = _patient_orientation(ds.get("PatientOrientation"))
        if orientation is not None:
            letters = "/".join(str(v) for v in ds.PatientOrientation)
            notes.append(f"ImageOrientationPatient missing: directions from PatientOrientation {letters}")
    frames = []
    step = None
    if header.n_frames > 1:
        step = (_float(ds.get("SpacingBetweenSlices"), path, "SpacingBetweenSlices") or top_thickness or 1.0)
        notes.append(
            f"multi-frame file without per-frame geometry: {header.n_frames} frames stacked along the slice "
            f"normal {step:g} mm apart"
        )
    normal = _normal(orientation if orientation is not None else np.array(_IDENTITY_ORIENTATION), path)
    for index in range(header.n_frames):
        frame_position = position
        if position is not None and step is not None:
            frame_position = position + index * step * normal
        frames.append(_Frame(
            file_index=file_index,
            frame_index=index,
            position=frame_position,
            orientation=orientation,
            pixel_spacing=tuple(top_spacing) if top_spacing is not None else None,
            thickness=top_thickness,
            slope=top_slope if top_slope is not None else 1.0,
            intercept=top_intercept if top_intercept is not None else 0.0,
        ))
    return frames
