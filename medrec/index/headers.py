"""Walk a scan folder and read every file's DICOM header, never its pixels.

Each file becomes one :class:`DicomHeader` (a readable DICOM image), one
:class:`medrec.index.nifti.NiftiSample` or one :class:`FileProblem` (why it cannot be used).
Header reading runs serially for small inputs and in a process pool for large ones.

Part 10 files whose dataset is explicit VR little endian are read by the hand-written walker in
:mod:`medrec.index.fastheader` (pydicom builds a file object walk and a Dataset even with
``specific_tags``, which costs as much as a full read of a small slice); every other file, and any
file the walker finds unusual, is read by pydicom (``stop_before_pixels`` with a short tag list).
Either way the values are decoded by the same function. What pydicom does not
offer is a check that the pixel bytes are all there without decoding them, so that part is
written here: the Pixel Data element header is parsed at the offset where pydicom stopped, its
length is compared with Rows x Columns x SamplesPerPixel x NumberOfFrames x BitsAllocated / 8
(native syntaxes) and with the bytes left in the file, and encapsulated fragments are walked
item by item (a seek per fragment) up to the sequence delimiter.
"""

from __future__ import annotations

import functools
import math
import mmap
import os
import re
import struct
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.uid import UID

from medrec.errors import ConfigError
from medrec.index.fastheader import HEAD_BYTES, HeaderSelection, NeedsPydicom, decode_raw_value, read_fast_header
from medrec.index.problems import FileProblem

# Files the operating system drops into folders; they are skipped without a qc row.
OS_JUNK_NAMES: frozenset[str] = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "ehthumbs.db", ".directory"})
OS_JUNK_DIRS: frozenset[str] = frozenset({"__MACOSX", ".Spotlight-V100", ".Trashes", ".fseventsd"})
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")

# Below this many files a process pool costs more than it saves: a spawned worker takes about a
# second to start and import pydicom, while the fast header path reads a file in well under a
# millisecond (8,000 files serially: about two seconds on one core).
PARALLEL_MIN_FILES = 8000
# With two cores or fewer a pool does not pay either: on 2 cores, 20,160 files took 3.50 s with the
# default two processes against 3.43 s serially (benchmarks/results.json, index); the main process
# walks the folder and builds series while the workers read, so they compete for the same cores.
PARALLEL_MIN_CORES = 3
CHUNK_SIZE = 48

_PIXEL_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
_ITEM_TAG = 0xFFFEE000
_SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
_ITEM_DELIMITER_TAG = 0xFFFEE00D
_UNDEFINED_LENGTH = 0xFFFFFFFF
_EXPLICIT_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_PIXEL_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"}
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


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """Per-file reading options passed to the workers."""

    check_nifti_values: bool = True
    scans_root: str = ""


def is_os_junk(name: str) -> bool:
    """True for files that operating systems scatter into folders (.DS_Store, AppleDouble ``._x``)."""
    return name in OS_JUNK_NAMES or name.startswith("._")


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in .nii or .nii.gz (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def walk_files(root: Path, skip: Sequence[Path] = ()) -> tuple[list[str], int]:
    """All files below ``root`` in sorted order (any nesting, any names).

    Args:
        root: the scan folder (or a single file).
        skip: files or folders to leave out (the output folder, the labels file).

    Returns:
        (absolute file paths, number of OS junk files skipped).
    """
    if root.is_file():
        return [str(root.resolve())], 0
    skip_resolved = {str(p.resolve()) for p in skip}
    files: list[str] = []
    junk = 0
    for folder, dirnames, filenames in os.walk(root):
        kept_dirs = []
        for name in sorted(dirnames):
            full = str((Path(folder) / name).resolve())
            if name in OS_JUNK_DIRS:
                junk += sum(len(f) for _, _, f in os.walk(Path(folder) / name))
            elif full not in skip_resolved:
                kept_dirs.append(name)
        dirnames[:] = kept_dirs
        # resolve the folder once and only the files that are links (a realpath per file is
        # a dozen lstat calls; archives hold tens of thousands of files)
        absolute_folder = str(Path(folder).absolute())
        resolved_folder = os.path.realpath(folder)
        for name in sorted(filenames):
            if is_os_junk(name):
                junk += 1
                continue
            full_path = os.path.join(absolute_folder, name)
            if skip_resolved:
                is_link = os.path.islink(full_path)
                resolved = os.path.realpath(full_path) if is_link else os.path.join(resolved_folder, name)
                if resolved in skip_resolved:
                    continue
            files.append(full_path)
    return files, junk


def inspect_files(paths: Sequence[str], options: ReadOptions) -> list[object]:
    """Inspect a chunk of files (the unit of work of one pool task)."""
    return [inspect_file(path, options) for path in paths]


def inspect_file(path: str, options: ReadOptions | None = None) -> object:
    """Classify one file: a DICOM image header, a NIfTI sample, or a problem.

    Never raises for bad input: every failure becomes a :class:`FileProblem`.
    """
    options = options or ReadOptions()
    if is_nifti_path(path):
        try:
            size = os.path.getsize(path)
        except OSError as e:
            return FileProblem(path, "unreadable", f"unreadable: {e.strerror or e}")
        if size == 0:
            return FileProblem(path, "empty_file", "empty file (0 bytes)")
        from medrec.index.nifti import inspect_nifti

        try:
            return inspect_nifti(path, options.scans_root, check_values=options.check_nifti_values)
        except Exception as e:  # noqa: BLE001 - e.g. MemoryError on a huge volume: a qc row, not a crash
            return FileProblem(path, "nifti_unreadable", f"NIfTI unreadable: {type(e).__name__}: {_short(e)}")
    try:
        # one open, one fstat and (for a small slice) one read per file
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return FileProblem(path, "empty_file", "empty file (0 bytes)")
            return _inspect_dicom(path, handle, handle.read(HEAD_BYTES), size)
    except OSError as e:
        return FileProblem(path, "unreadable", f"unreadable: {e.strerror or e}")
    except Exception as e:  # noqa: BLE001 - any parser failure on a user file becomes a qc row
        return FileProblem(path, "dicom_unreadable", f"DICOM header unreadable: {type(e).__name__}: {_short(e)}")


def read_headers(
    paths: Sequence[str],
    options: ReadOptions,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[object]:
    """Inspect many files, in a process pool when there are enough of them.

    Args:
        paths: files to inspect.
        options: reading options.
        workers: process count; ``None`` picks serial below :data:`PARALLEL_MIN_FILES`
            files and up to 8 processes above; ``1`` forces serial reading.
        on_progress: called with the number of files just finished.

    Returns:
        One result per path, in the order of ``paths``.
    """
    n_workers = resolve_workers(workers, len(paths))
    if n_workers <= 1:
        results = []
        for start in range(0, len(paths), CHUNK_SIZE):  # progress per chunk: a bar update costs more than a file
            chunk = paths[start : start + CHUNK_SIZE]
            results.extend(inspect_files(chunk, options))
            if on_progress:
                on_progress(len(chunk))
        return results
    import multiprocessing

    chunks = [list(paths[i : i + CHUNK_SIZE]) for i in range(0, len(paths), CHUNK_SIZE)]
    by_chunk: dict[int, list[object]] = {}
    # spawn, not fork: the parent may run threads (progress bar refresh) that fork would copy mid-lock
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
        futures = {pool.submit(inspect_files, chunk, options): index for index, chunk in enumerate(chunks)}
        for future in as_completed(futures):
            index = futures[future]
            try:
                by_chunk[index] = future.result()
            except Exception:  # noqa: BLE001 - a worker died (killed, out of memory): read its chunk here
                by_chunk[index] = inspect_files(chunks[index], options)
            if on_progress:
                on_progress(len(chunks[index]))
    return [item for index in range(len(chunks)) for item in by_chunk[index]]


def resolve_workers(workers: int | None, n_files: int) -> int:
    """Number of reader processes for ``n_files`` files (1 means serial).

    ``workers`` when given; else serial below :data:`PARALLEL_MIN_FILES` files or
    :data:`PARALLEL_MIN_CORES` available cores, and one process per available core (at most 8)
    otherwise.
    """
    if workers is not None:
        if workers < 1:
            raise ConfigError(f"workers: must be >= 1 (1 reads serially), got {workers}")
        return workers
    if n_files < PARALLEL_MIN_FILES:
        return 1
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    if available < PARALLEL_MIN_CORES:
        return 1
    return min(8, available)


# --------------------------------------------------------------------------------------------
# DICOM


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


# --------------------------------------------------------------------------------------------
# tolerant value access: headers in the wild hold blanks, junk and wrong multiplicities


def _text(dataset, keyword: str) -> str:
    try:
        value = dataset.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed value reads as missing
        return ""
    if type(value) is str:  # the common case, first
        return value.strip().strip("\x00").strip()
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).strip().strip("\x00").strip()


def _multi(dataset, keyword: str) -> list[str]:
    try:
        value = dataset.get(keyword)
    except Exception:  # noqa: BLE001
        return []
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part for part in value.split("\\") if part]
    try:
        return [str(v) for v in value]
    except TypeError:
        return [str(value)]


def _int(dataset, keyword: str) -> int | None:
    try:
        value = dataset.get(keyword)
        if type(value) is int:  # the common case, first
            return value
        if value is None or value == "":
            return None
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return int(float(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    except Exception:  # noqa: BLE001
        return None


def _float(dataset, keyword: str) -> float | None:
    try:
        value = dataset.get(keyword)
        if value is None or value == "":
            return None
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        number = float(value)
    except Exception:  # noqa: BLE001
        return None
    return number if math.isfinite(number) else None


def _floats(dataset, keyword: str, count: int) -> tuple[float, ...] | None:
    try:
        value = dataset.get(keyword)
        if value is None or value == "":
            return None
        numbers = tuple(float(v) for v in value)
    except Exception:  # noqa: BLE001
        return None
    if len(numbers) != count or not all(math.isfinite(n) for n in numbers):
        return None
    return numbers


def _short(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
