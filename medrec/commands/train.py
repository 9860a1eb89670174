"""``medrec train``: train a classifier from a YAML recipe into a self-describing run directory."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer


def on_interrupt(params: Mapping[str, Any], args: Sequence[str]) -> tuple[str, list[str]]:
    """What an interrupted ``medrec train`` kept, and the command line that continues it (with ``--resume``).

    Args:
        params: the parsed parameters of the command (``run_dir``, ``resume``).
        args: the command line after ``medrec``.

    Returns:
        The text saying what was kept, and the arguments that resume the run.
    """
    # deferred: medrec.rundir imports torch, which the CLI does not load before a command needs it
    from medrec.atomicio import read_complete_lines
    from medrec.rundir import CHECKPOINT_STEM, METRICS_JSONL

    run_dir = Path(params["run_dir"])
    resume_args = list(args) if params.get("resume") else [*args, "--resume"]
    epoch = None
    for line in reversed(read_complete_lines(run_dir / METRICS_JSONL)):
        try:
            epoch = json.loads(line).get("epoch")
        except (json.JSONDecodeError, AttributeError):
            continue
        break
    if epoch is None or not (run_dir / f"{CHECKPOINT_STEM}.json").is_file():
        return f"no epoch had completed; {run_dir} keeps what was prepared, training restarts at epoch 1", resume_args
    return (f"{run_dir} keeps the checkpoint of epoch {epoch}, the last completed one ({CHECKPOINT_STEM}.*); "
            f"training continues at epoch {epoch + 1}"), resume_args


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""

    @app.command("train")
    def train_command(
        config_path: Path = typer.Argument(
            ..., metavar="RECIPE.yaml",
            help="A recipe file (as 'medrec recipes show NAME' prints) or a packaged recipe's name."),
        run_dir: Path = typer.Option(..., "-o", "--out", help="Run directory to write (must not hold a finished run)."),
        manifest: Path | None = typer.Option(
            None, "--manifest", help="manifest.csv from 'medrec index' (overrides data.manifest)."),
        splits: Path | None = typer.Option(
            None, "--splits", help="splits.csv from 'medrec split' (overrides data.splits; default: split by the "
                                   "recipe's split section)."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue an unfinished run from its last completed epoch."),
        device: str | None = typer.Option(None, "--device", help="Override training.device (auto, cpu, cuda, "
                                                                 "cuda:N)."),
    ) -> None:
        """Train a classifier; write config.yaml, splits.csv, model.safetensors, model.json, metrics.jsonl, train.log.

        RECIPE.yaml is a recipe, the format of 'medrec run' ('medrec recipes show
        NAME > my.yaml' gives one to edit): training uses data.manifest (or
        --manifest), data.splits (or --splits), the label keys of data, task and the
        split, preprocessing, model, training, threshold and calibration sections;
        it checks but ignores name, description, data.scans / labels / match_on,
        index and evaluation, and says so. Paths in it are relative to its folder.
        To index, split, train and evaluate in one go, run the recipe instead:
        'medrec run RECIPE'. Splits are made by patient (or reused from
        data.splits), preprocessing is planned on the training split, each sample is
        preprocessed once into a cache, and the epoch with the best validation AUC
        is kept. The operating threshold and the temperature calibration are chosen
        on the validation split; the test split is never read. Under torchrun each
        process trains on its shard (DDP) and rank 0 writes the run. With 'task:
        anomaly' (recipes ct_anomaly, mri_anomaly) a finding-map model learns from
        the training split's normal studies alone (training.anomaly_method:
        synthetic anomalies, a Gaussian of its features, or an autoencoder's
        reconstruction error); the labelled positives serve validation and test
        only, and with data.unlabelled: normal a folder without labels trains.

        Examples:

            medrec recipes show ct_lesion_3d > my_recipe.yaml

            medrec train my_recipe.yaml -o runs/exp1 --manifest work/index/manifest.csv --splits work/splits.csv

            medrec train train.yaml -o runs/exp1   (train.yaml sets data.manifest)

            medrec train train.yaml -o runs/exp1 --resume

            torchrun --nproc_per_node=2 -m medrec train train.yaml -o runs/ddp
        """
        import os

        from rich.markup import escape

        from medrec.console import console, print_summary
        from medrec.train import train
        from medrec.workflow import load_train_recipe

        recipe = load_train_recipe(config_path, manifest=manifest, splits=splits)
        if os.environ.get("RANK", "0") == "0":
            console.print(f"recipe {escape(str(config_path))}: {escape(recipe.describe())}", soft_wrap=True)
        result = train(recipe.config, run_dir, resume=resume, device=device)
        if os.environ.get("RANK", "0") != "0":
            return  # under torchrun only rank 0 reports
        metrics = result.val_metrics
        rows: list[tuple[str, object]] = [
            ("run directory", str(result.run_dir)),
            ("classes", ", ".join(result.classes)),
            ("epochs trained", f"{result.epochs_completed}" + (" (early stop)" if result.stopped_early else "")),
            ("best epoch", result.best_epoch),
            ("val AUC", "n/a" if metrics.get("auc") is None else f"{metrics['auc']:.3f}"),
        ]
        if result.threshold is not None and result.threshold.value is not None:
            rows += [
                ("threshold", f"{result.threshold.value:.4f} ({result.threshold.method}, on validation)"),
                ("val sensitivity", f"{metrics.get('sensitivity', float('nan')):.3f}"),
                ("val specificity", f"{metrics.get('specificity', float('nan')):.3f}"),
            ]
        elif result.threshold is not None:
            rows.append(("decision", "argmax (multi-class)"))
        if result.calibration is not None:
            rows.append(("temperature", f"{result.calibration.temperature:.3f}"))
        rows.append(("time", f"{result.seconds:.1f} s"))
        print_summary("medrec train", rows)
        console.print(f"next: medrec evaluate {result.run_dir}")
