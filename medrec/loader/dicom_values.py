"""Pixel data to real-world values: decoded per file, then the modality LUT and MONOCHROME1 rule per frame.

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
"""

from __future__ import annotations

import math

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut

from medrec.errors import DicomError
from medrec.loader.dicom_header import _as_dicom_error, _FileHeader, _Frame

LUMINANCE_WEIGHTS = np.array([0.299, 0.587, 0.114])
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


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
