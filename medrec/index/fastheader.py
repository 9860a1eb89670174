"""Read the index's header values from explicit VR little endian DICOM files without pydicom.

Why this is hand-written: ``pydicom.dcmread(stop_before_pixels=True, specific_tags=...)`` still
walks the file element by element through a file object (a ``read``/``tell``/``seek`` and a tag
object per element) and builds a Dataset with its file meta; for the small slices of a typical
archive that costs about as much as reading the whole file with pixels. The common case, a Part 10
file (preamble + ``DICM``) whose dataset is explicit VR little endian, is simple enough to walk in
one buffer with ``struct.unpack_from``, keeping only the raw bytes of :data:`WANTED_TAGS`.

Anything unusual returns ``None`` and the caller reads the file with pydicom as before: implicit VR,
big endian, deflate, no preamble, an unknown or implicit VR, an undefined-length element other than
a sequence, a sequence among the wanted tags, a value pydicom would decode differently (non-ASCII
text, an empty numeric string), a Specific Character Set other than ASCII / ISO_IR 100 / ISO_IR 192,
a header larger than the buffer, or any length that runs past the end of the file.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from pydicom.dataelem import empty_value_for_VR

# Bytes read in one go; headers of image files are far smaller.
HEAD_BYTES = 16384

# Transfer syntaxes whose dataset (everything before Pixel Data) is explicit VR little endian.
# Deflated explicit VR LE (1.2.840.10008.1.2.1.99) is not: its dataset is compressed.
EXPLICIT_LE_SYNTAXES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.5",  # RLE Lossless
    }
)
_PLAIN_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"})

_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_CHARSET_TAG = 0x00080005
_TRANSFER_SYNTAX_TAG = 0x00020010
_MEDIA_SOP_CLASS_TAG = 0x00020002
_ITEM_TAG = 0xFFFEE000
_ITEM_DELIMITER_TAG = 0xFFFEE00D
_SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
_UNDEFINED_LENGTH = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
     b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)  # fmt: skip


def _swap(tag: int) -> int:
    return (tag & 0xFFFF) << 16 | tag >> 16


_SWAPPED_PIXEL_TAGS = frozenset(_swap(tag) for tag in _PIXEL_TAGS)
_SWAPPED_CHARSET_TAG = _swap(_CHARSET_TAG)
_FOREIGN_GROUPS = frozenset({0xFFFE, 0x0002})  # item delimiters and file meta never belong in the dataset
_PIXEL = "<pixel data>"  # markers in HeaderSelection.special
_CHARSET = "<specific character set>"
_US_VRS = frozenset({"US", "SS", "UN", "OW", "OB"})

_HEADER = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length
_SWAPPED_HEADER = struct.Struct("<L2sH")  # element << 16 | group, VR, 16-bit length
_LONG_LENGTH = struct.Struct("<L")
_ITEM_HEADER = struct.Struct("<HHL")


class NeedsPydicom(Exception):
    """A raw value that only pydicom's own conversion decodes faithfully."""


def decode_raw_value(  # str | list[str] | int | list[int] | None
    keyword: str, vr: str | None, raw: bytes, is_little_endian: bool, us_keywords: frozenset[str]
):
    """Decode one raw header value the way the index reads it (shared with the pydicom path).

    US-type keywords become an int (or a list of ints), text becomes a stripped string split on
    backslashes (a list when there are several values).

    Raises:
        NeedsPydicom: for non-ASCII text, which needs the character set handling of pydicom.
    """
    if keyword in us_keywords and vr in (None, *_US_VRS):
        if len(raw) < 2:
            return None
        endian = "<" if is_little_endian else ">"
        numbers = struct.unpack(f"{endian}{len(raw) // 2}H", raw[: len(raw) // 2 * 2])
        return numbers[0] if len(numbers) == 1 else list(numbers)
    if not raw.isascii():
        raise NeedsPydicom(keyword)
    if b"\\" not in raw:  # one value, the common case
        return raw.decode("ascii").strip(" \x00")
    text = raw.decode("ascii").strip(" \x00")
    parts = [part.strip(" \x00") for part in text.split("\\")]
    return parts[0] if len(parts) == 1 else parts


@dataclass(frozen=True, slots=True)
class FastHeader:
    """Decoded header values of one file, shaped like the pydicom path's view of it.

    ``get``/``in``/``file_meta``/``original_encoding`` mirror :class:`medrec.index.headers.RawValues`.
    """

    values: Mapping[str, object]
    file_meta: Mapping[str, str]
    transfer_syntax: str
    pixel_offset: int  # where pydicom would have stopped: the Pixel Data tag, or the end of the file
    original_encoding: tuple[bool, bool] = (False, True)

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.values

    def get(self, keyword: str):  # str | list[str] | int | list[int] | None
        return self.values.get(keyword)


class RawElement(NamedTuple):
    """A kept value as it is in the file, for a :class:`HeaderSelection` with ``raw_values=True``."""

    vr: str
    value: bytes


class HeaderSelection:
    """The tags to keep (tag number -> keyword) and the keywords decoded as unsigned shorts.

    With ``raw_values=True`` nothing is decoded: each kept value is a :class:`RawElement` (its
    explicit VR and bytes), for callers that must convert values exactly as pydicom would
    (the loader's fast path checks the VR of every value it uses).
    """

    __slots__ = ("by_swapped_tag", "raw_values", "special", "text_by_swapped_tag", "us_keywords")

    def __init__(
        self, keywords_by_tag: Mapping[int, str], us_keywords: frozenset[str], raw_values: bool = False
    ) -> None:
        self.by_swapped_tag = {_swap(tag): keyword for tag, keyword in keywords_by_tag.items()}
        self.us_keywords = us_keywords
        self.raw_values = raw_values
        # the text tags, decoded inline by the walker when they hold one plain ASCII value
        self.text_by_swapped_tag = {} if raw_values else {
            swapped: keyword for swapped, keyword in self.by_swapped_tag.items() if keyword not in us_keywords
        }
        # every tag the walker stops at: the wanted ones, the pixel tags, Specific Character Set
        self.special: dict[int, str] = {
            **self.by_swapped_tag,
            **{tag: _PIXEL for tag in _SWAPPED_PIXEL_TAGS},
            _SWAPPED_CHARSET_TAG: _CHARSET,
        }


def read_fast_header(head: bytes, size: int, selection: HeaderSelection) -> FastHeader | None:
    """Parse the file meta and the dataset up to Pixel Data from the first bytes of a file.

    Args:
        head: the first bytes of the file (at least the 132-byte preamble + ``DICM``).
        size: the file size in bytes (lengths must stay inside it).
        selection: the values to keep.

    Returns:
        The values, or ``None`` when the file needs pydicom (see the module docstring).
    """
    try:
        return _read(head, size, selection)
    except (struct.error, NeedsPydicom, UnicodeDecodeError, IndexError):
        return None


def _read(head: bytes, size: int, selection: HeaderSelection) -> FastHeader | None:
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    end = min(len(head), size)
    # file meta: always explicit VR little endian, group 0002
    position = 132
    meta: dict[int, bytes] = {}
    while True:
        if position + 8 > end:
            return None
        group, element, vr, length = _HEADER.unpack_from(head, position)
        if group != 0x0002:
            break
        if vr in _LONG_VRS:
            length = _LONG_LENGTH.unpack_from(head, position + 8)[0]
            value_at = position + 12
        elif vr in _SHORT_VRS:
            value_at = position + 8
        else:
            return None
        if length == _UNDEFINED_LENGTH or value_at + length > end:
            return None
        meta[group << 16 | element] = head[value_at : value_at + length]
        position = value_at + length
    syntax_raw = meta.get(_TRANSFER_SYNTAX_TAG)
    if syntax_raw is None or not syntax_raw.isascii():
        return None
    transfer_syntax = syntax_raw.decode("ascii").rstrip("\0 ")
    if transfer_syntax not in EXPLICIT_LE_SYNTAXES:
        return None
    file_meta = {"TransferSyntaxUID": transfer_syntax}
    sop_class_raw = meta.get(_MEDIA_SOP_CLASS_TAG)
    if sop_class_raw is not None:
        if not sop_class_raw.isascii():
            return None
        file_meta["MediaStorageSOPClassUID"] = sop_class_raw.decode("ascii").rstrip("\0 ")

    values: dict[str, object] = {}
    special, text_tags, keep_raw = selection.special, selection.text_by_swapped_tag, selection.raw_values
    unpack_header, unpack_long = _SWAPPED_HEADER.unpack_from, _LONG_LENGTH.unpack_from
    short_vrs, long_vrs = _SHORT_VRS, _LONG_VRS
    # One pass over the dataset. Most elements are skipped after two set look-ups; only the
    # wanted tags, the pixel tags and Specific Character Set take the slower branch.
    while position != size:  # a file without pixel data ends here: pydicom reads to the end
        # the tag read as one little-endian uint32 is element << 16 | group
        swapped_tag, vr, length = unpack_header(head, position)
        if vr in short_vrs:
            value_at = position + 8
        elif vr in long_vrs:
            length = unpack_long(head, position + 8)[0]
            value_at = position + 12
        elif swapped_tag in _SWAPPED_PIXEL_TAGS:
            break  # pixel data with an odd VR: the caller's pixel check reads its header
        else:
            return None  # implicit VR or an unknown VR
        keyword = special.get(swapped_tag)
        if keyword is None:
            if (swapped_tag & 0xFFFF) in _FOREIGN_GROUPS:
                return None  # a delimiter or meta element inside the dataset: let pydicom judge
            if length == _UNDEFINED_LENGTH:
                if vr != b"SQ":
                    return None
                position = _skip_sequence(head, value_at, end)
                continue
            position = value_at + length
            if position > end:
                return None
            continue
        if keyword is _PIXEL:
            break
        if length == _UNDEFINED_LENGTH or value_at + length > end:
            return None
        if keyword is _CHARSET:
            charset = head[value_at : value_at + length].decode("ascii").strip(" \x00")
            if charset not in _PLAIN_CHARSETS:
                return None
        elif vr == b"SQ":
            return None  # functional groups: pydicom builds the nested datasets
        else:
            raw = head[value_at : value_at + length]
            if length and swapped_tag in text_tags and raw.isascii() and b"\\" not in raw:
                values[keyword] = raw.decode("ascii").strip(" \x00")  # one plain value: as decode_raw_value
            elif keep_raw:
                values[keyword] = RawElement(vr.decode("ascii"), raw)
            else:
                vr_text = vr.decode("ascii")
                if not length:
                    raw = empty_value_for_VR(vr_text, raw=True)
                    if not isinstance(raw, bytes):
                        return None
                values[keyword] = decode_raw_value(keyword, vr_text, raw, True, selection.us_keywords)
        position = value_at + length
    pixel_offset = position  # the Pixel Data tag, or the end of the file
    return FastHeader(values=values, file_meta=file_meta, transfer_syntax=transfer_syntax, pixel_offset=pixel_offset)


def _skip_sequence(head: bytes, position: int, end: int) -> int:
    """Offset just after an undefined-length sequence whose items start at ``position``."""
    while True:
        group, element, length = _ITEM_HEADER.unpack_from(head, position)
        tag = group << 16 | element
        position += 8
        if tag == _SEQUENCE_DELIMITER_TAG:
            return position
        if tag != _ITEM_TAG:
            raise NeedsPydicom("unexpected tag in sequence")
        if length == _UNDEFINED_LENGTH:
            position = _skip_item(head, position, end)
        elif position + length > end:
            raise NeedsPydicom("item past the buffer")
        else:
            position += length


def _skip_item(head: bytes, position: int, end: int) -> int:
    """Offset just after the delimiter of an undefined-length item whose elements start at ``position``."""
    while True:
        group, element, vr, length = _HEADER.unpack_from(head, position)
        tag = group << 16 | element
        if tag == _ITEM_DELIMITER_TAG:
            return position + 8
        if group == 0xFFFE:
            raise NeedsPydicom("unexpected delimiter in item")
        if vr in _LONG_VRS:
            length = _LONG_LENGTH.unpack_from(head, position + 8)[0]
            position += 12
        elif vr in _SHORT_VRS:
            position += 8
        else:
            raise NeedsPydicom("unknown VR in item")
        if length == _UNDEFINED_LENGTH:
            if vr != b"SQ":
                raise NeedsPydicom("undefined length outside a sequence")
            position = _skip_sequence(head, position, end)
        elif position + length > end:
            raise NeedsPydicom("element past the buffer")
        else:
            position += length
