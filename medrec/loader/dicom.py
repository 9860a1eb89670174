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

Geometry convention (shared by synth, index, loader and transforms): ``vol[i, j, k]`` with
i = column index (along the row direction IOP[0:3]), j = row index (along IOP[3:6]), k = slice
index along n = IOP[0:3] x IOP[3:6] with positions increasing along n; the pixel array of slice k
is ``vol[:, :, k].T``. The LPS affine has columns ``row * PixelSpacing[1]``,
``col * PixelSpacing[0]``, ``n * slice_spacing`` and translation = ImagePositionPatient of
slice 0; the RAS affine is ``diag(-1, -1, 1, 1) @ LPS``.

Missing geometry (radiographs, secondary captures), each recorded in the notes: no
ImageOrientationPatient -> directions from PatientOrientation letters (``L\\F`` for a PA chest
film), else rows along +x and columns along +y; no (or zero) PixelSpacing -> ImagerPixelSpacing,
else 1 mm; no ImagePositionPatient -> the image centre is put on the world origin; a multi-frame
file without per-frame functional groups is a stack of its frames along the normal,
SpacingBetweenSlices (else SliceThickness, else 1 mm) apart.

Values: stored values go through the modality LUT of their own slice or frame (``RescaleSlope``
/ ``RescaleIntercept`` per file, or per frame from the Pixel Value Transformation functional
group; a Modality LUT Sequence when present) using :func:`pydicom.pixels.apply_modality_lut`.

MONOCHROME1 rule: after the modality LUT, ``value -> (lo + hi) - value`` where ``lo`` and ``hi``
are the smallest and largest modality-LUT outputs of the two ends of the stored-value range
implied by BitsStored and PixelRepresentation (unsigned ``[0, 2**BitsStored - 1]``, signed
``[-2**(BitsStored-1), 2**(BitsStored-1) - 1]``), computed per slice with that slice's rescale.
For a linear rescale this equals rescaling the inverted stored value ``(smin + smax) - p``, so a
MONOCHROME1 file whose stored values are ``(smin + smax) - p`` of a MONOCHROME2 twin (same
BitsStored, same rescale) loads to exactly the twin's volume.

Colour (RGB, YBR_*, PALETTE COLOR) is decoded to RGB by pydicom and reduced to one luminance
channel ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601); a note says so.

Fast path: when every file of the series is a plain uncompressed single-frame greyscale slice
(the scope is in :mod:`medrec.loader.dicom_fast`), the header values and pixel bytes are read
without pydicom and go through the same header parsing, geometry and value rules below; the
result is bit-identical to the pydicom path. Any file outside that scope, and any error, sends
the whole series to the pydicom path, which decides the result or the error message.
``FAST_PATH = False`` (or ``read_dicom_series(..., fast_path=False)``) forces pydicom.
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
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medrec.budget import check_budget
from medrec.errors import DicomError, MedrecError
from medrec.loader.dicom_fast import FastFile, Unsupported, read_fast_file, read_fast_pixels
from medrec.loader.volume import LPS_TO_RAS, Volume

# Read plain uncompressed series without pydicom (see the module docstring); False forces pydicom.
FAST_PATH = True

# Two slices closer than this along the normal are the same position (a duplicate).
DUPLICATE_POSITION_MM = 1e-3
# Direction cosines further apart than this mean a different orientation.
ORIENTATION_TOLERANCE = 1e-3
# Relative deviation of one gap from the mean gap above which the spacing is called uneven.
UNEVEN_SPACING_FRACTION = 0.01
LUMINANCE_WEIGHTS = np.array([0.299, 0.587, 0.114])
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_IDENTITY_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
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


_LETTER_DIRECTIONS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0), "H": (0, 0, 1),
                      "F": (0, 0, -1)}


def _patient_orientation(value: object) -> np.ndarray | None:
    """Direction cosines (LPS) from PatientOrientation letters (e.g. ``L\\F`` for a PA chest film).

    Each of the two values names where the rows / columns run (``L``, ``R``, ``A``, ``P``, ``H``,
    ``F``; several letters for an oblique direction). Returns None when absent or not orthogonal.
    """
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    directions = []
    for letters in value:
        text = str(letters).strip().upper()
        if not text or any(letter not in _LETTER_DIRECTIONS for letter in text):
            return None
        vector = np.sum([_LETTER_DIRECTIONS[letter] for letter in text], axis=0).astype(np.float64)
        if np.linalg.norm(vector) == 0:
            return None
        directions.append(vector / np.linalg.norm(vector))
    if abs(directions[0] @ directions[1]) > 0.01:
        return None
    return np.concatenate(directions)


# Unit normals of the orientations seen so far (the slices of a series share one); read-only arrays.
_NORMALS: dict[bytes, np.ndarray] = {}  # dtype + bytes of the orientation -> normal
_NORMALS_KEPT = 256


def _normal(orientation: np.ndarray, path: str) -> np.ndarray:
    key = orientation.dtype.str.encode() + orientation.tobytes()
    normal = _NORMALS.get(key)
    if normal is not None:
        return normal
    row, col = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01 or abs(row @ col) > 0.01:
        raise DicomError(
            f"{path}: ImageOrientationPatient {list(orientation)} is not two orthogonal unit vectors"
        )
    normal = np.cross(row / np.linalg.norm(row), col / np.linalg.norm(col))
    normal = normal / np.linalg.norm(normal)
    normal.flags.writeable = False
    if len(_NORMALS) < _NORMALS_KEPT:
        _NORMALS[key] = normal
    return normal


def _consistent(headers: list[_FileHeader]) -> None:
    first = headers[0]
    for header in headers[1:]:
        for name in ("rows", "cols", "samples"):
            if getattr(header, name) != getattr(first, name):
                raise DicomError(
                    f"{header.path}: {name}={getattr(header, name)} differs from {getattr(first, name)} in "
                    f"{first.path}; these files are not one series (re-run 'medrec index')"
                )


@dataclass(frozen=True)
class _Geometry:
    order: list[int]  # frame indices (into the flat frame list) in slice order
    affine_lps: np.ndarray
    spatial_dims: int


def _geometry(frames: list[_Frame], headers: list[_FileHeader], notes: list[str]) -> _Geometry:
    """Sort the frames along the slice normal and build the LPS affine."""
    def path_of(frame: _Frame) -> str:
        return headers[frame.file_index].path

    with_orientation = [f for f in frames if f.orientation is not None]
    if with_orientation and len(with_orientation) != len(frames):
        missing = next(f for f in frames if f.orientation is None)
        raise DicomError(f"{path_of(missing)}: ImageOrientationPatient missing while other files of the series have it")
    if with_orientation:
        reference = with_orientation[0]
        for frame in with_orientation[1:]:
            if np.abs(frame.orientation - reference.orientation).max() > ORIENTATION_TOLERANCE:
                raise DicomError(
                    f"{path_of(frame)}: ImageOrientationPatient {list(frame.orientation)} differs from "
                    f"{list(reference.orientation)} in {path_of(reference)}; the series mixes orientations"
                )
        orientation = reference.orientation
    else:
        orientation = np.array(_IDENTITY_ORIENTATION)
        notes.append("ImageOrientationPatient missing: assumed rows along +x and columns along +y (LPS)")
    first_path = headers[0].path
    normal = _normal(orientation, first_path)
    row_dir = orientation[:3] / np.linalg.norm(orientation[:3])
    col_dir = orientation[3:] / np.linalg.norm(orientation[3:])

    spacings = [f.pixel_spacing for f in frames if f.pixel_spacing is not None]
    if spacings:
        pixel_spacing = np.array(spacings[0])
        for frame in frames:
            if frame.pixel_spacing == spacings[0]:
                continue  # the common case, without allclose's overhead
            if frame.pixel_spacing is None or not np.allclose(frame.pixel_spacing, pixel_spacing, rtol=1e-3):
                raise DicomError(
                    f"{path_of(frame)}: PixelSpacing {frame.pixel_spacing} differs from {list(pixel_spacing)} "
                    f"in {path_of(frames[0])}; the series mixes pixel sizes"
                )
        if (pixel_spacing <= 0).any():
            raise DicomError(f"{first_path}: PixelSpacing {list(pixel_spacing)} must be positive")
    else:
        pixel_spacing = np.array([1.0, 1.0])
        notes.append("PixelSpacing missing: assumed 1 mm pixels")

    with_position = [f for f in frames if f.position is not None]
    if with_position and len(with_position) != len(frames):
        missing = next(f for f in frames if f.position is None)
        raise DicomError(f"{path_of(missing)}: ImagePositionPatient missing while other files of the series have it")

    n_slices = len(frames)
    thickness = next((f.thickness for f in frames if f.thickness), None)
    if with_position:
        along = np.array([f.position @ normal for f in frames])
        order = [int(i) for i in np.argsort(along, kind="stable")]
        if order != sorted(order):
            notes.append("files were not in slice order; re-sorted by position along the slice normal")
        sorted_along = along[order]
        gaps = np.diff(sorted_along)
        if n_slices > 1 and gaps.min() < DUPLICATE_POSITION_MM:
            at = int(np.argmin(gaps))
            first, second = frames[order[at]], frames[order[at + 1]]
            raise DicomError(
                f"{path_of(second)}: slice at {sorted_along[at + 1]:.3f} mm along the normal duplicates "
                f"{path_of(first)} (frame {first.frame_index}); the series holds two slices at one position "
                f"(repeated acquisition or mixed series); split it with 'medrec index'"
            )
        origin = frames[order[0]].position
        if n_slices > 1:
            slice_spacing = float((sorted_along[-1] - sorted_along[0]) / (n_slices - 1))
            if np.abs(gaps - slice_spacing).max() > max(UNEVEN_SPACING_FRACTION * slice_spacing, 1e-3):
                notes.append(
                    f"uneven slice spacing ({gaps.min():.3f}..{gaps.max():.3f} mm); the affine uses the mean "
                    f"{slice_spacing:.3f} mm"
                )
            positions = np.stack([frames[i].position for i in order])
            drift = positions - origin - np.outer(sorted_along - sorted_along[0], normal)
            max_drift = float(np.linalg.norm(drift, axis=1).max())
            if max_drift > 0.01 * float(pixel_spacing.min()):
                notes.append(
                    f"slice origins drift in-plane by up to {max_drift:.2f} mm (gantry tilt or sheared stack); "
                    f"the affine stacks slices along the normal"
                )
        else:
            slice_spacing = thickness or 1.0
    else:
        order = list(range(n_slices))
        slice_spacing = thickness or 1.0
        rows, cols = headers[0].rows, headers[0].cols
        # no position: put the centre of the image (or stack) on the world origin
        origin = -(row_dir * pixel_spacing[1] * (cols - 1) / 2 + col_dir * pixel_spacing[0] * (rows - 1) / 2
                   + normal * slice_spacing * (n_slices - 1) / 2)
        notes.append(
            "ImagePositionPatient missing: image centred on the world origin"
            + ("; kept the manifest's file order" if n_slices > 1 else "")
        )

    affine = np.eye(4)
    affine[:3, 0] = row_dir * pixel_spacing[1]
    affine[:3, 1] = col_dir * pixel_spacing[0]
    affine[:3, 2] = normal * slice_spacing
    affine[:3, 3] = origin
    return _Geometry(order=order, affine_lps=affine, spatial_dims=2 if n_slices == 1 else 3)


def _check_payload(ds: Dataset, header: _FileHeader) -> None:
    """Fewer pixel bytes than the header claims is a truncated file, not a decoder crash."""
    keyword = next((k for k in _PIXEL_KEYWORDS if k in ds), None)
    if keyword is None:
        raise DicomError(
            f"{header.path}: no pixel data element (the file is truncated or is not an image)"
        )
    transfer_syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if transfer_syntax is not None and transfer_syntax.is_compressed:
        return
    bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword, header.bits_allocated)
    # YBR_FULL_422 stores two chroma samples per pair of pixels: 2 samples per pixel on average
    samples = 2 if header.photometric == "YBR_FULL_422" else header.samples
    expected = math.ceil(header.rows * header.cols * header.n_frames * samples * bits / 8)
    actual = len(ds[keyword].value or b"")
    if actual < expected:
        raise DicomError(
            f"{header.path}: truncated pixel data: {actual} bytes present, but Rows x Columns x frames x "
            f"samples x BitsAllocated/8 = {header.rows} x {header.cols} x {header.n_frames} x {samples} "
            f"x {bits}/8 = {expected} bytes expected"
        )


def _stored_range(header: _FileHeader) -> tuple[int, int]:
    if header.signed:
        return -(2 ** (header.bits_stored - 1)), 2 ** (header.bits_stored - 1) - 1
    return 0, 2**header.bits_stored - 1


def _rescale_dataset(slope: float, intercept: float) -> Dataset:
    item = Dataset()
    item.RescaleSlope = slope
    item.RescaleIntercept = intercept
    return item


def _real_values(raw: np.ndarray, ds: Dataset, header: _FileHeader, frame: _Frame) -> np.ndarray:
    """Modality LUT (per frame) then MONOCHROME1 inversion; float64."""
    lut_source = ds if header.has_modality_lut else _rescale_dataset(frame.slope, frame.intercept)
    values = np.asarray(apply_modality_lut(raw, lut_source), dtype=np.float64)
    if header.photometric == "MONOCHROME1":
        if raw.dtype.kind == "f":
            ends = np.array([np.nanmin(raw), np.nanmax(raw)])
        else:
            ends = np.array(_stored_range(header), dtype=np.int64)
        mapped = np.asarray(apply_modality_lut(ends, lut_source), dtype=np.float64)
        values = (mapped.min() + mapped.max()) - values
    return values


def _decode_file(ds: Dataset, header: _FileHeader, frames: list[_Frame], out: np.ndarray,
                 slot: dict[tuple[int, int], int], notes: list[str]) -> None:
    """Decode one file and write each of its frames into ``out[:, :, k]``."""
    with _as_dicom_error(header.path, "read the pixel data"):
        _check_payload(ds, header)
    with _as_dicom_error(header.path, "decode the pixel data"):
        pixels = np.asarray(ds.pixel_array)
    expected = (header.rows, header.cols) + ((3,) if header.samples == 3 else ())
    if header.n_frames > 1:
        expected = (header.n_frames, *expected)
    if pixels.shape != expected:
        raise DicomError(
            f"{header.path}: decoded pixel array has shape {pixels.shape}, header says {expected}"
        )
    if header.n_frames == 1:
        pixels = pixels[None]
    colour = header.samples == 3 or header.photometric == "PALETTE COLOR"
    if header.photometric == "PALETTE COLOR":
        with _as_dicom_error(header.path, "apply the palette colour lookup table"):
            pixels = np.asarray(apply_color_lut(pixels, ds))
    if colour:
        note = (f"colour ({header.photometric}) converted to one luminance channel: "
                f"Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601)")
        if note not in notes:
            notes.append(note)
    for frame in frames:
        raw = pixels[frame.frame_index]
        with _as_dicom_error(header.path, f"apply the modality LUT to frame {frame.frame_index}"):
            if colour:
                values = raw.astype(np.float64) @ LUMINANCE_WEIGHTS
            else:
                values = _real_values(raw, ds, header, frame)
        out[:, :, slot[(frame.file_index, frame.frame_index)]] = values.T


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


def _rescaled(raw: np.ndarray, header: _FileHeader, frame: _Frame) -> np.ndarray:
    """:func:`_real_values` without a Modality LUT Sequence, without a pydicom Dataset per slice.

    The same float64 operations as :func:`pydicom.pixels.apply_modality_lut`'s rescale branch
    (``arr.astype(np.float64) * slope``, then ``+= intercept``) and the same MONOCHROME1 rule.
    """
    values = raw.astype(np.float64) * frame.slope
    values += frame.intercept
    if header.photometric == "MONOCHROME1":
        ends = np.array(_stored_range(header), dtype=np.int64).astype(np.float64) * frame.slope
        ends += frame.intercept
        values = (ends.min() + ends.max()) - values
    return values


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
