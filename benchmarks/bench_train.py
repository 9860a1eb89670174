"""Training epochs: ``medrec.train.train`` (preprocessed-sample cache) against the MONAI tutorial pattern.

Data: a synthetic CT lesion cohort written once with ``medrec.synth.generate_cohort`` (DICOM,
128 x 128 slices, 36-48 slices per series, about 1.2 studies per patient), indexed with
``medrec.index.index_folder``. The training recipe is the packaged ``medrec/recipes/ct_lesion_3d.yaml``
(CT abdomen window, 24,576-voxel input, ``cnn_small`` with channels 8-16-32, batch 4, AdamW) with
``preprocessing.augment`` turned on (the default augmentation chain) and 3 epochs; the split's
pixel-level leakage audit is off (it runs before training and is not what is timed).

Compared, in the same run, alternating (medrec, baseline, medrec, baseline):

* medrec: ``medrec.train.train`` on the manifest; each sample is decoded and preprocessed once
  into the no-pickle cache, epochs read cached tensors and apply only the augmentation. The
  epoch figures are the ``train_seconds`` / ``data_wait_seconds`` that the loop records in
  ``metrics.jsonl`` (the training pass of the epoch; validation is recorded apart).
* baseline: the MONAI tutorial pattern on the same training samples, the same plan (the run's
  ``plan.json``) and the same model: ``monai.data.Dataset`` + ``Compose(deterministic chain
  starting with medrec's LoadSampled, then the augmentation chain)`` + a torch ``DataLoader``
  (shuffle, batch 4, ``num_workers`` = cores, as the MONAI classification tutorials do) and a
  plain loop (forward, cross-entropy, backward, AdamW step). Nothing is cached: every epoch
  decodes every series again.

Epoch 1 is reported apart (medrec's cache is filled before it; the baseline's first epoch is
its warm-up); the figures use epochs 2-3 of both rounds. The data-wait fraction is the time the
loop spends waiting for the next batch divided by the time of the training pass.
torch runs with one intra-op thread on both sides (the machines are shared; OpenMP threads
oversubscribed by other jobs make timings erratic); DataLoader workers are single-threaded anyway.

Usage: ``python benchmarks/bench_train.py [--quick]``
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    DATA_DIR,
    REPO_ROOT,
    Figure,
    bench_arguments,
    header,
    print_figures,
    say,
    usable_cores,
    write_record,
)

NAME = "train"
SEED = 0
FULL = {"patients": 60, "rounds": 2}
QUICK = {"patients": 16, "rounds": 1}
EPOCHS = 3
TIMED_EPOCHS = (2, 3)
RECIPE = REPO_ROOT / "medrec" / "recipes" / "ct_lesion_3d.yaml"
TORCH_THREADS = 1


# ------------------------------------------------------------------------------------------ data


def cohort_dir(patients: int) -> Path:
    return DATA_DIR / f"train-ct-lesion-{patients}p"


def build_cohort(patients: int) -> tuple[Path, dict[str, Any]]:
    """Generate (once) and index the CT lesion cohort; returns the manifest path and the cohort record."""
    root = cohort_dir(patients)
    marker = root / "cohort.json"
    manifest = root / "index" / "manifest.csv"
    if marker.exists() and manifest.exists():
        record = json.loads(marker.read_text())
        if record.get("patients") == patients and record.get("seed") == SEED:
            return manifest, record
    if root.exists():
        shutil.rmtree(root)
    from medrec.index import index_folder
    from medrec.synth import generate_cohort

    say(f"generating {patients} CT lesion patients into {root / 'scans'} (once; reused by later runs)")
    started = time.perf_counter()
    cohort = generate_cohort(root / "scans", kind="ct-lesion", patients=patients, fmt="dicom", seed=SEED)
    generated = time.perf_counter() - started
    result = index_folder(root / "scans", root / "index", labels=cohort.labels_csv, match_on="study_uid",
                          show_progress=False)
    files = sum(len(study.files) for study in cohort.studies)
    record = {
        "patients": patients, "seed": SEED, "studies": len(cohort.studies), "samples": int(len(result.manifest)),
        "files": files, "generation_seconds": round(generated, 1),
        "slices_per_series": [min(len(s.files) for s in cohort.studies), max(len(s.files) for s in cohort.studies)],
        "image_size": 128,
        "bytes": sum(p.stat().st_size for p in (root / "scans").rglob("*") if p.is_file()),
    }
    marker.write_text(json.dumps(record, indent=2))
    return manifest, record


def recipe_config(manifest: Path, epochs: int, cache_dir: Path):
    """The packaged ct_lesion_3d recipe's training sections on ``manifest`` (augmentation on)."""
    import yaml

    from medrec.config import parse_config

    recipe = yaml.safe_load(RECIPE.read_text())
    sections = {key: recipe[key] for key in ("split", "preprocessing", "model", "training", "threshold", "calibration")}
    sections["split"] = {**sections["split"], "check_pixels": False}
    sections["preprocessing"] = {**sections["preprocessing"], "augment": True}
    sections["training"] = {**sections["training"], "epochs": epochs, "cache_dir": str(cache_dir), "device": "cpu"}
    return parse_config({"data": {"manifest": str(manifest)}, **sections}, source=str(RECIPE))


# ------------------------------------------------------------------------------------------ medrec


def medrec_round(manifest: Path, work: Path, round_index: int) -> dict[str, Any]:
    """One ``medrec.train.train`` call (3 epochs); per-epoch figures from its metrics.jsonl."""
    from medrec.train import train

    root = cohort_dir_of(manifest)
    config = recipe_config(manifest, EPOCHS, root / "cache")
    run_dir = work / f"medrec-run-{round_index}"
    started = time.perf_counter()
    result = train(config, run_dir, show_progress=False)
    total = time.perf_counter() - started
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    log = (run_dir / "train.log").read_text()
    return {"run_dir": run_dir, "total_s": total, "epochs": epochs, "result": result, "log": log}


def cohort_dir_of(manifest: Path) -> Path:
    return manifest.parent.parent


# ------------------------------------------------------------------------------------------ baseline


def baseline_round(run_dir: Path, manifest: Path, workers: int) -> list[dict[str, float]]:
    """The MONAI tutorial pattern: Dataset + transforms + DataLoader, a plain loop, no cache."""
    import numpy as np
    import pandas as pd
    import torch
    from monai.data import Dataset
    from monai.transforms import Compose
    from torch.utils.data import DataLoader

    from medrec.manifest import read_manifest
    from medrec.models import create_model
    from medrec.planning import Plan
    from medrec.transforms import build_transforms

    plan = Plan.model_validate(json.loads((run_dir / "plan.json").read_text())["plan"])
    deterministic, augment = build_transforms(plan)
    transform = Compose([*deterministic.transforms, *augment.transforms])
    config = recipe_config(manifest, EPOCHS, cohort_dir_of(manifest) / "cache")
    splits = pd.read_csv(run_dir / "splits.csv", dtype=str, keep_default_na=False)
    train_ids = set(splits.loc[splits["split"] == "train", "sample_id"])
    frame = read_manifest(manifest)
    rows = [row for row in frame.to_dict("records") if row["sample_id"] in train_ids]
    classes = sorted({row["label"] for row in rows})
    data = [{**row, "target": classes.index(row["label"])} for row in rows]

    torch.manual_seed(SEED)
    model_kwargs = dict(config.model.kwargs)
    model = create_model(config.model.name, 3, 1, len(classes), **model_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.training.lr, weight_decay=config.training.weight_decay)
    criterion = torch.nn.CrossEntropyLoss()
    dataset = Dataset(data=data, transform=transform)
    loader = DataLoader(dataset, batch_size=config.training.batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(SEED))
    epochs = []
    for epoch in range(1, EPOCHS + 1):
        model.train()
        started = time.perf_counter()
        waited = 0.0
        batches = iter(loader)
        while True:
            wait_started = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - wait_started
            if batch is None:
                break
            images = torch.as_tensor(batch["image"]).as_subclass(torch.Tensor)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(images), batch["target"])
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - started
        epochs.append({"epoch": epoch, "train_seconds": seconds, "data_wait_seconds": waited,
                       "loss": float(np.asarray(loss.detach()))})
    return epochs


# ------------------------------------------------------------------------------------------ run


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def run(quick: bool = False) -> dict:
    import torch

    size = QUICK if quick else FULL
    torch.set_num_threads(TORCH_THREADS)
    workers = usable_cores()
    header(NAME, "medrec.train.train (cached preprocessed samples) vs the MONAI tutorial pattern "
                 "(Dataset + transforms + DataLoader, no cache), same cohort, plan and model")
    manifest, cohort = build_cohort(size["patients"])
    say(f"data: {cohort['samples']} CT series of {cohort['patients']} synthetic patients ({cohort['files']} DICOM "
        f"files, 128 x 128 x {cohort['slices_per_series'][0]}-{cohort['slices_per_series'][1]}), recipe "
        f"{RECIPE.name} with augmentation on, {EPOCHS} epochs, {size['rounds']} round(s) A B A B; "
        f"torch threads {TORCH_THREADS}; baseline DataLoader num_workers {workers}")

    work = cohort_dir(size["patients"]) / "runs"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    medrec_rounds: list[dict[str, Any]] = []
    baseline_rounds: list[list[dict[str, float]]] = []
    for round_index in range(size["rounds"]):
        medrec = medrec_round(manifest, work, round_index)
        medrec_rounds.append(medrec)
        say(f"  round {round_index + 1} medrec: train() {medrec['total_s']:.1f} s; epochs "
            + ", ".join(f"{e['epoch']}: {e['train_seconds']:.2f} s (wait {e['data_wait_fraction']:.1%})"
                        for e in medrec["epochs"]))
        baseline = baseline_round(medrec_rounds[0]["run_dir"], manifest, workers)
        baseline_rounds.append(baseline)
        say(f"  round {round_index + 1} baseline: epochs "
            + ", ".join(f"{e['epoch']}: {e['train_seconds']:.2f} s (wait {e['data_wait_seconds'] / e['train_seconds']:.1%})"
                        for e in baseline))

    def timed_epochs(epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in epochs if e["epoch"] in TIMED_EPOCHS]

    medrec_timed = [e for r in medrec_rounds for e in timed_epochs(r["epochs"])]
    baseline_timed = [e for r in baseline_rounds for e in timed_epochs(r)]
    medrec_epoch_s = _mean([e["train_seconds"] for e in medrec_timed])
    baseline_epoch_s = _mean([e["train_seconds"] for e in baseline_timed])
    medrec_wait = sum(e["data_wait_seconds"] for e in medrec_timed) / sum(e["train_seconds"] for e in medrec_timed)
    baseline_wait = (sum(e["data_wait_seconds"] for e in baseline_timed)
                     / sum(e["train_seconds"] for e in baseline_timed))
    medrec_first = _mean([r["epochs"][0]["train_seconds"] for r in medrec_rounds])
    baseline_first = _mean([r[0]["train_seconds"] for r in baseline_rounds])
    medrec_full_epoch = _mean([e["seconds"] for e in medrec_timed])
    val_samples = int(medrec_rounds[0]["result"].val_metrics.get("n", 0))
    train_line = next((line for line in medrec_rounds[0]["log"].splitlines() if "split train:" in line), "")
    fill_line = next((line for line in medrec_rounds[0]["log"].splitlines() if "cache:" in line), "")
    say(f"  medrec train.log: {train_line.split(' ', 2)[-1].strip()}; {fill_line.split(' ', 2)[-1].strip()}")
    say(f"  medrec epochs {TIMED_EPOCHS}: {medrec_epoch_s:.2f} s per training pass ({medrec_full_epoch:.2f} s with "
        f"validation), data wait {medrec_wait:.1%}; epoch 1 {medrec_first:.2f} s")
    say(f"  baseline epochs {TIMED_EPOCHS}: {baseline_epoch_s:.2f} s per training pass, data wait {baseline_wait:.1%}; "
        f"epoch 1 {baseline_first:.2f} s")

    data_text = (f"{cohort['samples']} CT series / {cohort['patients']} patients, ct_lesion_3d recipe + augmentation, "
                 f"cnn_small, batch 4, epochs 2-3 x {size['rounds']} round(s)")
    figures = [
        Figure(NAME, "epoch time: MONAI tutorial loop / medrec train", baseline_epoch_s / medrec_epoch_s, 4.0, True,
               f"Dataset + Compose(LoadSampled chain + augmentation) + DataLoader(num_workers={workers}), no cache / "
               f"medrec.train.train training pass (cached samples), epochs 2-3; {data_text}",
               {"baseline_epoch_s": round(baseline_epoch_s, 2), "medrec_epoch_s": round(medrec_epoch_s, 2),
                "medrec_epoch_with_val_s": round(medrec_full_epoch, 2), "medrec_epoch1_s": round(medrec_first, 2),
                "baseline_epoch1_s": round(baseline_first, 2)}),
        Figure(NAME, "medrec data wait / training-pass time", medrec_wait, 0.10, False,
               f"time medrec's loop waits for the next batch / training-pass time (metrics.jsonl), epochs 2-3; "
               f"{data_text}",
               {"medrec_wait_s": round(sum(e['data_wait_seconds'] for e in medrec_timed), 3),
                "medrec_train_s": round(sum(e['train_seconds'] for e in medrec_timed), 2),
                "baseline_wait_fraction": round(baseline_wait, 3)}),
    ]
    print_figures(figures)
    return {
        "figures": [f.as_dict() for f in figures],
        "data": {"samples": cohort["samples"], "patients": cohort["patients"], "dicom_files": cohort["files"],
                 "slices_per_series": cohort["slices_per_series"], "image_size": cohort["image_size"],
                 "input_size": json.loads((medrec_rounds[0]["run_dir"] / "plan.json").read_text())["plan"]["input_size"],
                 "epochs": EPOCHS, "timed_epochs": list(TIMED_EPOCHS), "rounds": size["rounds"],
                 "baseline_workers": workers, "torch_threads": TORCH_THREADS, "val_samples": val_samples},
        "seconds": {
            "medrec_train_call": [round(r["total_s"], 2) for r in medrec_rounds],
            "medrec_epochs": [[{k: e[k] for k in ("epoch", "train_seconds", "data_wait_seconds", "seconds")}
                               for e in r["epochs"]] for r in medrec_rounds],
            "baseline_epochs": [[{k: round(v, 3) for k, v in e.items()} for e in r] for r in baseline_rounds],
        },
        "notes": "epochs 2-3 of each round, rounds alternating medrec / baseline; training pass only (validation "
                 "apart); torch limited to 1 intra-op thread on both sides; the baseline re-decodes every series "
                 "each epoch as the MONAI tutorials do",
    }


def main() -> None:
    args = bench_arguments(__doc__)
    write_record(run(args.quick), args.json)


if __name__ == "__main__":
    main()
