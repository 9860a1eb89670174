"""DICOM loader fast path vs forced pydicom path: ``load_sample`` on one synthetic CT series.

Data: one 128 x 128 x 45 CT series written with ``medrec.synth.generate_cohort`` (ct-lesion,
slice thickness 4 mm) into ``benchmarks/.data/loader-ct`` (rewritten each run). Each variant loads the
series ``--repeats`` times per round; the figure is CPU time (``time.process_time``) per load,
best of ``--rounds`` rounds, so it holds on a loaded machine. The two volumes are checked to be
bit-identical first.

Usage: ``python benchmarks/time_loader.py [--rounds 5] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA_DIR  # noqa: E402


def series_row() -> dict:
    from medrec.synth import generate_cohort

    cohort = generate_cohort(DATA_DIR / "loader-ct", kind="ct-lesion", patients=1, seed=0, image_size=128,
                             slice_thickness=4.0, follow_up_fraction=0.0, overwrite=True)
    return {"sample_id": "bench", "format": "dicom", "files": list(cohort.studies[0].files), "modality": "CT"}


def cpu_per_load(row: dict, fast_path: bool, repeats: int) -> float:
    from medrec.loader import dicom, load_sample

    dicom.FAST_PATH = fast_path
    started = time.process_time()
    for _ in range(repeats):
        load_sample(row)
    return (time.process_time() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import numpy as np

    from medrec.loader import dicom, load_sample

    row = series_row()
    dicom.FAST_PATH = True
    fast = load_sample(row)
    dicom.FAST_PATH = False
    reference = load_sample(row)
    if dicom.read_dicom_series_fast(row["files"], 1 << 34) is None:
        raise SystemExit("the fast path fell back to pydicom on this series")
    if not (np.array_equal(fast.numpy(), reference.numpy()) and np.array_equal(fast.affine, reference.affine)):
        raise SystemExit("fast path and pydicom path differ")
    print(f"series: {len(row['files'])} files, volume {tuple(fast.shape[1:])}; fast == pydicom: yes")

    fast_s, pydicom_s = [], []
    for _ in range(args.rounds):
        fast_s.append(cpu_per_load(row, True, args.repeats))
        pydicom_s.append(cpu_per_load(row, False, args.repeats))
    best_fast, best_pydicom = min(fast_s), min(pydicom_s)
    print(f"load_sample CPU per series, best of {args.rounds} rounds x {args.repeats} loads: "
          f"fast path {best_fast * 1000:.1f} ms, pydicom path {best_pydicom * 1000:.1f} ms, "
          f"ratio {best_pydicom / best_fast:.1f}x")


if __name__ == "__main__":
    main()
