"""DistributedDataParallel plumbing for ``torchrun --nproc_per_node=N -m medrec train``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them training runs in one
process. The process group uses gloo on CPU and nccl on CUDA. Rank 0 alone writes the run
directory; validation scores are gathered onto every rank so all ranks take the same
early-stopping decision.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

import medrec.errors as errors
from medrec.errors import ConfigError, MedrecError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the world size and whether it owns the process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or any launcher using its variables) started this process."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def setup_distributed(device_type: str) -> DistributedContext:
    """Join the process group when launched by torchrun; otherwise a single-process context.

    Args:
        device_type: ``"cpu"`` (gloo backend) or ``"cuda"`` (nccl backend).

    Raises:
        ConfigError: the torchrun variables are malformed, or CUDA has fewer devices than local ranks.
    """
    if not launched_by_torchrun():
        return DistributedContext()
    try:
        rank, world_size, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError as e:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({e})") from e
    if world_size <= 1:
        return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s); "
                "lower --nproc_per_node"
            )
        torch.cuda.set_device(local_rank)
    initialised_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        initialised_here = True
    return DistributedContext(rank, world_size, local_rank, initialised_here)


def teardown_distributed(context: DistributedContext, failed: bool = False) -> None:
    """Leave the process group if this process created it, after every rank has arrived.

    The barrier keeps rank 0 (which hosts the rendezvous store) from leaving while another rank
    still talks to it; destroying the group joins gloo's threads, so none is left at exit (a
    joinable thread at exit aborts the process: "terminate called without an active exception").
    A rank that failed (``failed``) skips the barrier: the others then fail on their next collective.
    """
    if not (context.initialised_here and dist.is_initialized()):
        return
    try:
        if not failed:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    """Wait for every rank (no-op in one process)."""
    if context.enabled:
        dist.barrier()


def all_gather_objects(context: DistributedContext, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (json-like values; one process: ``[value]``)."""
    if not context.enabled:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(context: DistributedContext, value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not context.enabled:
        return value
    holder = [value if context.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def on_main(context: DistributedContext, action: Callable[[], Any]) -> Any:
    """Run ``action`` on rank 0 and share its result; a :class:`MedrecError` there is raised on every rank
    (same class and message), so no rank waits for a result that will not come."""
    outcome: Any = None
    if context.is_main:
        try:
            outcome = ("ok", action())
        except MedrecError as e:
            outcome = ("error", type(e).__name__, str(e))
            if not context.enabled:
                raise
            broadcast_object(context, outcome)
            raise
    outcome = broadcast_object(context, outcome)
    if outcome[0] == "error":
        raise getattr(errors, outcome[1], MedrecError)(outcome[2])
    return outcome[1]


def all_reduce_sum(context: DistributedContext, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64 on CPU through gloo/nccl)."""
    if not context.enabled:
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


class DistributedWeightedSampler(Sampler[int]):
    """Class-balanced sampling with replacement, sharded over ranks.

    Every rank draws the same weighted index list from a generator seeded by (seed, epoch), then
    takes every ``world_size``-th index starting at its rank. Hand-written because torch has no
    distributed variant of ``WeightedRandomSampler``.
    """

    def __init__(self, weights: np.ndarray, num_samples: int, rank: int, world_size: int, seed: int) -> None:
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.num_samples = int(num_samples)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0
        self.per_rank = -(-self.num_samples // world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        total = self.per_rank * self.world_size
        indices = torch.multinomial(self.weights, total, replacement=True, generator=generator).tolist()
        return iter(indices[self.rank :: self.world_size])

    def __len__(self) -> int:
        return self.per_rank
