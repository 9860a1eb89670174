"""Loading local weights into a registered model: safetensors files only, never a pickle."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from medrec.errors import ModelError

logger = logging.getLogger("medrec.models")

# Prefixes that wrappers add to every key: DataParallel / DDP, Lightning-style modules, torch.compile.
KEY_PREFIXES: tuple[str, ...] = ("module.", "model.", "_orig_mod.")
PICKLE_SUFFIXES: frozenset[str] = frozenset({".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".tar", ".npy", ".npz"})


def _strip_prefixes(key: str, known: set[str]) -> str:
    candidate = key
    while candidate not in known:
        for prefix in KEY_PREFIXES:
            if candidate.startswith(prefix):
                candidate = candidate[len(prefix):]
                break
        else:
            return key
    return candidate


def load_pretrained(model: torch.nn.Module, path: str | Path, strict: bool = False) -> tuple[list[str], list[str]]:
    """Load weights from a local ``.safetensors`` file into ``model`` (in place).

    Keys may carry the prefixes ``module.``, ``model.`` or ``_orig_mod.``; they are stripped when
    the bare key exists in the model. A tensor whose shape differs from the model's (e.g. a head
    for another number of classes) is not loaded and reported as unexpected.

    Args:
        model: the model to fill.
        path: a local safetensors file. Pickle-based checkpoints (``.pt``, ``.pth``, ...) are refused:
            loading them can run arbitrary code.
        strict: raise when any key is missing or unexpected.

    Returns:
        ``(missing_keys, unexpected_keys)``: model keys the file did not provide, and file keys that
        were not loaded (unknown to the model or of another shape).

    Raises:
        ModelError: not a safetensors file, unreadable, or ``strict`` and keys do not match.
    """
    source = Path(path)
    suffix = source.suffix.lower()
    if suffix in PICKLE_SUFFIXES or suffix != ".safetensors":
        raise ModelError(
            f"{source}: refusing to load weights from a {suffix or 'suffix-less'} file; only .safetensors is "
            "accepted (pickle-based checkpoints can run code when loaded). Convert it once, in an environment "
            "you trust: safetensors.torch.save_file(torch.load(path, weights_only=True), 'weights.safetensors')"
        )
    if not source.is_file():
        raise ModelError(f"{source}: weights file not found")
    try:
        tensors = load_file(str(source), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{source}: not a readable safetensors file ({e})") from e

    own_state = model.state_dict()
    known = set(own_state)
    loadable: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, tensor in tensors.items():
        target = _strip_prefixes(key, known)
        if target not in known:
            unexpected.append(key)
        elif tuple(own_state[target].shape) != tuple(tensor.shape):
            unexpected.append(key)
            mismatched.append(f"{key} {tuple(tensor.shape)} vs model {tuple(own_state[target].shape)}")
        else:
            loadable[target] = tensor
    missing = sorted(known - set(loadable))
    if strict and (missing or unexpected):
        raise ModelError(
            f"{source}: weights do not match the model: {len(missing)} missing key(s) "
            f"({', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}), {len(unexpected)} unexpected key(s) "
            f"({', '.join(unexpected[:5])}{'...' if len(unexpected) > 5 else ''}); pass strict=False to load the rest"
        )
    model.load_state_dict(loadable, strict=False)
    logger.info(
        "loaded %d of %d tensors from %s (%d missing, %d unexpected)",
        len(loadable), len(own_state), source.name, len(missing), len(unexpected),
    )
    if mismatched:
        logger.warning("shape mismatch, not loaded: %s", "; ".join(mismatched[:10]))
    return missing, sorted(unexpected)
