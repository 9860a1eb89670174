"""Encoding synthetic DICOM slices: one slice's values set on its series' header, and the Part 10 bytes of it.

:class:`SeriesEncoder` encodes the header a series' slices share once and only the per-slice elements
for each slice; its bytes are those of ``apply_slice`` + :func:`encode` (pydicom), byte for byte.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from medrec import __version__
from medrec.synth.plan import make_uid

IMPLEMENTATION_CLASS_UID = make_uid("implementation", "medrec")
IMPLEMENTATION_VERSION_NAME = f"MEDREC_{__version__}"[:16]


@dataclass(frozen=True)
class SliceValues:
    """The header values and pixels that differ between the slices of one series."""

    sop_instance_uid: str
    instance_number: int
    position: list[str] | None  # ImagePositionPatient as Decimal Strings; None for radiographs
    slice_location: str | None
    pixels: np.ndarray  # rows x cols, stored dtype


def apply_slice(ds: Dataset, values: SliceValues) -> Dataset:
    """Set one slice's values (and its file meta) on the series template ``ds``."""
    ds.InstanceNumber = values.instance_number
    ds.SOPInstanceUID = values.sop_instance_uid
    if values.position is not None:
        ds.ImagePositionPatient = values.position
        ds.SliceLocation = values.slice_location
    ds.PixelData = values.pixels.tobytes()
    ds.SmallestImagePixelValue = int(values.pixels.min())
    ds.LargestImagePixelValue = int(values.pixels.max())
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = values.sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    return ds


def encode(ds: Dataset) -> bytes:
    """The Part 10 bytes of ``ds`` (preamble, DICM, file meta, Explicit VR Little Endian body)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# Elements that change from slice to slice; everything else in a series is encoded once.
_PER_SLICE_TAGS = (
    0x00080018,  # SOPInstanceUID
    0x00200013,  # InstanceNumber
    0x00200032,  # ImagePositionPatient
    0x00201041,  # SliceLocation
    0x00280106,  # SmallestImagePixelValue
    0x00280107,  # LargestImagePixelValue
    0x7FE00010,  # PixelData
)
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})


def _element(tag: int, vr: str, value: bytes) -> bytes:
    """One Explicit VR Little Endian element."""
    if len(value) % 2:
        value += b"\x00" if vr in ("UI", "OB") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _encode_elements(dataset: Dataset, encodings: list[str]) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, dataset, parent_encoding=encodings)
    return fp.getvalue()


class SeriesEncoder:
    """Encode the slices of one series without re-encoding the ~80 elements they share.

    pydicom re-encodes every element of every file, which made writing a cohort several times
    slower than rendering it. The template is encoded once, split at the per-slice elements; those
    few (UIDs, numbers, positions, pixels) are encoded directly. The result is byte-identical to
    ``apply_slice`` + ``ds.save_as(buffer, enforce_file_format=True)`` (checked by the tests).
    """

    def __init__(self, template: Dataset, first: SliceValues) -> None:
        ds = apply_slice(template, first)
        self.signed = int(ds.get("PixelRepresentation", 0)) == 1
        self.sop_class = str(ds.SOPClassUID).encode("ascii")
        encodings = convert_encodings(ds.get("SpecificCharacterSet", "ISO_IR 100"))
        self.segments: list[bytes | int] = []
        run = Dataset()
        for element in ds:
            tag = int(element.tag)
            if tag in _PER_SLICE_TAGS:
                if len(run):
                    self.segments.append(_encode_elements(run, encodings))
                    run = Dataset()
                self.segments.append(tag)
            else:
                run.add(element)
        if len(run):
            self.segments.append(_encode_elements(run, encodings))
        self.preamble = bytes(ds.preamble)

    def _meta(self, sop_instance_uid: str) -> bytes:
        body = b"".join((
            _element(0x00020001, "OB", b"\x00\x01"),
            _element(0x00020002, "UI", self.sop_class),
            _element(0x00020003, "UI", sop_instance_uid.encode("ascii")),
            _element(0x00020010, "UI", ExplicitVRLittleEndian.encode("ascii")),
            _element(0x00020012, "UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            _element(0x00020013, "SH", IMPLEMENTATION_VERSION_NAME.encode("ascii")),
        ))
        return _element(0x00020000, "UL", struct.pack("<I", len(body))) + body

    def encode(self, values: SliceValues) -> bytes:
        """Part 10 bytes of one slice of the series."""
        pixel_format = "<h" if self.signed else "<H"
        per_slice = {
            0x00080018: ("UI", values.sop_instance_uid.encode("ascii")),
            0x00200013: ("IS", str(values.instance_number).encode("ascii")),
            0x00280106: ("SS" if self.signed else "US", struct.pack(pixel_format, int(values.pixels.min()))),
            0x00280107: ("SS" if self.signed else "US", struct.pack(pixel_format, int(values.pixels.max()))),
            0x7FE00010: ("OW", values.pixels.astype(values.pixels.dtype.newbyteorder("<"), copy=False).tobytes()),
        }
        if values.position is not None:
            per_slice[0x00200032] = ("DS", "\\".join(values.position).encode("ascii"))
            per_slice[0x00201041] = ("DS", str(values.slice_location).encode("ascii"))
        parts = [self.preamble, b"DICM", self._meta(values.sop_instance_uid)]
        for segment in self.segments:
            if isinstance(segment, bytes):
                parts.append(segment)
            else:
                vr, value = per_slice[segment]
                parts.append(_element(segment, vr, value))
        return b"".join(parts)
