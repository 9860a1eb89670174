"""Indexing a synthetic DICOM archive: ``medrec.index.index_folder`` against two baselines.

Compared, on the same files in the same run:

* ``index_folder`` (serial, ``workers=1``, and the default worker count) over the whole folder,
  including the folder walk, series building, selection and writing manifest.csv / qc.csv;
* a full read of each file (``pydicom.dcmread`` + ``pixel_array``), timed on a seeded random
  sample of files and extrapolated per file to the whole archive;
* the floor: walking the folder and reading the first 8 KiB of every file.

The archive is built once with ``medrec.synth.generate_cohort`` (CT lesion phantoms, 64 x 64
matrix, 2 mm slices = 90 slices per series) as nested folders, so that sub-folders give the
2,000 / 5,000 / 20,000 file levels: ``n20000/n5000/n2000/``. The page cache cannot be dropped
here, so every variant is run once untimed first (warm cache) and then timed.

Usage: ``python benchmarks/bench_index.py [--quick]``
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA_DIR, Figure, bench_arguments, header, print_figures, say, timed, write_record  # noqa: E402

NAME = "index"
IMAGE_SIZE = 64
SLICE_THICKNESS_MM = 2.0  # 180 mm slab: 90 slices per series
SLICES_PER_SERIES = 90
FOLLOW_UP_FRACTION = 0.2
MAX_PATIENTS_PER_CHUNK = 30
FULL_LEVELS = (2_000, 5_000, 20_000)
QUICK_LEVELS = (300, 600, 1_200)
FULL_SAMPLE = 2_000
QUICK_SAMPLE = 200
FLOOR_BYTES = 8192
SAMPLE_SEED = 0
# "Flat" time per file: the largest level may cost at most this much more per file than the smallest.
FLAT_TOLERANCE = 1.3


# ------------------------------------------------------------------------------------------ data


def _generate_chunk(job: tuple[str, str, int, int]) -> int:
    folder, labels_dir, chunk, patients = job
    from medrec.synth import generate_cohort

    cohort = generate_cohort(
        folder, kind="ct-lesion", patients=patients, fmt="dicom", seed=1000 + chunk, image_size=IMAGE_SIZE,
        slice_thickness=SLICE_THICKNESS_MM, follow_up_fraction=FOLLOW_UP_FRACTION,
        identity={"patient_id": f"C{chunk:03d}-{{patient_key}}"}, overwrite=True,
    )
    # Keep the folder pure DICOM: the label tables move next to the archive, not into it.
    for table in (cohort.labels_csv, cohort.ground_truth_csv):
        shutil.move(str(table), os.path.join(labels_dir, f"chunk{chunk:03d}-{Path(table).name}"))
    for leftover in Path(folder).iterdir():
        if leftover.is_file() and leftover.suffix != ".dcm":
            leftover.unlink()
    return sum(len(files) for _, _, files in os.walk(folder))


def level_folder(root: Path, levels: tuple[int, ...], level: int) -> Path:
    """``root/n20000/n5000/n2000`` style nesting: each level's folder holds the smaller ones."""
    folder = root
    for size in sorted(levels, reverse=True):
        folder = folder / f"n{size}"
        if size == level:
            return folder
    raise ValueError(f"level {level} is not one of {levels}")


def build_archive(quick: bool) -> tuple[Path, dict[int, int], dict]:
    """Generate (once) the nested archive; returns its root, file count per level and its record."""
    levels = QUICK_LEVELS if quick else FULL_LEVELS
    root = DATA_DIR / ("index-archive-quick" if quick else "index-archive")
    marker = root / "archive.json"
    if marker.exists():
        record = json.loads(marker.read_text())
        if record.get("levels") == list(levels) and record.get("image_size") == IMAGE_SIZE:
            return root, _int_keys(record["files_per_level"]), record
    if root.exists():
        shutil.rmtree(root)
    labels_dir = root / "labels"
    labels_dir.mkdir(parents=True)
    say(f"building the archive in {root} (once; reused by later runs)")
    files_per_study = SLICES_PER_SERIES
    jobs: list[tuple[str, str, int, int]] = []
    planned = 0
    chunk = 0
    plan_levels: dict[int, int] = {}
    for level in sorted(levels):
        folder = level_folder(root, levels, level)
        while planned < level:
            missing = level - planned
            patients = max(1, min(MAX_PATIENTS_PER_CHUNK,
                                  math.ceil(missing / (files_per_study * (1 + FOLLOW_UP_FRACTION)))))
            jobs.append((str(folder / f"chunk{chunk:03d}"), str(labels_dir), chunk, patients))
            # Estimate only; the real count is taken from disk below.
            planned += int(patients * files_per_study * (1 + FOLLOW_UP_FRACTION))
            chunk += 1
        plan_levels[level] = planned
    with ProcessPoolExecutor(max_workers=2) as pool:
        elapsed, _ = timed(lambda: list(pool.map(_generate_chunk, jobs)))
    files_per_level = {level: _count_files(level_folder(root, levels, level)) for level in levels}
    series = {level: _count_series(level_folder(root, levels, level)) for level in levels}
    record = {
        "levels": list(levels), "image_size": IMAGE_SIZE, "slice_thickness_mm": SLICE_THICKNESS_MM,
        "files_per_level": files_per_level, "series_per_level": series, "chunks": len(jobs),
        "generation_seconds": round(elapsed, 1),
        "bytes": sum(p.stat().st_size for p in level_folder(root, levels, max(levels)).rglob("*") if p.is_file()),
    }
    marker.write_text(json.dumps(record, indent=2))
    return root, files_per_level, json.loads(marker.read_text())


def _int_keys(mapping: dict) -> dict[int, int]:
    return {int(key): value for key, value in mapping.items()}


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _count_series(folder: Path) -> int:
    # The writer puts one series per folder (no quirks): count folders holding files.
    return sum(1 for _, _, files in os.walk(folder) if files)


def list_files(folder: Path) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files)


# ------------------------------------------------------------------------------------- variants


def run_index(folder: Path, workers: int | None) -> float:
    from medrec.index import index_folder

    with tempfile.TemporaryDirectory(prefix="bench-index-") as out:
        seconds, result = timed(lambda: index_folder(folder, out, workers=workers, show_progress=False))
    if len(result.qc):
        raise RuntimeError(f"indexing {folder} left {len(result.qc)} files in qc.csv; the archive is broken")
    return seconds


def run_floor(folder: Path) -> float:
    def read_heads() -> int:
        total = 0
        for directory, _, files in os.walk(folder):
            for name in files:
                with open(os.path.join(directory, name), "rb") as handle:
                    total += len(handle.read(FLOOR_BYTES))
        return total

    seconds, _ = timed(read_heads)
    return seconds


def run_full_reads(paths: list[str]) -> float:
    import pydicom

    def read_all() -> int:
        voxels = 0
        for path in paths:
            voxels += pydicom.dcmread(path).pixel_array.size
        return voxels

    seconds, _ = timed(read_all)
    return seconds


# ------------------------------------------------------------------------------------------- run


def run(quick: bool = False) -> dict:
    levels = QUICK_LEVELS if quick else FULL_LEVELS
    sample_size = QUICK_SAMPLE if quick else FULL_SAMPLE
    header(NAME, "index_folder vs full pydicom reads (sampled, extrapolated) vs reading 8 KiB of every file")
    root, counts, archive = build_archive(quick)
    top = max(levels)
    top_folder = level_folder(root, levels, top)
    n_top = counts[top]
    series = _int_keys(archive["series_per_level"])
    say(f"data: {n_top} DICOM files in {series[top]} series "
        f"({archive['bytes'] / 1024**2:.0f} MiB, {IMAGE_SIZE}x{IMAGE_SIZE} int16 CT slices); levels {counts}")

    paths = list_files(top_folder)
    sample = sorted(random.Random(SAMPLE_SEED).sample(paths, min(sample_size, len(paths))))
    from medrec.index.headers import resolve_workers

    default_workers = resolve_workers(None, len(paths))  # what index_folder(workers=None) uses here
    say("warm-up: every variant runs once untimed first (the page cache cannot be dropped here): the floor, the "
        f"sampled full reads and index_folder(default workers) over all {n_top} files, index_folder(workers=1) "
        f"over the {counts[min(levels)]}-file level")
    run_floor(top_folder)
    run_full_reads(sample)
    run_index(top_folder, workers=None)
    run_index(level_folder(root, levels, min(levels)), workers=1)

    times: dict[str, dict[int, float]] = {"index_serial": {}, "index_default": {}, "floor": {}}
    for level in levels:
        folder = level_folder(root, levels, level)
        times["floor"][level] = run_floor(folder)
        times["index_serial"][level] = run_index(folder, workers=1)
        times["index_default"][level] = run_index(folder, workers=None)
        say(f"  {counts[level]:>6} files: index serial {times['index_serial'][level]:.2f} s, "
            f"index default workers {times['index_default'][level]:.2f} s, 8 KiB floor {times['floor'][level]:.2f} s")
    full_sample_s = run_full_reads(sample)
    full_per_file = full_sample_s / len(sample)
    full_top = full_per_file * n_top
    say(f"  full read: {len(sample)} sampled files in {full_sample_s:.2f} s = {1e3 * full_per_file:.2f} ms/file, "
        f"extrapolated to {n_top} files: {full_top:.1f} s")

    # The archive's 64 x 64 slices carry only 8 KiB of pixels, so a full read costs little more than the
    # header; the same comparison on full-size 512 x 512 slices shows how the ratio moves with pixel bytes.
    from bench_memory import build_series

    big_root, big_shape = build_series(quick)
    big_folder = big_root / "series"
    big_paths = list_files(big_folder)
    run_full_reads(big_paths)
    run_index(big_folder, workers=1)
    big_full_s = run_full_reads(big_paths)
    big_index_s = run_index(big_folder, workers=1)
    say(f"  {big_shape[0]}x{big_shape[1]} slices ({len(big_paths)} files, one series): full read {big_full_s:.2f} s, "
        f"index serial {big_index_s:.2f} s")

    per_file = {variant: {level: times[variant][level] / counts[level] for level in levels} for variant in times}
    lo, hi = min(levels), top
    compared_data = f"{n_top} files / {series[top]} series"
    figures = [
        Figure(NAME, "index vs full read (serial, like for like)", full_top / times["index_serial"][top], 5.0, True,
               f"full dcmread+pixel_array ({len(sample)}-file seeded sample, extrapolated per file) / "
               f"index_folder(workers=1); {compared_data}",
               {"full_read_s_extrapolated": round(full_top, 2), "index_s": round(times["index_serial"][top], 2)}),
        Figure(NAME, "index vs 8 KiB floor (serial, like for like)", times["index_serial"][top] / times["floor"][top],
               3.0, False, f"index_folder(workers=1) / walk + read 8 KiB of every file; {compared_data}",
               {"index_s": round(times["index_serial"][top], 2), "floor_s": round(times["floor"][top], 2)}),
        Figure(NAME, f"index time/file {hi} vs {lo} files (serial)", per_file["index_serial"][hi] / per_file["index_serial"][lo],
               FLAT_TOLERANCE, False, f"index_folder(workers=1) seconds per file at {counts[hi]} / at {counts[lo]} files",
               {f"ms_per_file_{level}": round(1e3 * per_file["index_serial"][level], 3) for level in levels}),
        Figure(NAME, "index vs full read (default workers)", full_top / times["index_default"][top], 5.0, True,
               f"full read (serial, extrapolated) / index_folder(workers=None: {default_workers} process(es)); "
               f"{compared_data}",
               {"full_read_s_extrapolated": round(full_top, 2), "index_s": round(times["index_default"][top], 2)}),
        Figure(NAME, "index vs 8 KiB floor (default workers)", times["index_default"][top] / times["floor"][top], 3.0,
               False, f"index_folder(workers=None) / serial 8 KiB floor; {compared_data}",
               {"index_s": round(times["index_default"][top], 2), "floor_s": round(times["floor"][top], 2)}),
        Figure(NAME, f"index time/file {hi} vs {lo} files (default workers)",
               per_file["index_default"][hi] / per_file["index_default"][lo], FLAT_TOLERANCE, False,
               f"index_folder(workers=None) seconds per file at {counts[hi]} / at {counts[lo]} files",
               {f"ms_per_file_{level}": round(1e3 * per_file["index_default"][level], 3) for level in levels}),
        Figure(NAME, f"index vs full read on {big_shape[0]}x{big_shape[1]} slices (serial)", big_full_s / big_index_s,
               None, True, f"full dcmread+pixel_array of all {len(big_paths)} files / index_folder(workers=1); one "
               f"{big_shape[0]}x{big_shape[1]}x{big_shape[2]} int16 CT series",
               {"full_read_s": round(big_full_s, 2), "index_s": round(big_index_s, 2)}),
    ]
    print_figures(figures)
    return {
        "figures": [f.as_dict() for f in figures],
        "data": {"files_per_level": counts, "series_per_level": series,
                 "archive_mib": round(archive["bytes"] / 1024**2, 1), "image_size": IMAGE_SIZE,
                 "slices_per_series": SLICES_PER_SERIES, "full_read_sample": len(sample),
                 "sample_seed": SAMPLE_SEED},
        "seconds": {variant: {str(k): round(v, 3) for k, v in values.items()} for variant, values in times.items()}
        | {"full_read_sample": round(full_sample_s, 3), "full_read_512": round(big_full_s, 3),
           "index_serial_512": round(big_index_s, 3)},
        "notes": "warm page cache (each variant ran once untimed first); full-read time extrapolated per file "
                 f"from a {len(sample)}-file seeded sample; flat = per-file time at the largest level within "
                 f"{FLAT_TOLERANCE}x of the smallest",
    }


def main() -> None:
    args = bench_arguments(__doc__)
    write_record(run(args.quick), args.json)


if __name__ == "__main__":
    main()
