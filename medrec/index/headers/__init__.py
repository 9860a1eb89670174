"""Walk a scan folder and read every file's DICOM header, never its pixels.

Each file becomes one :class:`DicomHeader` (a readable DICOM image), one
:class:`medrec.index.nifti.NiftiSample` or one :class:`FileProblem` (why it cannot be used).
Header reading runs serially for small inputs and in a process pool for large ones.

One module per step: :mod:`~medrec.index.headers.walk` lists the files of the scan folder,
:mod:`~medrec.index.headers.reading` classifies each file (serially or in a process pool),
:mod:`~medrec.index.headers.dicom` reads a DICOM header into a :class:`DicomHeader`,
:mod:`~medrec.index.headers.pixels` checks that the pixel bytes are all there without decoding
them, :mod:`~medrec.index.headers.elements` finds where a file without pixel data is cut short,
and :mod:`~medrec.index.headers.values` reads header values that may be blank or malformed.
"""

from __future__ import annotations

from medrec.index.headers.dicom import HEADER_TAGS, DicomHeader, RawValues
from medrec.index.headers.pixels import expected_pixel_bytes
from medrec.index.headers.reading import (
    CHUNK_SIZE,
    PARALLEL_MIN_CORES,
    PARALLEL_MIN_FILES,
    ReadOptions,
    inspect_file,
    inspect_files,
    read_headers,
    resolve_workers,
)
from medrec.index.headers.walk import (
    NIFTI_SUFFIXES,
    OS_JUNK_DIRS,
    OS_JUNK_NAMES,
    is_nifti_path,
    is_os_junk,
    walk_files,
)

__all__ = [
    "CHUNK_SIZE",
    "HEADER_TAGS",
    "NIFTI_SUFFIXES",
    "OS_JUNK_DIRS",
    "OS_JUNK_NAMES",
    "PARALLEL_MIN_CORES",
    "PARALLEL_MIN_FILES",
    "DicomHeader",
    "RawValues",
    "ReadOptions",
    "expected_pixel_bytes",
    "inspect_file",
    "inspect_files",
    "is_nifti_path",
    "is_os_junk",
    "read_headers",
    "resolve_workers",
    "walk_files",
]
