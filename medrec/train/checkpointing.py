"""The last-epoch checkpoint: what ``--resume`` needs to end with the weights of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from medrec.atomicio import read_complete_lines, write_text
from medrec.checkpoint import load_checkpoint
from medrec.determinism import capture_rng_state, restore_rng_state
from medrec.errors import ConfigError, ModelError
from medrec.rundir import CHECKPOINT_STEM, METRICS_JSONL
from medrec.train.early_stopping import EarlyStopping
from medrec.train.optimisation import Optimisation


def checkpoint_state(
    epoch: int,
    model: torch.nn.Module,
    optimisation: Optimisation,
    stopping: EarlyStopping,
    record: dict[str, Any],
    world_size: int,
    plan_hash: str,
    seed: int,
) -> dict[str, Any]:
    """Everything the next epoch depends on: weights, optimiser, schedule, scaler, RNG states,
    early-stopping state, the epoch's metrics record, the process count and the plan's hash."""
    rng_tensors, rng_scalars = capture_rng_state()
    scheduler_state = {k: v for k, v in optimisation.scheduler.state_dict().items() if k != "lr_lambdas"}
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimisation.optimizer.state_dict(),
        "scheduler": scheduler_state,
        "scaler": optimisation.scaler.state_dict() if optimisation.scaler is not None else None,
        "rng": rng_tensors,
        "rng_scalars": rng_scalars,
        "loop": stopping.state_dict(),
        "metrics": record,
        "world_size": world_size,
        "plan_hash": plan_hash,
        "sampler": {"seed": seed, "rule": "generator seeded per epoch from (seed, epoch)"},
    }


def restore_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimisation: Optimisation,
    stopping: EarlyStopping,
    world_size: int,
    plan_hash: str,
    rewrite_metrics: bool,
) -> int:
    """Load the run's checkpoint into the training state; returns its (last completed) epoch.

    With ``rewrite_metrics`` (rank 0), ``metrics.jsonl`` is cut back to that epoch, so the epochs
    trained after it and lost with the process are written again, once.

    Raises:
        ModelError: the checkpoint was made with another preprocessing plan.
        ConfigError: the run was started with another number of processes.
    """
    state = load_checkpoint(run_dir / CHECKPOINT_STEM)
    if state.get("plan_hash") != plan_hash:
        raise ModelError(f"{run_dir}: the checkpoint was made with another preprocessing plan; cannot resume")
    if state.get("world_size") != world_size:
        raise ConfigError(
            f"{run_dir}: the run was started with {state.get('world_size')} process(es), now "
            f"{world_size}; resume with the same number to get the same result"
        )
    model.load_state_dict(state["model"])
    optimisation.optimizer.load_state_dict(state["optimizer"])
    optimisation.scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None]})
    if optimisation.scaler is not None and state.get("scaler"):
        optimisation.scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"], state["rng_scalars"])
    stopping.load_state_dict(state["loop"])
    epoch = int(state["epoch"])
    if rewrite_metrics:
        metrics_path = run_dir / METRICS_JSONL
        kept = [line for line in read_complete_lines(metrics_path) if json.loads(line)["epoch"] <= epoch]
        if not any(json.loads(line)["epoch"] == epoch for line in kept):
            kept.append(json.dumps(state["metrics"]))
        write_text(metrics_path, "".join(line + "\n" for line in kept))
    return epoch
