"""Fuzzing the readers: mutated bytes of real DICOM and NIfTI files never crash medrec.

Seeds: small pydicom test files of several transfer syntaxes (explicit / implicit VR little
endian, big endian, deflate, RLE, JPEG baseline, JPEG-LS, JPEG 2000, an RGB image, an RT plan
without pixels), one synthetic CT slice written beside three intact slices of its series, and a
synthetic NIfTI volume as ``.nii.gz`` and as ``.nii``. Hypothesis applies one to four mutations
(byte flips, truncation, inserted random bytes, length fields or image dimensions overwritten with
huge values, a chunk duplicated) and drives every reading entry point:

* ``medrec.index.fastheader.read_fast_header``: returns a header or ``None``, never raises;
* ``medrec.index.headers.inspect_file`` (what ``index_folder`` runs per file, including the NIfTI
  checks of ``medrec.index.nifti``) and ``index_folder`` itself: every file ends in the manifest or
  in ``qc.csv`` with a reason, nothing raises;
* ``medrec.loader.load_sample`` on a manifest row built from the mutated file, under a small memory
  budget: a MetaTensor of finite values within the budget, or a ``MedrecError``; never a
  ``MemoryError`` or another exception type, and no allocation far beyond the budget.

CI runs a fixed, derandomised set of examples (``MEDREC_FUZZ_EXAMPLES``, default 40: 40 loads, 80
index runs and 200 header walks, the whole file in about 20 s); ``make fuzz`` runs many more from a
new ``MEDREC_FUZZ_SEED`` each time.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import struct
import tempfile
import tracemalloc
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from medrec.errors import MedrecError, ResourceBudgetError

EXAMPLES = int(os.environ.get("MEDREC_FUZZ_EXAMPLES", "40"))
FUZZ_SEED = os.environ.get("MEDREC_FUZZ_SEED", "").strip()
BUDGET = 16 * 1024**2  # bytes of decoded float32 voxels the loader may allocate
_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=not FUZZ_SEED,  # without a seed, the same examples on every CI run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz_settings(scale: int = 1):  # a hypothesis settings decorator
    """The harness settings (``scale`` x the examples for cheap entry points), plus ``MEDREC_FUZZ_SEED``."""

    def apply(test):
        test = hypothesis_seed(int(FUZZ_SEED))(test) if FUZZ_SEED else test
        return settings(_SETTINGS, max_examples=EXAMPLES * scale)(test)

    return apply


PYDICOM_SEEDS = (
    "MR_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",  # deflated explicit VR little endian
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG2000.dcm",
    "SC_jpeg_no_color_transform.dcm",  # JPEG baseline
    "SC_rgb_small_odd.dcm",
    "rtplan.dcm",  # no pixel data
)
HUGE = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE,
        0xFFFFFFFF)
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_DIMENSION_TAGS = {0x00280010, 0x00280011, 0x00280008, 0x00280002, 0x00280100, 0x00280101, 0x00280102}
# NIfTI-1 header fields (offset, format): sizeof_hdr, dim[0..7], datatype, bitpix, pixdim[1..3],
# vox_offset, scl_slope, scl_inter, qform / sform codes
_NIFTI_LENGTHS = [(0, "<i"), (108, "<f")] + [(40 + 2 * i, "<h") for i in range(8)]
_NIFTI_DIMENSIONS = [(40 + 2 * i, "<h") for i in range(8)] + [(70, "<h"), (72, "<h")] + [
    (76 + 4 * i, "<f") for i in range(1, 4)] + [(112, "<f"), (116, "<f"), (252, "<h"), (254, "<h")]


@dataclass(frozen=True)
class Seed:
    """A file to mutate: its bytes (uncompressed for ``gzipped``) and where its length / size fields lie."""

    name: str
    suffix: str
    content: bytes
    lengths: tuple[tuple[int, str], ...]  # (offset, struct format) of length fields
    dimensions: tuple[tuple[int, str], ...]  # (offset, struct format) of image size fields
    gzipped: bool = False
    siblings: tuple[Path, ...] = ()  # intact files of the same series, indexed with the mutant

    def file_bytes(self, content: bytes) -> bytes:
        return gzip.compress(content, mtime=0) if self.gzipped else content


def _dicom_fields(content: bytes) -> tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str], ...]]:
    """Offsets of the top-level element length fields (and item lengths) and of Rows, Columns, ..."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(content), force=True, defer_size=None)
    deflated = ds.file_meta.get("TransferSyntaxUID") == pydicom.uid.DeflatedExplicitVRLittleEndian
    lengths, dimensions = [], []
    for tag in [] if deflated else list(ds._dict):  # raw elements carry their file offsets
        raw = ds._dict[tag]
        tell = getattr(raw, "value_tell", None)
        if tell is None:
            continue
        endian = "<" if raw.is_little_endian else ">"
        long_field = raw.is_implicit_VR or raw.VR in _LONG_VRS
        lengths.append((tell - 4, endian + "I") if long_field else (tell - 2, endian + "H"))
        if int(tag) in _DIMENSION_TAGS and raw.length == 2:
            dimensions.append((tell, endian + "H"))
        elif int(tag) in _DIMENSION_TAGS:  # NumberOfFrames is text
            dimensions.append((tell, f"{raw.length}s"))
    # items of encapsulated pixel data and of sequences: FFFE,E000 then a 4-byte length
    at = content.find(b"\xfe\xff\x00\xe0")
    while at >= 0:
        lengths.append((at + 4, "<I"))
        at = content.find(b"\xfe\xff\x00\xe0", at + 1)
    return tuple(lengths), tuple(dimensions)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Seed]:
    from pydicom.data import get_testdata_file

    from medrec.synth import generate_cohort

    found: dict[str, Seed] = {}
    for name in PYDICOM_SEEDS:
        content = Path(get_testdata_file(name)).read_bytes()
        found[name] = Seed(name, ".dcm", content, *_dicom_fields(content))
    # synth writes the same bytes for the same seed, so the examples replay exactly
    study = generate_cohort(tmp_path_factory.mktemp("fuzz-series"), kind="ct-lesion", patients=1, fmt="dicom",
                            seed=5, image_size=16, slice_thickness=10.0, follow_up_fraction=0.0).studies[0]
    series = [Path(p) for p in study.files[:4]]
    content = series[1].read_bytes()
    found["synth_ct_slice"] = Seed("synth_ct_slice", ".dcm", content, *_dicom_fields(content),
                                   siblings=(series[0], series[2], series[3]))
    cohort = generate_cohort(tmp_path_factory.mktemp("fuzz-nifti"), kind="ct-lesion", patients=1, fmt="nifti",
                             seed=5, image_size=16, slice_thickness=10.0, follow_up_fraction=0.0)
    packed = next(p for p in cohort.out_dir.rglob("*.nii.gz")).read_bytes()
    volume = gzip.decompress(packed)
    found["nii.gz"] = Seed("nii.gz", ".nii.gz", volume, tuple(_NIFTI_LENGTHS), tuple(_NIFTI_DIMENSIONS), gzipped=True)
    found["nii"] = Seed("nii", ".nii", volume, tuple(_NIFTI_LENGTHS), tuple(_NIFTI_DIMENSIONS))
    found["nii.gz bytes"] = Seed("nii.gz bytes", ".nii.gz", packed, (), ())  # mutate the compressed stream
    return found


SEED_NAMES = (*PYDICOM_SEEDS, "synth_ct_slice", "nii.gz", "nii", "nii.gz bytes")
_position = st.integers(min_value=0, max_value=2**31)
MUTATION = st.one_of(
    st.tuples(st.just("flip"), _position, st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("truncate"), _position),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("length"), _position, st.sampled_from(HUGE)),
    st.tuples(st.just("dimension"), _position, st.sampled_from(HUGE)),
    st.tuples(st.just("duplicate"), _position, st.integers(min_value=1, max_value=512), _position),
)
MUTANT = st.tuples(st.sampled_from(SEED_NAMES), st.lists(MUTATION, min_size=1, max_size=4))


def _overwrite(data: bytearray, offset: int, fmt: str, value: int) -> None:
    if fmt.endswith("s"):  # a numeric string (IS): as many nines as fit
        width = struct.calcsize(fmt)
        packed = (b"9" * width) if value > 0xFF else str(value).encode()[:width].ljust(width)
    elif fmt.endswith("f"):
        packed = struct.pack(fmt, float(value) if value < 0x80000000 else float("inf") if value == 0xFFFFFFFF
                             else float("nan"))
    else:
        signed = fmt[-1] in "hi"
        bits = 8 * struct.calcsize(fmt)
        value &= (1 << bits) - 1
        if signed and value >= 1 << (bits - 1):
            value -= 1 << bits
        packed = struct.pack(fmt, value)
    if offset + len(packed) <= len(data):
        data[offset : offset + len(packed)] = packed


def mutate(seed: Seed, mutations: list[tuple]) -> bytes:
    """Apply the mutations in order to the seed's content; return the bytes of the file to write."""
    data = bytearray(seed.content)
    for mutation in mutations:
        kind, position = mutation[0], mutation[1]
        if not data:
            break
        at = position % len(data)
        if kind == "flip":
            data[at] ^= mutation[2]
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = mutation[2]
        elif kind in ("length", "dimension"):
            fields = seed.lengths if kind == "length" else seed.dimensions
            if fields:
                offset, fmt = fields[position % len(fields)]
                _overwrite(data, offset, fmt, mutation[2])
            else:  # no known structure: a 4-byte little-endian value anywhere
                _overwrite(data, at, "<I", mutation[2])
        elif kind == "duplicate":
            chunk = bytes(data[at : at + mutation[2]])
            target = mutation[3] % (len(data) + 1)
            data[target:target] = chunk
    return seed.file_bytes(bytes(data))


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # one folder reused by every example (hypothesis runs examples of one test in sequence)
    with tempfile.TemporaryDirectory(prefix="medrec-fuzz-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module", autouse=True)
def small_budget() -> Iterator[None]:
    """The index reads the budget from the environment (the loader is also given it explicitly)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDREC_MAX_BYTES", str(BUDGET))
        yield


def _write_mutant(workdir: Path, seed: Seed, mutations: list[tuple]) -> Path:
    scans = workdir / "scans"
    shutil.rmtree(scans, ignore_errors=True)
    scans.mkdir(parents=True)
    for sibling in seed.siblings:
        shutil.copyfile(sibling, scans / sibling.name)
    path = scans / f"mutant{seed.suffix}"
    path.write_bytes(mutate(seed, mutations))
    return path


# --------------------------------------------------------------------------------------------
# the fast header walker


@fuzz_settings(scale=5)
@given(mutant=MUTANT)
def test_fast_header_returns_a_header_or_none(seeds: dict[str, Seed], mutant: tuple) -> None:
    from medrec.index.fastheader import HEAD_BYTES, FastHeader, read_fast_header
    from medrec.index.headers.dicom import _FAST_SELECTION

    name, mutations = mutant
    data = mutate(seeds[name], mutations)
    result = read_fast_header(data[:HEAD_BYTES], len(data), _FAST_SELECTION)
    assert result is None or isinstance(result, FastHeader)
    if result is not None:
        assert 0 <= result.pixel_offset <= len(data)


# --------------------------------------------------------------------------------------------
# the index: per file, then the whole folder


def _inspect(path: Path) -> object:
    from medrec.index.headers import ReadOptions, inspect_file

    return inspect_file(str(path), ReadOptions(check_nifti_values=True, scans_root=str(path.parent)))


@fuzz_settings(scale=2)
@given(mutant=MUTANT)
def test_index_records_every_mutant_and_never_raises(seeds: dict[str, Seed], workdir: Path, mutant: tuple) -> None:
    from medrec.index import index_folder
    from medrec.index.headers import DicomHeader
    from medrec.index.nifti import NiftiSample
    from medrec.index.problems import FileProblem
    from medrec.index.selection import SelectionRules

    name, mutations = mutant
    path = _write_mutant(workdir, seeds[name], mutations)
    result = _inspect(path)
    assert isinstance(result, (DicomHeader, NiftiSample, FileProblem)), type(result)
    if isinstance(result, FileProblem):
        assert result.reason and result.code

    indexed = index_folder(path.parent, workdir / "index", rules=SelectionRules(min_slices=1), workers=1,
                           show_progress=False)
    in_qc = set(indexed.qc["path"])
    in_manifest = {str(p) for files in indexed.manifest["files"] for p in json.loads(files or "[]")}
    in_manifest |= set(indexed.manifest["path"])
    for file in path.parent.iterdir():
        assert str(file) in in_qc | in_manifest, f"{file.name} neither in the manifest nor in qc.csv"
    assert (indexed.qc["reason"] != "").all()


# --------------------------------------------------------------------------------------------
# the loader, under a small memory budget


def _row(path: Path, seed: Seed) -> dict:
    if seed.suffix == ".dcm":
        files = [str(path.parent / s.name) for s in seed.siblings] + [str(path)]
        return {"sample_id": "fuzz", "format": "dicom", "path": str(path.parent), "files": json.dumps(sorted(files)),
                "modality": ""}
    return {"sample_id": "fuzz", "format": "nifti", "path": str(path), "files": "[]", "modality": ""}


def _load_within_budget(row: dict) -> None:
    from medrec.loader import load_sample

    tracemalloc.start()
    try:
        try:
            image = load_sample(row, max_bytes=BUDGET)
        except MedrecError:
            return
        finally:
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # decoding holds the stored values, a float64 slice and the float32 result at once: a few x
    assert peak <= 8 * BUDGET + 32 * 1024**2, f"peak allocation {peak} bytes for a budget of {BUDGET}"
    array = image.numpy()
    assert array.dtype == np.float32 and array.ndim in (3, 4) and array.shape[0] == 1
    assert array.nbytes <= BUDGET
    assert np.isfinite(array).all()
    assert np.isfinite(np.asarray(image.affine)).all()


@fuzz_settings()
@given(mutant=MUTANT)
# pylibjpeg-rle panics (pyo3 PanicException, a BaseException) on a corrupt RLE segment
@example(mutant=("MR_small_RLE.dcm", [("insert", 2535, b"i")]))
# an odd-length US value (here BitsAllocated) raises pydicom's BytesLengthException on first access
@example(mutant=("SC_rgb_small_odd.dcm", [("insert", 4278, b"b")]))
def test_loader_raises_only_medrec_errors(seeds: dict[str, Seed], workdir: Path, mutant: tuple) -> None:
    name, mutations = mutant
    seed = seeds[name]
    path = _write_mutant(workdir, seed, mutations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _load_within_budget(_row(path, seed))


def test_seeds_load_unmutated(seeds: dict[str, Seed], workdir: Path) -> None:
    """Without mutations every image seed loads and indexes: the harness starts from working files."""
    from medrec.index.headers import DicomHeader
    from medrec.index.nifti import NiftiSample
    from medrec.index.problems import FileProblem
    from medrec.loader import load_sample

    for name, seed in seeds.items():
        if seed.suffix == ".dcm" and name != "image_dfl.dcm":  # the deflated dataset has no file offsets
            assert len(seed.lengths) > 10, name
            # each recorded length field holds the length pydicom read there: the offsets are right
            for offset, fmt in seed.lengths:
                assert struct.unpack_from(fmt, seed.content, offset)[0] <= len(seed.content) or \
                    struct.unpack_from(fmt, seed.content, offset)[0] == 0xFFFFFFFF, (name, offset)
        if name not in ("rtplan.dcm", "image_dfl.dcm", "nii.gz bytes"):
            assert seed.dimensions, name
        path = _write_mutant(workdir, seed, [])
        result = _inspect(path)
        if name == "rtplan.dcm":
            assert isinstance(result, FileProblem) and result.code == "no_pixel_data"
            continue
        assert isinstance(result, (DicomHeader, NiftiSample)), (name, result)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = load_sample(_row(path, seed), max_bytes=BUDGET)
        assert np.isfinite(image.numpy()).all(), name


@pytest.mark.parametrize("name", ["nii", "nii.gz", "synth_ct_slice", "MR_small_implicit.dcm"])
def test_huge_dimensions_are_refused_against_the_budget(seeds: dict[str, Seed], workdir: Path, name: str) -> None:
    """A header claiming a huge image is refused by the budget before anything is allocated."""
    from medrec.loader import load_sample

    seed = seeds[name]
    if seed.suffix == ".dcm":
        path = _write_mutant(workdir, seed, [])
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns = 0xFFFF, 0xFFFF  # 16 GiB of float32 voxels per slice
        ds.save_as(path)
    else:
        path = _write_mutant(workdir, seed, [("dimension", axis, 0x7FFF) for axis in (1, 2, 3)])  # dim[1..3]
    tracemalloc.start()
    try:
        with pytest.raises(ResourceBudgetError):
            load_sample(_row(path, seed), max_bytes=BUDGET)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024**2, f"{peak} bytes allocated before the refusal"
    if seed.suffix != ".dcm":  # the index reads NIfTI voxels (NaN check): it refuses the claim first
        problem = _inspect(path)
        assert getattr(problem, "code", None) == "over_budget", problem


def test_truncated_uncompressed_nifti_is_excluded_by_the_index(seeds: dict[str, Seed], workdir: Path) -> None:
    """The index compares an uncompressed file's size with its header before reading (int voxels are not read)."""
    seed = seeds["nii"]
    path = _write_mutant(workdir, seed, [("truncate", len(seed.content) - 100)])
    problem = _inspect(path)
    assert getattr(problem, "code", None) == "truncated", problem
    assert str(len(seed.content) - 100) in problem.reason
