"""Header values and pixel bytes of plain uncompressed DICOM slices, read without pydicom.

Why this is hand-written: for the small slices of a typical CT or MR series, reading with
pydicom costs about three times the decoding itself (profile in ``benchmarks/README.md``,
"Misses", score): ``dcmread`` walks the file element by element through a file object, every
value the loader reads goes through pydicom's element conversion, and ``pixel_array`` sets up
a decoder per file. The common case, a Part 10 file with an uncompressed explicit VR little
endian dataset, is read here with the index's header walker
(:mod:`medrec.index.fastheader`) from one read of the first 16 KiB, and the pixel bytes are
read straight into a numpy buffer at the pixel element's offset.

Scope, checked for every file (anything else returns ``None`` and the caller reads the series
with pydicom): transfer syntax Explicit VR Little Endian (1.2.840.10008.1.2.1); a plain
Specific Character Set; no Modality LUT Sequence and no functional groups; single frame;
SamplesPerPixel 1; PhotometricInterpretation exactly MONOCHROME1 or MONOCHROME2;
BitsAllocated 8 or 16 with BitsStored, HighBit and PixelRepresentation present; every value
the loader uses in its dictionary VR, non-empty and ASCII; a (7FE0,0010) OB / OW element of
exactly ``Rows x Columns x BitsAllocated / 8`` bytes (plus one padding byte when odd) that ends
the file, or is followed only by Data Set Trailing Padding (FFFC,FFFC) up to the end.

Values are converted as pydicom 3 converts them (``pydicom.values``): DS text is stripped,
split on backslashes and parsed with ``float`` (what ``DSfloat`` does); CS text loses its
trailing spaces and NULs and is split on backslashes; US is one little-endian unsigned short.
Pixels are what ``Dataset.pixel_array`` returns for native data
(``pydicom.pixels.decoders.base``: ``_as_array_native`` then ``_correct_unused_bits``): the
buffer as ``<u1/<i1/<u2/<i2`` by PixelRepresentation, shifted left then right by
``BitsAllocated - BitsStored`` (masking for unsigned, sign extension for signed data).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword

from medrec.index.fastheader import HEAD_BYTES, HeaderSelection, RawElement, read_fast_header

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

# Every header value the pydicom path of medrec.loader.dicom reads; the sequences are kept
# only so that their presence sends the file to pydicom (the walker refuses a kept SQ).
KEYWORDS: tuple[str, ...] = (
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "Modality",
    "RescaleSlope",
    "RescaleIntercept",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PatientOrientation",
    "ModalityLUTSequence",
    "PerFrameFunctionalGroupsSequence",
    "SharedFunctionalGroupsSequence",
)
_VR_OF: dict[str, str] = {keyword: dictionary_VR(tag_for_keyword(keyword)) for keyword in KEYWORDS}
_SELECTION = HeaderSelection({int(tag_for_keyword(k)): k for k in KEYWORDS}, frozenset(), raw_values=True)
_REQUIRED = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit",
             "PixelRepresentation", "PhotometricInterpretation")
_GREY = frozenset({"MONOCHROME1", "MONOCHROME2"})
_PIXEL_DATA_TAG = 0x7FE00010
_TRAILING_PADDING_TAG = 0xFFFCFFFC
_LONG_ELEMENT = struct.Struct("<HH2s2xL")  # group, element, VR, reserved, 32-bit length
_DTYPES = {(8, 0): np.dtype("<u1"), (8, 1): np.dtype("<i1"), (16, 0): np.dtype("<u2"), (16, 1): np.dtype("<i2")}


class Unsupported(Exception):
    """The file is outside the fast path's scope: read the series with pydicom."""


class FastDataset:
    """Read access shaped like a pydicom Dataset's (``get``, ``in``, attributes) to converted values."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, object]) -> None:
        self.values = values

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.values

    def get(self, keyword: str, default: object = None) -> object:
        return self.values.get(keyword, default)

    def __getattr__(self, keyword: str) -> object:
        try:
            return self.values[keyword]
        except KeyError:
            raise AttributeError(keyword) from None


@dataclass(frozen=True, slots=True)
class FastFile:
    """One file the fast path can read: its header values and where its pixel bytes are."""

    path: str
    dataset: FastDataset
    pixel_offset: int  # file offset of the pixel element's value
    dtype: np.dtype
    rows: int
    cols: int
    bits_shift: int  # BitsAllocated - BitsStored
    pixel_end: int  # file offset just after the pixel element's value
    size: int  # file size; bytes between pixel_end and size must be one trailing padding element


def _multi_string(text: str) -> list[str]:
    """pydicom's ``multi_string`` split (trailing spaces and NULs removed first)."""
    return text.rstrip(" \x00").split("\\")


def _convert(keyword: str, element: RawElement) -> object:
    """One raw value converted as pydicom converts it, or :class:`Unsupported`."""
    vr, raw = element
    if vr != _VR_OF[keyword]:
        raise Unsupported(f"{keyword}: VR {vr}, expected {_VR_OF[keyword]}")
    if vr == "US":
        if len(raw) != 2:
            raise Unsupported(f"{keyword}: {len(raw)} bytes")
        return int.from_bytes(raw, "little")
    if not raw or not raw.isascii():
        raise Unsupported(f"{keyword}: empty or not ASCII")
    text = raw.decode("ascii")
    if vr == "DS":
        parts = _multi_string(text.strip())
        if any(not part.strip() for part in parts):
            raise Unsupported(f"{keyword}: empty DS value")
        try:
            numbers = [float(part) for part in parts]  # DSfloat(text) is float(text)
        except ValueError as e:
            raise Unsupported(f"{keyword}: {text!r}") from e
        return numbers[0] if len(numbers) == 1 else numbers
    if vr == "IS":
        if _multi_string(text.strip()) != ["1"]:
            raise Unsupported(f"{keyword}: {text!r}")
        return 1
    if vr == "CS":
        parts = _multi_string(text)
        return parts[0] if len(parts) == 1 else parts
    raise Unsupported(f"{keyword}: VR {vr}")


def read_fast_file(path: str) -> FastFile:
    """Read one file's header values and locate its pixel bytes.

    Raises:
        Unsupported: the file is outside the fast path's scope (see the module docstring).
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(HEAD_BYTES)
    header = read_fast_header(head, size, _SELECTION)
    if header is None or header.transfer_syntax != EXPLICIT_VR_LITTLE_ENDIAN:
        raise Unsupported("not a plain explicit VR little endian Part 10 file")
    values = {keyword: _convert(keyword, element) for keyword, element in header.values.items()}
    if any(keyword not in values for keyword in _REQUIRED):
        raise Unsupported("image pixel module incomplete")
    rows, cols = values["Rows"], values["Columns"]
    bits_allocated, bits_stored = values["BitsAllocated"], values["BitsStored"]
    dtype = _DTYPES.get((bits_allocated, values["PixelRepresentation"]))
    if (
        dtype is None
        or values["SamplesPerPixel"] != 1
        or values["PhotometricInterpretation"] not in _GREY
        or not 1 <= bits_stored <= bits_allocated
        or values["HighBit"] != bits_stored - 1
        or not rows
        or not cols
    ):
        raise Unsupported("not a single-frame 8 / 16-bit greyscale image")

    offset = header.pixel_offset
    if offset + _LONG_ELEMENT.size > len(head):
        raise Unsupported("pixel element header outside the first read")
    group, element, vr, length = _LONG_ELEMENT.unpack_from(head, offset)
    expected = rows * cols * dtype.itemsize
    pixel_end = offset + _LONG_ELEMENT.size + length
    if (group << 16 | element) != _PIXEL_DATA_TAG or vr not in (b"OB", b"OW") or length not in (
        expected, expected + expected % 2
    ) or not (pixel_end == size or pixel_end + _LONG_ELEMENT.size <= size):
        # truncated, oversized or encapsulated: pydicom decides
        raise Unsupported("pixel data element is not exactly one uncompressed frame")
    return FastFile(path=path, dataset=FastDataset(values), pixel_offset=offset + _LONG_ELEMENT.size,
                    dtype=dtype, rows=rows, cols=cols, bits_shift=bits_allocated - bits_stored,
                    pixel_end=pixel_end, size=size)


def read_fast_pixels(fast_file: FastFile) -> np.ndarray:
    """The ``(rows, cols)`` stored values, as ``Dataset.pixel_array`` returns them for this file.

    Raises:
        Unsupported: the file is shorter than when its header was read, or the pixel element is
            followed by anything but one trailing padding element.
        OSError: the file cannot be opened or read.
    """
    pixels = np.empty(fast_file.rows * fast_file.cols, dtype=fast_file.dtype)
    target = memoryview(pixels).cast("B")
    with open(fast_file.path, "rb", buffering=0) as handle:
        handle.seek(fast_file.pixel_offset)
        filled = 0
        while filled < len(target):
            count = handle.readinto(target[filled:])
            if not count:
                raise Unsupported("file shorter than when its header was read")
            filled += count
        if fast_file.pixel_end != fast_file.size:
            handle.seek(fast_file.pixel_end)
            tail = handle.read(_LONG_ELEMENT.size)
            if len(tail) != _LONG_ELEMENT.size:
                raise Unsupported("file shorter than when its header was read")
            group, element, vr, length = _LONG_ELEMENT.unpack(tail)
            if (group << 16 | element) != _TRAILING_PADDING_TAG or vr != b"OB" or (
                fast_file.pixel_end + _LONG_ELEMENT.size + length != fast_file.size
            ):
                raise Unsupported("elements after the pixel data")
    if fast_file.bits_shift:
        # the unused high bits carry no value (PS3.5 8.1.1): shift them out, as pydicom does
        np.left_shift(pixels, fast_file.bits_shift, out=pixels)
        np.right_shift(pixels, fast_file.bits_shift, out=pixels)
    return pixels.reshape(fast_file.rows, fast_file.cols)
