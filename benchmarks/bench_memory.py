"""Peak memory of scoring one big CT series against the size of that volume in float32.

Data: one 512 x 512 x 400 CT series written with pydicom as 400 int16 slices (a seeded body
phantom: air, soft tissue, lungs, spine, noise), indexed with ``medrec.index.index_folder`` to get
its manifest row.

Measured: the peak resident memory (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a
wrapper process that runs exactly one worker) of a worker that

* ``load``: runs ``medrec.loader.load_sample(row)``;
* ``preprocess``: runs the deterministic preprocessing chain (``medrec.transforms.build_transforms``
  of a plan made by ``medrec.planning.make_plan`` for this series; the chain starts with
  ``LoadSampled``), or a trained run's ``deterministic_transforms()`` with ``--run RUN``;
* ``score``: the same plus one forward pass of the recipe's network (``cnn_small`` untrained, or
  the run's model), which is what ``medrec score`` does per series;

minus the peak of a baseline worker that only imports the same modules. The figure is that
difference divided by the float32 volume size (512 * 512 * 400 * 4 bytes = 400 MiB). Each worker
also records its high-water mark after every step of the chain (from /proc/self/status), which
shows where the peak happens.

Usage: ``python benchmarks/bench_memory.py [--quick] [--run RUN_DIR]``
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA_DIR, Figure, bench_arguments, header, print_figures, say, write_record  # noqa: E402

NAME = "memory"
FULL_SHAPE = (512, 512, 400)  # columns, rows, slices
QUICK_SHAPE = (128, 128, 100)
PIXEL_SPACING_MM = 0.78125
SLICE_SPACING_MM = 1.0
SEED = 0
TARGET_RATIO = 3.0
MODES = ("baseline", "load", "preprocess", "score")
MODEL_NAME = "cnn_small"  # the default recipe's network (medrec/recipes/ct_lesion_3d.yaml)


# ------------------------------------------------------------------------------------------ data


def _phantom_slice(rng: np.random.Generator, cols: int, rows: int, k: int, n_slices: int) -> np.ndarray:
    """One axial slice in HU: an elliptic body, two lungs, a spine, a table of noise."""
    j, i = np.mgrid[0:rows, 0:cols].astype(np.float32)
    x, y = (i - cols / 2) / (cols / 2), (j - rows / 2) / (rows / 2)
    swell = 1.0 + 0.05 * np.sin(np.pi * k / max(n_slices - 1, 1))
    hu = np.full((rows, cols), -1000.0, dtype=np.float32)
    body = (x / (0.85 * swell)) ** 2 + (y / (0.65 * swell)) ** 2 <= 1.0
    hu[body] = 40.0
    for side in (-1, 1):
        lung = ((x - side * 0.38) / 0.3) ** 2 + ((y + 0.05) / 0.42) ** 2 <= 1.0
        hu[lung & body] = -850.0
    hu[(x / 0.09) ** 2 + ((y - 0.45) / 0.09) ** 2 <= 1.0] = 700.0
    hu += rng.normal(0.0, 12.0, size=hu.shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def write_series(folder: Path, shape: tuple[int, int, int]) -> None:
    """Write the series as single-frame CT Image Storage files (explicit VR little endian, int16)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    cols, rows, n_slices = shape
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    study_uid = generate_uid(entropy_srcs=["medrec-bench-memory", "study", str(shape)])
    series_uid = generate_uid(entropy_srcs=["medrec-bench-memory", "series", str(shape)])
    for k in range(n_slices):
        sop_uid = generate_uid(entropy_srcs=["medrec-bench-memory", "sop", str(shape), str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.PatientID = "BENCH-MEMORY"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.Manufacturer = "medrec-bench"
        ds.SeriesDescription = "benchmark 512x512x400"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-cols * PIXEL_SPACING_MM / 2, -rows * PIXEL_SPACING_MM / 2, k * SLICE_SPACING_MM]
        ds.PixelSpacing = [PIXEL_SPACING_MM, PIXEL_SPACING_MM]
        ds.SliceThickness = SLICE_SPACING_MM
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = _phantom_slice(rng, cols, rows, k, n_slices).tobytes()
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)


def build_series(quick: bool) -> tuple[Path, tuple[int, int, int]]:
    shape = QUICK_SHAPE if quick else FULL_SHAPE
    root = DATA_DIR / f"memory-ct-{shape[0]}x{shape[1]}x{shape[2]}"
    series = root / "series"
    marker = root / "complete.json"
    if not marker.exists():
        say(f"writing the {shape} series to {series} (once; reused by later runs)")
        write_series(series, shape)
        marker.write_text(json.dumps({"shape": shape, "seed": SEED}))
    return root, shape


def manifest_row(root: Path) -> dict:
    from medrec.index import index_folder

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as out:
        result = index_folder(root / "series", out, show_progress=False)
    if len(result.manifest) != 1:
        raise RuntimeError(f"expected one series in {root / 'series'}, indexed {len(result.manifest)}")
    return {key: (None if isinstance(value, float) and np.isnan(value) else value)
            for key, value in result.manifest.iloc[0].to_dict().items()}


def make_plan_for(row: dict) -> dict:
    import pandas as pd

    from medrec.planning import fingerprint, make_plan
    from medrec.transforms import PreprocessConfig

    config = PreprocessConfig(preset="ct", ct_window="abdomen", mode="3d", augment=False)
    plan = make_plan(fingerprint(pd.DataFrame([row]), max_samples=1), config)
    return plan.model_dump(mode="json")


# -------------------------------------------------------------------------------------- workers


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _imports():  # noqa: ANN202 - the modules every mode imports, so that the baseline pays the same
    import monai  # noqa: F401
    import torch

    import medrec.loader
    import medrec.models
    import medrec.planning
    import medrec.rundir  # noqa: F401
    import medrec.transforms

    return torch, medrec


def worker(mode: str, row_path: str, plan_path: str, run_dir: str | None) -> None:
    """One measurement: import, then do ``mode``'s work, print the high-water marks per step."""
    torch, medrec = _imports()
    torch.set_num_threads(1)
    steps: list[dict] = [{"step": "imports", "hwm_kib": _status_kib("VmHWM"), "rss_kib": _status_kib("VmRSS")}]
    start = time.perf_counter()
    if mode != "baseline":
        row = json.loads(Path(row_path).read_text())
        if mode == "load":
            image = medrec.loader.load_sample(row)
            steps.append({"step": "load_sample", "hwm_kib": _status_kib("VmHWM"), "rss_kib": _status_kib("VmRSS")})
        else:
            if run_dir:
                from medrec.rundir import load_run

                run = load_run(run_dir)
                chain, model = run.deterministic_transforms(), run.model
            else:
                plan = medrec.planning.Plan.model_validate(json.loads(Path(plan_path).read_text()))
                chain, _ = medrec.transforms.build_transforms(plan)
                model = medrec.models.create_model(MODEL_NAME, in_channels=1, num_classes=2, **plan.model_kwargs())
                model.eval()
            data = dict(row)
            data["image"] = row
            # Apply the chain's steps one by one (as Compose does without lazy resampling) to see each step's peak.
            for transform in chain.transforms:
                data = transform(data)
                steps.append({"step": type(transform).__name__, "hwm_kib": _status_kib("VmHWM"),
                              "rss_kib": _status_kib("VmRSS")})
            image = data["image"]
            if mode == "score":
                with torch.no_grad():
                    batch = torch.as_tensor(image).as_subclass(torch.Tensor).float()[None]
                    logits = model(batch)
                    torch.softmax(logits, dim=1)
                steps.append({"step": "forward", "hwm_kib": _status_kib("VmHWM"), "rss_kib": _status_kib("VmRSS")})
        shape = list(image.shape)
    else:
        shape = []
    print(json.dumps({"mode": mode, "shape": shape, "seconds": round(time.perf_counter() - start, 2),
                      "steps": steps}))


def wrapper(arguments: list[str]) -> None:
    """Run one worker and report its peak RSS from ``getrusage(RUSAGE_CHILDREN)`` (this is its only child)."""
    completed = subprocess.run([sys.executable, __file__, "--worker", *arguments], capture_output=True, text=True,
                               check=False)
    if completed.returncode != 0:
        print(json.dumps({"error": completed.stderr[-4000:]}))
        return
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    report["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(json.dumps(report))


def measure(mode: str, row_path: Path, plan_path: Path, run_dir: str | None) -> dict:
    arguments = [mode, str(row_path), str(plan_path), run_dir or ""]
    completed = subprocess.run([sys.executable, __file__, "--wrapper", *arguments], capture_output=True, text=True,
                               check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    if "error" in report:
        raise RuntimeError(f"memory worker {mode} failed:\n{report['error']}")
    return report


# ------------------------------------------------------------------------------------------- run


def run(quick: bool = False, run_dir: str | None = None) -> dict:
    header(NAME, "peak RSS of load / preprocess / score of one CT series minus an imports-only baseline, "
                 "vs the float32 volume size")
    root, shape = build_series(quick)
    volume_mib = shape[0] * shape[1] * shape[2] * 4 / 1024**2
    row = manifest_row(root)
    plan = make_plan_for(row) if not run_dir else None
    chain_source = f"trained run {run_dir}" if run_dir else (
        f"make_plan(fingerprint(this series), PreprocessConfig(preset=ct, ct_window=abdomen, mode=3d)): spacing "
        f"{plan['spacing']} mm, input_size {plan['input_size']}; untrained {MODEL_NAME}")
    say(f"data: one CT series {shape[0]}x{shape[1]}x{shape[2]} int16 ({shape[2]} DICOM files), float32 volume "
        f"{volume_mib:.0f} MiB; chain: {chain_source}")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        row_path, plan_path = Path(scratch) / "row.json", Path(scratch) / "plan.json"
        row_path.write_text(json.dumps(row, default=str))
        plan_path.write_text(json.dumps(plan))
        reports = {mode: measure(mode, row_path, plan_path, run_dir) for mode in MODES}
    baseline_mib = reports["baseline"]["ru_maxrss_kib"] / 1024
    extra = {mode: reports[mode]["ru_maxrss_kib"] / 1024 - baseline_mib for mode in MODES}
    for mode in MODES:
        steps = ", ".join(f"{s['step']} {s['hwm_kib'] / 1024:.0f}" for s in reports[mode]["steps"])
        say(f"  {mode:>10}: peak {reports[mode]['ru_maxrss_kib'] / 1024:.0f} MiB (+{extra[mode]:.0f} over baseline) "
            f"in {reports[mode]['seconds']} s; high-water MiB after each step: {steps}")
    data_text = f"{shape[0]}x{shape[1]}x{shape[2]} CT series, float32 volume {volume_mib:.0f} MiB"
    figures = [
        Figure(NAME, "load + preprocess peak vs volume", extra["preprocess"] / volume_mib, TARGET_RATIO, False,
               f"peak RSS(load_sample + deterministic chain) - peak RSS(imports only) / float32 volume; {data_text}",
               {"peak_extra_mib": round(extra["preprocess"], 1), "volume_mib": round(volume_mib, 1),
                "baseline_mib": round(baseline_mib, 1)}),
        Figure(NAME, "score (load + preprocess + forward) peak vs volume", extra["score"] / volume_mib, TARGET_RATIO,
               False, f"as above plus one {MODEL_NAME if not run_dir else 'run model'} forward pass; {data_text}",
               {"peak_extra_mib": round(extra["score"], 1), "volume_mib": round(volume_mib, 1)}),
        Figure(NAME, "load_sample peak vs volume", extra["load"] / volume_mib, None, False,
               f"peak RSS(load_sample) - baseline / float32 volume; {data_text}",
               {"peak_extra_mib": round(extra["load"], 1), "volume_mib": round(volume_mib, 1)}),
    ]
    print_figures(figures)
    return {
        "figures": [f.as_dict() for f in figures],
        "data": {"shape": list(shape), "files": shape[2], "volume_mib": round(volume_mib, 1),
                 "chain": chain_source, "plan": plan},
        "workers": reports,
        "notes": "peak RSS from getrusage(RUSAGE_CHILDREN).ru_maxrss of a wrapper whose only child is the worker; "
                 "baseline = a worker that imports the same modules; torch and OpenMP limited to 1 thread",
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        mode, row_path, plan_path, run_dir = sys.argv[2:6]
        worker(mode, row_path, plan_path, run_dir or None)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--wrapper":
        wrapper(sys.argv[2:6])
        return
    args = bench_arguments(__doc__, lambda parser: parser.add_argument(
        "--run", default=None, help="a trained run directory: use its preprocessing and model"))
    write_record(run(args.quick, args.run), args.json)


if __name__ == "__main__":
    main()
