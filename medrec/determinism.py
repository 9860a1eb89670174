"""Seeding, deterministic kernels and RNG state capture (for bit-identical resumes).

Bit-identical weights for the same seed hold on the same machine with the same torch build,
the same device type, the same ``num_workers`` and the same torch thread count; on CUDA they also
need ``CUBLAS_WORKSPACE_CONFIG`` (set here before the first CUDA call) and no AMP.
"""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def enable_deterministic_mode() -> None:
    """Ask torch for deterministic kernels; ops without one warn instead of failing."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.use_deterministic_algorithms(True, warn_only=True)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (e.g. base seed, epoch, sample index), stable across runs."""
    sequence = np.random.SeedSequence([int(p) % 2**63 for p in parts])
    return int(sequence.generate_state(2, dtype=np.uint32).astype(np.uint64).dot([1, 2**32]) % 2**63)


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """The global RNG states as (tensors for safetensors, json-able scalars); no pickle needed."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    tensors["rng.numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    version, python_state, gauss_next = random.getstate()
    scalars = {
        "numpy": {
            "name": name, "pos": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }
    return tensors, scalars


def restore_rng_state(tensors: dict[str, torch.Tensor], scalars: dict) -> None:
    """Restore what :func:`capture_rng_state` captured."""
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    cuda_keys = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    cuda_states = [tensors[key] for key in cuda_keys]
    if cuda_states and torch.cuda.is_available():
        for index, state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.to(torch.uint8), index)
    numpy_state = scalars["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            tensors["rng.numpy.keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = scalars["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))
