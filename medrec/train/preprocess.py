"""Preprocessing for training: the plan (training split only), the memory check and the sample cache.

Rank 0 makes the plan and fills the cache; every rank then reads the same cached tensors. The
test split is never preprocessed during training.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medrec.atomicio import write_text
from medrec.config import TrainConfig
from medrec.data.cache import CachedSample, SampleCache
from medrec.data.dataset import SampleStore, fill_cache
from medrec.errors import LeakageError, ModelError, ResourceBudgetError
from medrec.hashing import sha256_json
from medrec.planning import Plan
from medrec.rundir import PLAN_JSON
from medrec.train.inputs import TrainingData

Log = Callable[[str], None]


def plan_hash(plan_data: dict[str, Any]) -> str:
    """sha256 of a plan's canonical JSON (keys sorted)."""
    return sha256_json(plan_data)


def make_run_plan(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    data: TrainingData,
    device: torch.device,
    finding_size: tuple[float | None, str],
    log: Log,
) -> dict[str, Any]:
    """The preprocessing plan as JSON data, made on the training split only and written to
    ``plan.json`` (rank 0); a resumed run reuses its own.

    Args:
        finding_size: the smallest annotated lesion (mm) and where that figure comes from, or
            ``(None, "")`` (see :func:`medrec.planning.make_plan`).
    """
    plan_path = run_dir / PLAN_JSON
    if resume and plan_path.is_file():
        log("plan: reusing plan.json of this run")
        return json.loads(plan_path.read_text(encoding="utf-8"))["plan"]
    from medrec.loader import load_sample
    from medrec.planning import fingerprint, make_plan

    train_rows = data.rows[data.rows["sample_id"].isin(set(data.parts["train"]))]
    data_fingerprint = fingerprint(train_rows, sample_loader=load_sample, seed=config.training.seed)
    budget = "gpu" if device.type == "cuda" else "cpu"
    plan = make_plan(data_fingerprint, config.preprocessing, compute_budget=budget,
                     finding_size_mm=finding_size[0], finding_size_source=finding_size[1])
    plan_data = plan.model_dump(mode="json")
    write_text(plan_path, json.dumps({"plan": plan_data, "plan_hash": plan_hash(plan_data)}, indent=1, default=str)
               + "\n")
    for reason in plan.reasons:
        log(f"plan: {reason}")
    return plan_data


def check_budget(config: TrainConfig, input_shape: tuple[int, ...]) -> None:
    """One batch of inputs must fit ``training.memory_budget_gb``.

    Raises:
        ResourceBudgetError: naming the batch, the shape and what to lower.
    """
    budget = config.training.memory_budget_gb * 1024**3
    batch_bytes = config.training.batch_size * math.prod(input_shape) * 4
    if batch_bytes > budget:
        raise ResourceBudgetError(
            f"one batch of {config.training.batch_size} inputs of shape {list(input_shape)} needs "
            f"{batch_bytes / 1024**3:.2f} GiB > training.memory_budget_gb {config.training.memory_budget_gb}; "
            "lower training.batch_size or preprocessing.input_size, or raise the budget"
        )


def cache_samples(
    config: TrainConfig,
    data: TrainingData,
    plan: Plan,
    deterministic: Callable,
    cache_dir: Path,
    on_main: Callable[[Callable[[], Any]], Any],
    bars: Callable[[], contextlib.AbstractContextManager],
    log: Log,
) -> tuple[SampleStore, tuple[int, ...]]:
    """Preprocess train + val once into the cache (rank 0; the others read it) and hold them.

    Args:
        deterministic: the plan's deterministic transforms.
        on_main: runs a callable on rank 0 and shares its result.
        bars: progress bars (a context manager giving a rich ``Progress`` or a stand-in).

    Returns:
        The store of preprocessed samples and their common input shape ``(C, *spatial)``.

    Raises:
        LeakageError: a test sample was about to be preprocessed.
        ModelError: samples of different shapes (the plan must fix the input size).
        ResourceBudgetError: a batch does not fit the memory budget.
    """
    needed = data.parts["train"] + data.parts["val"]
    if set(needed) & set(data.parts["test"]):
        raise LeakageError("internal: a test sample was about to be preprocessed for training")
    cache = SampleCache(cache_dir, plan_hash(plan.model_dump(mode="json")))
    rows_by_id = {row["sample_id"]: row for row in data.rows.to_dict("records")}
    computed: dict[str, CachedSample] = {}  # rank 0 keeps what it preprocessed instead of reading it back

    def fill() -> int:
        with bars() as bar:
            task = bar.add_task("Preprocessing", total=len(needed), status="")
            computed.update(fill_cache(
                [rows_by_id[s] for s in needed], deterministic, cache, config.training.num_workers,
                on_sample=lambda _: bar.advance(task),
            ))
        return len(computed)

    fresh = on_main(fill)
    log(f"cache: {len(needed) - fresh} samples cached, {fresh} preprocessed into {cache_dir}")
    store = SampleStore(cache, needed, config.training.memory_budget_gb * 1024**3, preloaded=computed)
    shapes = {tuple(store.get(s).array.shape) for s in needed}
    if len(shapes) != 1:
        raise ModelError(f"preprocessed samples differ in shape ({sorted(shapes)[:3]}); the plan must fix input_size")
    input_shape = shapes.pop()
    check_budget(config, input_shape)
    return store, input_shape
