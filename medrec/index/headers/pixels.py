"""Check that a DICOM file's pixel bytes are all there, without decoding them.

What pydicom does not offer is a check that the pixel bytes are all there without decoding them,
so that part is written here: the Pixel Data element header is parsed at the offset where pydicom
stopped, its length is compared with Rows x Columns x SamplesPerPixel x NumberOfFrames x
BitsAllocated / 8 (native syntaxes) and with the bytes left in the file, and encapsulated fragments
are walked item by item (a seek per fragment) up to the sequence delimiter.
"""

from __future__ import annotations

import functools
import os
import struct
import warnings

import pydicom
from pydicom.uid import UID

from medrec.index.headers.elements import (
    _EXPLICIT_LONG_VRS,
    _ITEM_TAG,
    _SEQUENCE_DELIMITER_TAG,
    _UNDEFINED_LENGTH,
    _element_cut_by_end_of_file,
)
from medrec.index.headers.values import _int, _text

_PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
_PIXEL_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"}


def _check_pixel_data(
    path: str,
    handle,  # binary file
    head: bytes,
    dataset,  # pydicom Dataset
    stop_offset: int,
    size: int,
    transfer_syntax: str,
    file_warnings: list[str],
) -> tuple[str, str] | None:
    """Return (code, reason) when the pixel data is absent, cut off or shorter than the header says."""
    sop_class = _text(dataset, "SOPClassUID") or _text(dataset.file_meta or {}, "MediaStorageSOPClassUID")
    sop_name = _uid_name(sop_class) if sop_class else "unknown SOP class"
    syntax = _uid(transfer_syntax) if transfer_syntax else None
    if syntax is not None and syntax.is_deflated:
        return _check_deflated_pixel_data(path, dataset, file_warnings)
    element = _read_pixel_element_header(handle, head, stop_offset, dataset)
    if element is None:
        cut = _element_cut_by_end_of_file(handle, head, size, dataset)
        return _no_pixel_element(dataset, sop_name, size, cut)
    tag, length, value_offset = element
    rows, cols = _int(dataset, "Rows"), _int(dataset, "Columns")
    if not rows or not cols:
        held = "an encapsulated" if length == _UNDEFINED_LENGTH else f"a {length}-byte"
        missing = "no Rows/Columns" if rows is None and cols is None else f"Rows={rows}, Columns={cols}"
        return (
            "missing_geometry",
            f"missing Rows/Columns: {sop_name} with {held} {_PIXEL_TAGS[tag]} element but {missing}; "
            "image size unknown",
        )
    encapsulated = length == _UNDEFINED_LENGTH
    if encapsulated:
        return _walk_fragments(handle, value_offset, size, dataset)
    bytes_in_file = size - value_offset
    if bytes_in_file < length:
        return (
            "truncated",
            f"truncated: {_PIXEL_TAGS[tag]} declares {length} bytes but the file holds only {bytes_in_file} "
            f"({length - bytes_in_file} missing)",
        )
    if syntax is not None and syntax.is_compressed:
        # a compressed syntax with a defined-length pixel element is malformed but sometimes seen
        file_warnings.append("compressed transfer syntax with defined-length pixel data")
        return None
    expected = expected_pixel_bytes(
        rows,
        cols,
        _int(dataset, "SamplesPerPixel") or 1,
        max(1, _int(dataset, "NumberOfFrames") or 1),
        _int(dataset, "BitsAllocated") or (32 if tag == 0x7FE00008 else 64 if tag == 0x7FE00009 else 16),
        _text(dataset, "PhotometricInterpretation"),
    )
    if length < expected:
        return (
            "truncated",
            f"truncated: {_PIXEL_TAGS[tag]} holds {length} bytes but Rows x Columns x SamplesPerPixel x "
            f"NumberOfFrames x BitsAllocated/8 = {expected}",
        )
    return None


@functools.lru_cache(maxsize=256)
def _uid(value: str) -> UID:
    """A UID object; cached because an archive holds a handful of SOP classes and syntaxes."""
    return UID(value)


@functools.lru_cache(maxsize=256)
def _uid_name(value: str) -> str:
    return UID(value).name


def expected_pixel_bytes(
    rows: int, cols: int, samples_per_pixel: int, frames: int, bits_allocated: int, photometric: str = ""
) -> int:
    """Uncompressed pixel data size in bytes (no odd-length padding), as in DICOM PS3.5 8.1.1.

    1-bit data is packed; YBR_FULL_422 stores two luminance and two chroma samples per pixel pair.
    """
    length = rows * cols * samples_per_pixel * frames
    if bits_allocated == 1:
        return length // 8 + (length % 8 > 0)
    length *= bits_allocated // 8
    if photometric.strip().upper() == "YBR_FULL_422":
        length = length // 3 * 2
    return length


def _read_pixel_element_header(handle, head: bytes, offset: int, dataset) -> tuple[int, int, int] | None:
    """(tag, length, value offset) of the top-level pixel element at ``offset``, or None if absent.

    ``head`` is the start of the file: when it holds the element header no further read is needed.
    """
    if offset + 12 <= len(head):
        raw = head[offset : offset + 12]
    else:
        handle.seek(offset)
        raw = handle.read(12)
    if len(raw) < 8:
        return None
    little = dataset.original_encoding[1] if dataset.original_encoding[1] is not None else True
    endian = "<" if little else ">"
    group, element = struct.unpack(f"{endian}HH", raw[:4])
    tag = group << 16 | element
    if tag not in _PIXEL_TAGS:
        return None
    vr = raw[4:6]
    # decide from the bytes, not the transfer syntax: some writers switch to implicit VR mid-file
    if vr not in _PIXEL_VRS:
        return tag, struct.unpack(f"{endian}L", raw[4:8])[0], offset + 8
    if vr in _EXPLICIT_LONG_VRS:
        if len(raw) < 12:
            return tag, _UNDEFINED_LENGTH - 1, offset + 12  # header itself cut: reported as truncated
        return tag, struct.unpack(f"{endian}L", raw[8:12])[0], offset + 12
    return tag, struct.unpack(f"{endian}H", raw[6:8])[0], offset + 8


def _walk_fragments(handle, offset: int, size: int, dataset) -> tuple[str, str] | None:
    """Walk the items of encapsulated pixel data; a file cut before the delimiter is truncated."""
    handle.seek(offset)
    position = offset
    items = 0
    while True:
        raw = handle.read(8)
        if len(raw) < 8:
            return (
                "truncated",
                f"truncated: encapsulated pixel data ends after {items} item(s) without a sequence delimiter "
                f"(file is {size} bytes)",
            )
        group, element, length = struct.unpack("<HHL", raw)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER_TAG:
            break
        if tag != _ITEM_TAG:
            return "corrupt_pixel_data", f"corrupt encapsulated pixel data: unexpected tag {tag:08X} at byte {position}"
        if length == _UNDEFINED_LENGTH or position + 8 + length > size:
            return (
                "truncated",
                f"truncated: encapsulated fragment {items} declares {length} bytes but the file ends "
                f"{size - position - 8} bytes after its start",
            )
        items += 1
        position += 8 + length
        handle.seek(position)
    if items < 2:
        return "corrupt_pixel_data", "corrupt encapsulated pixel data: no compressed fragments after the offset table"
    return None


def _check_deflated_pixel_data(path: str, dataset, file_warnings: list[str]) -> tuple[str, str] | None:
    """Deflated files are decompressed as a whole by pydicom; check the pixel bytes in memory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = pydicom.dcmread(path)
    for tag, name in _PIXEL_TAGS.items():
        if tag in full:
            length = len(full[tag].value or b"")
            expected = expected_pixel_bytes(
                _int(full, "Rows") or 0,
                _int(full, "Columns") or 0,
                _int(full, "SamplesPerPixel") or 1,
                max(1, _int(full, "NumberOfFrames") or 1),
                _int(full, "BitsAllocated") or 16,
                _text(full, "PhotometricInterpretation"),
            )
            if length < expected:
                return "truncated", f"truncated: deflated {name} holds {length} bytes, header implies {expected}"
            return None
    sop_class = _text(dataset, "SOPClassUID")
    sop_name = _uid_name(sop_class) if sop_class else "unknown SOP class"
    return _no_pixel_element(full, sop_name, os.path.getsize(path), None)


def _no_pixel_element(dataset, sop_name: str, size: int, cut: str | None) -> tuple[str, str]:
    """(code, reason) for a file without a pixel element: cut short, or a complete header that is no image.

    A file that ends inside an element, or whose header has Rows / Columns but stops before the
    pixel data, is truncated; a complete header without Rows / Columns is not an image at all
    (RT structure sets and reports, DICOMDIR test records, headers stripped of their pixels).
    """
    if cut is not None:
        return "truncated", f"truncated: file ends inside {cut} ({size} bytes), before any pixel data"
    rows, cols = _int(dataset, "Rows"), _int(dataset, "Columns")
    if rows is not None or cols is not None:
        return (
            "truncated",
            f"truncated: file ends before the pixel data ({sop_name} with Rows {rows} x Columns {cols} but no "
            f"Pixel Data element in {size} bytes)",
        )
    header = "header of unknown SOP class" if sop_name == "unknown SOP class" else f"{sop_name} header"
    return "no_pixel_data", f"no pixel data: a complete {header} without Rows/Columns/Pixel Data: not an image"
