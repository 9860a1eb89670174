"""Walk a DICOM file's element headers to find where a file without pixel data is cut short.

Element and item tags and the value representations with a 4-byte length live here; the pixel
check in :mod:`medrec.index.headers.pixels` reads them too.
"""

from __future__ import annotations

import mmap
import struct

_ITEM_TAG = 0xFFFEE000
_SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
_ITEM_DELIMITER_TAG = 0xFFFEE00D
_UNDEFINED_LENGTH = 0xFFFFFFFF
_EXPLICIT_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


class _EndOfFileInside(Exception):
    """The file ends inside the element (or sequence item) named in the message."""


class _Unfollowed(Exception):
    """A structure the completeness walk does not follow (pydicom read it; it counts as whole)."""


_MAX_SEQUENCE_DEPTH = 32


def _element_cut_by_end_of_file(handle, head: bytes, size: int, dataset) -> str | None:
    """Where a file without pixel data ends inside an element (``(0020,000E) at byte 412``), else None.

    pydicom reads a value cut short by the end of the file without complaint, so a header cut
    before Rows / Columns would pass for a complete header-only file. Every element header and
    length is walked from the start of the file (file meta explicit VR little endian, then the
    dataset's own encoding), into undefined-length sequences and items; defined lengths are
    skipped. Deflated datasets are not walked (pydicom inflates them whole).
    """
    buffer = head if size <= len(head) else mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    implicit = bool(dataset.original_encoding[0])
    little = dataset.original_encoding[1] is not False
    start = 132 if head[128:132] == b"DICM" else 0
    try:
        _walk_elements(buffer, start, size, implicit, little, in_file_meta=True)
    except _EndOfFileInside as e:
        return str(e)
    except (_Unfollowed, struct.error):
        return None
    finally:
        if buffer is not head:
            buffer.close()
    return None


def _walk_elements(
    buffer,  # bytes or mmap
    position: int,
    size: int,
    implicit: bool,
    little: bool,
    depth: int = 0,
    in_item: bool = False,
    in_file_meta: bool = False,
) -> int:
    """Walk the elements from ``position`` to the end of the file (or of an undefined-length item).

    With ``in_file_meta`` the leading group 0002 elements are read as explicit VR little endian
    (as pydicom reads file meta, with or without a preamble), the rest in the dataset's encoding.
    """
    if depth > _MAX_SEQUENCE_DEPTH:
        raise _Unfollowed("sequences nested too deep")
    endian = "<" if little else ">"
    while position < size:
        if position + 8 > size:
            raise _EndOfFileInside(f"an element header at byte {position}")
        group, element = struct.unpack_from("<HH" if in_file_meta else f"{endian}HH", buffer, position)
        if in_file_meta and group != 0x0002:
            in_file_meta = False  # file meta done: the dataset follows in its own encoding
            group, element = struct.unpack_from(f"{endian}HH", buffer, position)
        tag = group << 16 | element
        if tag == _ITEM_DELIMITER_TAG and in_item:
            return position + 8
        if group == 0xFFFE:
            raise _Unfollowed(f"delimiter {tag:08X} outside its sequence")
        element_endian = "<" if in_file_meta else endian
        if implicit and not in_file_meta:
            length = struct.unpack_from(f"{endian}L", buffer, position + 4)[0]
            value_offset = position + 8
        else:
            vr = bytes(buffer[position + 4 : position + 6])
            if not (vr.isalpha() and vr.isupper()):
                raise _Unfollowed(f"no explicit VR at byte {position}")
            if vr in _EXPLICIT_LONG_VRS:
                if position + 12 > size:
                    raise _EndOfFileInside(f"({group:04X},{element:04X}) at byte {position}")
                length = struct.unpack_from(f"{element_endian}L", buffer, position + 8)[0]
                value_offset = position + 12
            else:
                length = struct.unpack_from(f"{element_endian}H", buffer, position + 6)[0]
                value_offset = position + 8
        if length == _UNDEFINED_LENGTH:
            position = _walk_sequence(buffer, value_offset, size, implicit, little, depth + 1, (group, element))
        elif value_offset + length > size:
            raise _EndOfFileInside(f"({group:04X},{element:04X}) at byte {position}")
        else:
            position = value_offset + length
    if in_item:
        raise _EndOfFileInside(f"a sequence item ending at byte {size} without its delimiter")
    return position


def _walk_sequence(
    buffer,  # bytes or mmap
    position: int,
    size: int,
    implicit: bool,
    little: bool,
    depth: int,
    owner: tuple[int, int],
) -> int:
    """Walk the items of an undefined-length sequence up to its delimiter; return the offset after it."""
    endian = "<" if little else ">"
    name = f"({owner[0]:04X},{owner[1]:04X})"
    while True:
        if position + 8 > size:
            raise _EndOfFileInside(f"sequence {name}, before its delimiter")
        group, element, length = struct.unpack_from(f"{endian}HHL", buffer, position)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER_TAG:
            return position + 8
        if tag != _ITEM_TAG:
            raise _Unfollowed(f"tag {tag:08X} inside sequence {name}")
        position += 8
        if length == _UNDEFINED_LENGTH:
            position = _walk_elements(buffer, position, size, implicit, little, depth + 1, in_item=True)
        elif position + length > size:
            raise _EndOfFileInside(f"an item of sequence {name} at byte {position - 8}")
        else:
            position += length
