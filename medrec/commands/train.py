"""``medrec train``: train a classifier from a YAML recipe into a self-describing run directory."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer


class Device(str, Enum):
    """Where to train."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""

    @app.command("train")
    def train_command(
        config_path: Path = typer.Argument(
            ..., metavar="CONFIG.yaml", help="Training config (YAML) with data.manifest from 'medrec index'."),
        run_dir: Path = typer.Option(..., "-o", "--out", help="Run directory to write (must not hold a finished run)."),
        resume: bool = typer.Option(False, "--resume", help="Continue an unfinished run from its last completed epoch."),
        device: Device | None = typer.Option(None, "--device", help="Override training.device (auto, cpu, cuda)."),
    ) -> None:
        """Train a classifier; write config.yaml, splits.csv, model.safetensors, model.json, metrics.jsonl, train.log.

        CONFIG.yaml holds data (data.manifest, optional data.splits) and the training sections of a recipe: split, preprocessing, model, training, threshold, calibration. Paths in it are relative to its folder. To index, split, train and evaluate in one go, run a whole recipe instead: 'medrec run NAME' with a packaged recipe (see 'medrec recipes'). Splits are made by patient (or reused from data.splits), preprocessing is planned on the training split, each sample is preprocessed once into a cache, and the epoch with the best validation AUC is kept. The operating threshold and the temperature calibration are chosen on the validation split; the test split is never read. Under torchrun each process trains on its shard (DDP) and rank 0 writes the run.

        Examples:

            medrec train train.yaml -o runs/exp1   (train.yaml names data.manifest from medrec index)

            medrec train train.yaml -o runs/exp1 --resume

            torchrun --nproc_per_node=2 -m medrec train train.yaml -o runs/ddp
        """
        import os

        from medrec.config import load_config
        from medrec.console import console, print_summary
        from medrec.errors import ConfigError
        from medrec.train import train
        from medrec.workflow import packaged_recipes

        if not config_path.is_file() and config_path.stem in {recipe.name for recipe in packaged_recipes()}:
            raise ConfigError(f"{config_path}: config file not found; {config_path.stem!r} is a packaged recipe "
                              f"(index, split, train, evaluate): run it with 'medrec run {config_path.stem}'")
        config = load_config(config_path)
        result = train(config, run_dir, resume=resume, device=device.value if device else None)
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
        if result.threshold and result.threshold.get("value") is not None:
            rows += [
                ("threshold", f"{result.threshold['value']:.4f} ({result.threshold['method']}, on validation)"),
                ("val sensitivity", f"{metrics.get('sensitivity', float('nan')):.3f}"),
                ("val specificity", f"{metrics.get('specificity', float('nan')):.3f}"),
            ]
        elif result.threshold:
            rows.append(("decision", "argmax (multi-class)"))
        if result.calibration:
            rows.append(("temperature", f"{result.calibration.get('temperature', 1.0):.3f}"))
        rows.append(("time", f"{result.seconds:.1f} s"))
        print_summary("medrec train", rows)
        console.print(f"next: medrec evaluate {result.run_dir}")
