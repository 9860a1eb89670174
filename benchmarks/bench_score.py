"""Batch scoring: ``medrec.score`` against the MONAI tutorial inference loop and the model-only bound.

Data: the CT lesion cohort of ``bench_train.py`` (written once with ``medrec.synth.generate_cohort``,
indexed with ``medrec.index.index_folder``): every series of its manifest is scored. The model is
a run directory trained by ``medrec.train.train`` with the packaged ``ct_lesion_3d`` recipe
(``cnn_small``; 1 epoch: scoring speed does not depend on how well the weights were trained),
made once and reused.

Compared, in the same run, alternating (medrec, tutorial, tutorial with MONAI's reader, model-only) per round:

* medrec: ``medrec.score.score(RUN, manifest.csv, predictions.csv, ScoreOptions(batch_size=8,
  workers=default_workers()))``, the path ``medrec score RUN manifest.csv -o predictions.csv`` takes:
  loading and preprocessing in DataLoader worker processes, batched inference, one crash-safe
  CSV line per sample;
* tutorial: the MONAI tutorial inference loop: per study, the run's deterministic transforms
  (starting with medrec's ``LoadSampled``), then a forward pass of the batch of one under
  ``torch.no_grad`` and a softmax, one study at a time;
* tutorial with MONAI's reader: the same loop, but each series is loaded as the MONAI tutorials
  do, ``LoadImaged(reader="PydicomReader")`` on the series folder + ``EnsureChannelFirstd``, then
  the run's deterministic transforms after ``LoadSampled`` (Orientationd, CropForegroundd,
  Spacingd, intensity scaling, ResizeWithPadOrCropd, ...);
* model-only bound: the preprocessed tensors already in memory, forward passes in batches of 8
  (the same batch size as medrec), the faster of the plain model and medrec's own ``Predictor``.

Figures are studies per second. torch runs with one intra-op thread in the benchmark process
(the machines are shared; oversubscribed OpenMP threads make timings erratic); DataLoader
workers are single-threaded anyway.

Usage: ``python benchmarks/bench_score.py [--quick]``
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Figure, bench_arguments, header, print_figures, say, usable_cores, write_record  # noqa: E402
from bench_train import FULL as TRAIN_FULL  # noqa: E402
from bench_train import QUICK as TRAIN_QUICK  # noqa: E402
from bench_train import RECIPE, build_cohort, cohort_dir, recipe_config  # noqa: E402

NAME = "score"
BATCH_SIZE = 8
WARMUP_STUDIES = 8
FULL = {"patients": TRAIN_FULL["patients"], "rounds": 3}
QUICK = {"patients": TRAIN_QUICK["patients"], "rounds": 1}
TORCH_THREADS = 1


def scoring_run(manifest: Path, patients: int) -> Path:
    """A complete run directory for the cohort (trained once with 1 epoch, then reused)."""
    from medrec.train import train

    run_dir = cohort_dir(patients) / "score-run"
    if (run_dir / "model.json").is_file():
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)
    say(f"training the run to score with in {run_dir} (once; reused by later runs)")
    train(recipe_config(manifest, 1, cohort_dir(patients) / "cache"), run_dir, show_progress=False)
    return run_dir


def medrec_workers() -> int:
    """The loader processes ``medrec score`` uses when ``--workers`` is not given."""
    from medrec.score import default_workers

    return default_workers()


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the loader processes, once joined)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def medrec_pass(run_dir: Path, manifest: Path, output: Path, workers: int) -> tuple[float, float, Any]:
    from medrec.score import ScoreOptions, score

    options = ScoreOptions(batch_size=BATCH_SIZE, workers=workers, device="cpu", overwrite=True)
    cpu_started = cpu_seconds()
    started = time.perf_counter()
    result = score(run_dir, manifest, output, options, show_progress=False)
    return time.perf_counter() - started, cpu_seconds() - cpu_started, result


def tutorial_pass(run: Any, rows: list[dict[str, Any]]) -> tuple[float, float, list[Any], list[float]]:
    """Per study: transforms, forward of a batch of one under no_grad, softmax (the MONAI tutorial loop)."""
    import torch

    transforms = run.deterministic_transforms()
    model = run.model.eval()
    tensors, scores = [], []
    cpu_started = cpu_seconds()
    started = time.perf_counter()
    for row in rows:
        image = transforms(dict(row))["image"]
        with torch.no_grad():
            logits = model(torch.as_tensor(image).as_subclass(torch.Tensor).unsqueeze(0))
            probabilities = torch.softmax(logits / run.temperature, dim=1)
        scores.append(float(probabilities[0, 1]))
        tensors.append(image)
    return time.perf_counter() - started, cpu_seconds() - cpu_started, tensors, scores


def monai_reader_chain(run: Any) -> Any:
    """The MONAI tutorial preprocessing: LoadImaged(PydicomReader) on the series folder, then the run's transforms."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    deterministic = run.deterministic_transforms()
    return Compose([LoadImaged(keys="image", reader="PydicomReader"), EnsureChannelFirstd(keys="image"),
                    *deterministic.transforms[1:]])


def monai_reader_pass(run: Any, chain: Any, rows: list[dict[str, Any]]) -> tuple[float, float, list[float]]:
    """The tutorial loop with MONAI's own DICOM reader: per series folder, transforms, forward (batch 1), softmax."""
    import torch

    model = run.model.eval()
    scores = []
    cpu_started = cpu_seconds()
    started = time.perf_counter()
    for row in rows:
        image = chain({"image": row["path"]})["image"]
        with torch.no_grad():
            logits = model(torch.as_tensor(image).as_subclass(torch.Tensor).unsqueeze(0))
            probabilities = torch.softmax(logits / run.temperature, dim=1)
        scores.append(float(probabilities[0, 1]))
    return time.perf_counter() - started, cpu_seconds() - cpu_started, scores


def model_only_pass(run: Any, tensors: list[Any]) -> dict[str, float]:
    """Forward passes on preloaded tensors, batches of BATCH_SIZE: plain model and medrec's Predictor."""
    import torch

    from medrec.score.inference import Predictor

    batches = [torch.stack([torch.as_tensor(t).as_subclass(torch.Tensor) for t in tensors[i:i + BATCH_SIZE]])
               for i in range(0, len(tensors), BATCH_SIZE)]
    model = run.model.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            torch.softmax(model(batch) / run.temperature, dim=1)
    plain = time.perf_counter() - started
    predictor = Predictor(run, torch.device("cpu"), amp=False)
    started = time.perf_counter()
    for batch in batches:
        predictor(batch)
    medrec = time.perf_counter() - started
    return {"plain_s": plain, "predictor_s": medrec}


def run(quick: bool = False) -> dict:
    import torch

    from medrec.manifest import read_manifest
    from medrec.rundir import load_run

    size = QUICK if quick else FULL
    torch.set_num_threads(TORCH_THREADS)
    header(NAME, "medrec.score (worker processes, batched inference) vs the MONAI tutorial inference loop "
                 "(one study at a time) and vs the model-only bound (forward on preloaded tensors)")
    manifest, cohort = build_cohort(size["patients"])
    run_dir = scoring_run(manifest, size["patients"])
    workers = medrec_workers()
    rows = read_manifest(manifest).to_dict("records")
    run_record = json.loads((run_dir / "model.json").read_text())
    say(f"data: {len(rows)} CT series of {cohort['patients']} synthetic patients ({cohort['files']} DICOM files, "
        f"128 x 128 x {cohort['slices_per_series'][0]}-{cohort['slices_per_series'][1]}); run: {RECIPE.name}, "
        f"{run_record['architecture']['name']}, input {run_record['input_shape']}; batch {BATCH_SIZE}, medrec workers "
        f"{workers}; torch threads {TORCH_THREADS}; {size['rounds']} round(s)")

    work = cohort_dir(size["patients"]) / "score-out"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    run = load_run(run_dir)

    # Warm-up (imports, first calls, page cache) on a few studies; not timed.
    warm_rows = rows[:WARMUP_STUDIES]
    warm_manifest = work / "warmup-manifest.csv"
    read_manifest(manifest).head(WARMUP_STUDIES).to_csv(warm_manifest, index=False)
    medrec_pass(run_dir, warm_manifest, work / "warmup.csv", workers)
    _, _, warm_tensors, _ = tutorial_pass(run, warm_rows)
    reader_chain = monai_reader_chain(run)
    monai_reader_pass(run, reader_chain, warm_rows)
    model_only_pass(run, warm_tensors)

    medrec_s, tutorial_s, plain_s, predictor_s, medrec_cpu, tutorial_cpu = [], [], [], [], [], []
    reader_s, reader_cpu = [], []
    agreement = reader_agreement = None
    for round_index in range(size["rounds"]):
        seconds, cpu, result = medrec_pass(run_dir, manifest, work / f"predictions-{round_index}.csv", workers)
        medrec_s.append(seconds)
        medrec_cpu.append(cpu)
        if result.failed:
            raise RuntimeError(f"medrec failed on {result.failed} samples: {dict(result.failures)}")
        seconds, cpu, tensors, scores = tutorial_pass(run, rows)
        tutorial_s.append(seconds)
        tutorial_cpu.append(cpu)
        seconds, cpu, reader_scores = monai_reader_pass(run, reader_chain, rows)
        reader_s.append(seconds)
        reader_cpu.append(cpu)
        if reader_agreement is None:
            reader_agreement = max(abs(a - b) for a, b in zip(scores, reader_scores, strict=True))
        bound = model_only_pass(run, tensors)
        plain_s.append(bound["plain_s"])
        predictor_s.append(bound["predictor_s"])
        say(f"  round {round_index + 1}: medrec {medrec_s[-1]:.2f} s ({medrec_cpu[-1]:.2f} CPU s), tutorial loop "
            f"{tutorial_s[-1]:.2f} s ({tutorial_cpu[-1]:.2f} CPU s), tutorial loop with LoadImaged(PydicomReader) "
            f"{reader_s[-1]:.2f} s ({reader_cpu[-1]:.2f} CPU s), model only {plain_s[-1]:.3f} s (plain) / "
            f"{predictor_s[-1]:.3f} s (medrec Predictor)")
        if agreement is None:
            import pandas as pd

            predicted = pd.read_csv(work / f"predictions-{round_index}.csv").set_index("sample_id")["score"]
            agreement = max(abs(float(predicted[row["sample_id"]]) - score) for row, score in zip(rows, scores,
                                                                                                 strict=True))
    n = len(rows)
    medrec_rate = n / (sum(medrec_s) / len(medrec_s))
    tutorial_rate = n / (sum(tutorial_s) / len(tutorial_s))
    reader_rate = n / (sum(reader_s) / len(reader_s))
    bound_s = min(sum(plain_s), sum(predictor_s)) / len(plain_s)
    bound_rate = n / bound_s
    cores_obtained = sum(medrec_cpu) / sum(medrec_s)
    cpu_ratio = sum(tutorial_cpu) / sum(medrec_cpu)
    say(f"  CPU per study: medrec {sum(medrec_cpu) / len(medrec_cpu) / n * 1000:.0f} ms, tutorial "
        f"{sum(tutorial_cpu) / len(tutorial_cpu) / n * 1000:.0f} ms; medrec obtained {cores_obtained:.2f} of "
        f"{usable_cores()} cores (CPU s / wall s), the tutorial {sum(tutorial_cpu) / sum(tutorial_s):.2f}")
    say(f"  studies/s: medrec {medrec_rate:.2f}, tutorial {tutorial_rate:.2f}, tutorial with "
        f"LoadImaged(PydicomReader) {reader_rate:.2f}, model only {bound_rate:.1f}; check: largest "
        f"|score(medrec) - score(tutorial)| = {agreement:.2e}, |score(tutorial) - score(LoadImaged)| = "
        f"{reader_agreement:.2e}")

    data_text = (f"{n} CT series / {cohort['patients']} patients, cnn_small input {run_record['input_shape']}, "
                 f"batch {BATCH_SIZE}, {size['rounds']} round(s)")
    figures = [
        Figure(NAME, "studies/s: medrec score / MONAI tutorial loop", medrec_rate / tutorial_rate, 2.0, True,
               f"medrec.score.score(workers={workers}, batch {BATCH_SIZE}) / per-study transforms + forward (batch 1, "
               f"no_grad), one at a time; {data_text}",
               {"medrec_studies_per_s": round(medrec_rate, 2), "tutorial_studies_per_s": round(tutorial_rate, 2),
                "medrec_s": round(sum(medrec_s) / len(medrec_s), 2),
                "tutorial_s": round(sum(tutorial_s) / len(tutorial_s), 2)}),
        Figure(NAME, "studies/s: medrec score / MONAI tutorial loop with LoadImaged(PydicomReader)",
               medrec_rate / reader_rate, 2.0, True,
               f"medrec.score.score(workers={workers}, batch {BATCH_SIZE}) / per series folder: "
               f"LoadImaged(reader='PydicomReader') + EnsureChannelFirstd + the run's transforms after LoadSampled, "
               f"forward (batch 1, no_grad), one at a time; {data_text}",
               {"medrec_studies_per_s": round(medrec_rate, 2),
                "tutorial_pydicomreader_studies_per_s": round(reader_rate, 2),
                "tutorial_pydicomreader_s": round(sum(reader_s) / len(reader_s), 2),
                "tutorial_pydicomreader_cpu_ms_per_study": round(sum(reader_cpu) / len(reader_cpu) / n * 1000)}),
        Figure(NAME, "studies/s: medrec score / model-only bound", medrec_rate / bound_rate, 0.7, True,
               f"medrec.score.score / forward passes on preloaded tensors (batch {BATCH_SIZE}, faster of plain model "
               f"and medrec Predictor); {data_text}",
               {"medrec_studies_per_s": round(medrec_rate, 2), "model_only_studies_per_s": round(bound_rate, 1),
                "model_only_s": round(bound_s, 3)}),
        Figure(NAME, "CPU per study: MONAI tutorial loop / medrec score", cpu_ratio, None, True,
               f"CPU seconds (process + loader processes) per pass, tutorial / medrec; medrec obtained "
               f"{cores_obtained:.2f} of {usable_cores()} cores (CPU s / wall s); {data_text}",
               {"medrec_cpu_ms_per_study": round(sum(medrec_cpu) / len(medrec_cpu) / n * 1000),
                "tutorial_cpu_ms_per_study": round(sum(tutorial_cpu) / len(tutorial_cpu) / n * 1000),
                "medrec_cores_obtained": round(cores_obtained, 2),
                "tutorial_cores_obtained": round(sum(tutorial_cpu) / sum(tutorial_s), 2)}),
    ]
    print_figures(figures)
    return {
        "figures": [f.as_dict() for f in figures],
        "data": {"samples": n, "patients": cohort["patients"], "dicom_files": cohort["files"],
                 "slices_per_series": cohort["slices_per_series"], "input_shape": run_record["input_shape"],
                 "batch_size": BATCH_SIZE, "medrec_workers": workers, "cores": usable_cores(),
                 "torch_threads": TORCH_THREADS, "rounds": size["rounds"]},
        "seconds": {"medrec": [round(s, 3) for s in medrec_s], "tutorial": [round(s, 3) for s in tutorial_s],
                    "tutorial_pydicomreader": [round(s, 3) for s in reader_s],
                    "tutorial_pydicomreader_cpu": [round(s, 3) for s in reader_cpu],
                    "model_only_plain": [round(s, 4) for s in plain_s],
                    "model_only_predictor": [round(s, 4) for s in predictor_s],
                    "medrec_cpu": [round(s, 3) for s in medrec_cpu], "tutorial_cpu": [round(s, 3) for s in tutorial_cpu]},
        "max_score_difference": agreement,
        "max_score_difference_pydicomreader": reader_agreement,
        "notes": "rounds alternate medrec / tutorial / tutorial with LoadImaged(PydicomReader) / model-only; each "
                 "variant warmed up on 8 studies first; torch limited to 1 intra-op thread in the benchmark process",
    }


def main() -> None:
    args = bench_arguments(__doc__)
    write_record(run(args.quick), args.json)


if __name__ == "__main__":
    main()
