"""Read one DICOM file's header into a :class:`DicomHeader`, or say why it is no usable image.

Part 10 files whose dataset is explicit VR little endian are read by the hand-written walker in
:mod:`medrec.index.fastheader` (pydicom builds a file object walk and a Dataset even with
``specific_tags``, which costs as much as a full read of a small slice); every other file, and any
file the walker finds unusual, is read by pydicom (``stop_before_pixels`` with a short tag list).
Either way the values are decoded by the same function, and the pixel bytes are checked by
:mod:`medrec.index.headers.pixels`.
"""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.datadict import tag_for_keyword

from medrec.index.fastheader import HeaderSelection, NeedsPydicom, decode_raw_value, read_fast_header
from medrec.index.headers.pixels import _check_pixel_data
from medrec.index.headers.values import _float, _floats, _int, _multi, _text
from medrec.index.problems import FileProblem

_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")

HEADER_TAGS: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "PatientID",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "AccessionNumber",
    "Modality",
    "Manufacturer",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "ImageType",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)


_HEADER_TAG_NUMBERS: list[int] = [int(tag_for_keyword(keyword)) for keyword in HEADER_TAGS]
_TAG_OF: dict[str, int] = dict(zip(HEADER_TAGS, _HEADER_TAG_NUMBERS, strict=True))
# value representation of each header tag: text (split on backslash) or unsigned short
_US_KEYWORDS = frozenset({"Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit"})
_FAST_SELECTION = HeaderSelection({tag: keyword for keyword, tag in _TAG_OF.items()}, _US_KEYWORDS)


class RawValues:
    """Header values decoded straight from pydicom's raw elements.

    pydicom converts each element through its hooks and value classes; for the two dozen plain
    text / US values the index needs that costs more than parsing the file, so they are decoded
    here (ASCII text split on backslashes, US by byte order). Non-ASCII text and sequences fall
    back to pydicom, which honours Specific Character Set.
    """

    __slots__ = ("dataset", "file_meta", "original_encoding")

    def __init__(self, dataset) -> None:  # pydicom FileDataset
        self.dataset = dataset
        self.file_meta = dataset.file_meta
        self.original_encoding = dataset.original_encoding

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.dataset

    def get(self, keyword: str):  # str | list[str] | int | list[int] | None
        tag = _TAG_OF.get(keyword) or tag_for_keyword(keyword)
        element = self.dataset._dict.get(tag) if tag is not None else None  # raw access is the point
        if element is None:
            return None
        raw = getattr(element, "value", None)
        vr = getattr(element, "VR", None)
        if not isinstance(raw, bytes) or vr == "SQ":
            return self.dataset.get(keyword)
        try:
            return decode_raw_value(keyword, vr, raw, element.is_little_endian, _US_KEYWORDS)
        except NeedsPydicom:
            return self.dataset.get(keyword)


@dataclass(frozen=True, slots=True)
class DicomHeader:
    """What the index needs from one DICOM image file (no pixel values, no patient name)."""

    path: str
    sop_instance_uid: str
    sop_class_uid: str
    patient_id: str
    study_uid: str
    series_uid: str
    accession: str
    modality: str
    manufacturer: str
    sex: str
    age_text: str
    series_description: str
    series_number: str
    image_type: tuple[str, ...]
    rows: int
    cols: int
    frames: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    spacing_between_slices: float | None
    frame_positions: tuple[tuple[float, float, float], ...] | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _inspect_dicom(path: str, handle, head: bytes, size: int) -> object:  # binary file
    """Classify a file that is not NIfTI; ``head`` holds its first :data:`HEAD_BYTES` bytes."""
    file_warnings: list[str] = []
    has_prefix = len(head) >= 132 and head[128:132] == b"DICM"
    if has_prefix and (head.startswith(b"MZ") or head.startswith(b"\x7fELF")):
        kind = "Windows executable (MZ)" if head.startswith(b"MZ") else "ELF executable"
        return FileProblem(
            path,
            "executable_preamble",
            f"security: DICOM preamble starts with {kind} magic (a DICOM/executable polyglot); "
            "file excluded, rewrite it with a zeroed preamble if it is genuine",
        )
    if not has_prefix:
        problem = _not_dicom_reason(head[:132], path)
        if problem is not None:
            return FileProblem(path, "not_dicom", problem)
        file_warnings.append("no DICOM preamble/file meta (read with force)")
    fast = read_fast_header(head, size, _FAST_SELECTION) if has_prefix else None
    if fast is not None and (max(1, _int(fast, "NumberOfFrames") or 1) > 1 or "SharedFunctionalGroupsSequence" in fast):
        fast = None  # functional-group geometry needs pydicom's nested datasets
    if fast is not None:
        return _dicom_header(path, handle, head, size, fast, None, fast.pixel_offset, fast.transfer_syntax,
                             has_prefix, file_warnings)
    # pydicom warns about odd values on access; the index reports problems in qc instead
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle.seek(0)
        parsed = pydicom.dcmread(
            handle, stop_before_pixels=True, force=not has_prefix, specific_tags=_HEADER_TAG_NUMBERS
        )
        stop_offset = handle.tell()
        transfer_syntax = str(getattr(parsed.file_meta, "TransferSyntaxUID", "") or "") if parsed.file_meta else ""
        return _dicom_header(path, handle, head, size, RawValues(parsed), parsed, stop_offset, transfer_syntax,
                             has_prefix, file_warnings)


def _dicom_header(
    path: str,
    handle,  # binary file
    head: bytes,
    size: int,
    dataset,  # FastHeader | RawValues
    parsed,  # the pydicom Dataset, None on the fast path
    stop_offset: int,
    transfer_syntax: str,
    has_prefix: bool,
    file_warnings: list[str],
) -> object:
    """Check the pixel bytes and bit depths of a parsed header and build its :class:`DicomHeader`."""
    if not has_prefix and not _plausible_dataset(dataset):
        return FileProblem(path, "not_dicom", "not DICOM: no preamble and no recognisable DICOM dataset")

    sop_class = _text(dataset, "SOPClassUID")
    series_uid = _text(dataset, "SeriesInstanceUID")
    pixel_problem = _check_pixel_data(path, handle, head, dataset, stop_offset, size, transfer_syntax, file_warnings)
    if pixel_problem is not None:
        return FileProblem(path, pixel_problem[0], pixel_problem[1], series_uid)

    bits_problem = _check_bits(dataset, file_warnings)
    if bits_problem is not None:
        return FileProblem(path, "bits_inconsistent", bits_problem, series_uid)

    rows = _int(dataset, "Rows")
    cols = _int(dataset, "Columns")
    frames = max(1, _int(dataset, "NumberOfFrames") or 1)
    position = _floats(dataset, "ImagePositionPatient", 3)
    orientation = _floats(dataset, "ImageOrientationPatient", 6)
    pixel_spacing = _floats(dataset, "PixelSpacing", 2) or _floats(dataset, "ImagerPixelSpacing", 2)
    frame_positions = None
    if frames > 1 or "SharedFunctionalGroupsSequence" in dataset:
        shared_spacing, shared_orientation, frame_positions = _functional_group_geometry(parsed, frames)
        pixel_spacing = pixel_spacing or shared_spacing
        orientation = orientation or shared_orientation
        if position is None and frame_positions:
            position = frame_positions[0]
    return DicomHeader(
        path=path,
        sop_instance_uid=_text(dataset, "SOPInstanceUID"),
        sop_class_uid=sop_class,
        patient_id=_text(dataset, "PatientID"),
        study_uid=_text(dataset, "StudyInstanceUID"),
        series_uid=series_uid,
        accession=_text(dataset, "AccessionNumber"),
        modality=_text(dataset, "Modality").upper(),
        manufacturer=_text(dataset, "Manufacturer"),
        sex=_text(dataset, "PatientSex").upper(),
        age_text=_text(dataset, "PatientAge"),
        series_description=_text(dataset, "SeriesDescription"),
        series_number=_text(dataset, "SeriesNumber"),
        image_type=tuple(v.strip().upper() for v in _multi(dataset, "ImageType")),
        rows=rows or 0,
        cols=cols or 0,
        frames=frames,
        position=position,
        orientation=orientation,
        pixel_spacing=pixel_spacing,
        slice_thickness=_float(dataset, "SliceThickness"),
        spacing_between_slices=_float(dataset, "SpacingBetweenSlices"),
        frame_positions=frame_positions,
        warnings=tuple(file_warnings),
    )


def _not_dicom_reason(head: bytes, path: str) -> str | None:
    """A reason when a file without the DICM prefix is clearly not a raw DICOM dataset, else None."""
    if len(head) < 8:
        return f"not DICOM: only {len(head)} bytes"
    group_le, element_le = struct.unpack("<HH", head[:4])
    group_be = struct.unpack(">H", head[:2])[0]
    # a raw dataset (no preamble) starts with a low group: command (0000), meta (0002), identifying (0008)
    if group_le in (0x0000, 0x0002, 0x0004, 0x0008) or group_be in (0x0002, 0x0008):
        return None
    if head[:2] == b"\x1f\x8b":
        return "not DICOM: gzip-compressed file (unpack it first)"
    if head[:4] == b"PK\x03\x04":
        return "not DICOM: zip archive (unpack it first)"
    if _looks_like_text(head):
        return f"not DICOM: text file{_suffix_note(path)}"
    return f"not DICOM: unrecognised binary data{_suffix_note(path)}"


def _suffix_note(path: str) -> str:
    suffix = Path(path).suffix
    return f" (named {suffix})" if suffix else ""


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character may be cut at the end of the sample
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * max(1, len(text))


def _plausible_dataset(dataset) -> bool:  # pydicom Dataset
    """A dataset read with force=True counts as DICOM only if it carries real identifying UIDs."""
    for keyword in ("SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID"):
        value = _text(dataset, keyword)
        if value and _UID_PATTERN.match(value):
            return True
    return False


def _check_bits(dataset, file_warnings: list[str]) -> str | None:
    """Reason when BitsStored / HighBit contradict BitsAllocated; a warning for unusual HighBit."""
    allocated = _int(dataset, "BitsAllocated")
    stored = _int(dataset, "BitsStored")
    high_bit = _int(dataset, "HighBit")
    if allocated is None:
        return None
    if allocated not in (1, 8, 16, 32, 64):
        return f"bits inconsistent: BitsAllocated {allocated} is not 1, 8, 16, 32 or 64"
    if stored is not None and (stored < 1 or stored > allocated):
        return f"bits inconsistent: BitsStored {stored} is outside 1..BitsAllocated ({allocated})"
    if high_bit is not None and high_bit >= allocated:
        return f"bits inconsistent: HighBit {high_bit} >= BitsAllocated {allocated}"
    if stored is not None and high_bit is not None and high_bit + 1 < stored:
        return f"bits inconsistent: HighBit {high_bit} leaves no room for BitsStored {stored}"
    if stored is not None and high_bit is not None and high_bit != stored - 1:
        file_warnings.append(f"HighBit {high_bit} != BitsStored-1 ({stored - 1})")
    return None


def _functional_group_geometry(dataset, frames: int):
    """Pixel spacing, orientation and per-frame positions of an enhanced multi-frame object."""
    spacing = orientation = None
    shared = dataset.get("SharedFunctionalGroupsSequence")
    shared_item = shared[0] if shared else None
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    first = per_frame[0] if len(per_frame) else None
    for item in (shared_item, first):
        if item is None:
            continue
        if spacing is None and item.get("PixelMeasuresSequence"):
            spacing = _floats(item.PixelMeasuresSequence[0], "PixelSpacing", 2)
        if orientation is None and item.get("PlaneOrientationSequence"):
            orientation = _floats(item.PlaneOrientationSequence[0], "ImageOrientationPatient", 6)
    positions = []
    for item in per_frame:
        plane = item.get("PlanePositionSequence")
        position = _floats(plane[0], "ImagePositionPatient", 3) if plane else None
        if position is None:
            positions = []
            break
        positions.append(position)
    frame_positions = tuple(positions) if positions and len(positions) == frames else None
    return spacing, orientation, frame_positions
