"""Checkpoints as safetensors + JSON: weights, optimizer, scheduler and RNG state, never a pickle.

``checkpoint_last.safetensors`` holds every tensor (model weights under ``model.``, optimizer
moments under ``optimizer.``, RNG states under ``rng.``); ``checkpoint_last.json`` holds the
scalars and the structure, with ``{"__tensor__": key}`` where a tensor sits in the state. The JSON
is written last and names the sha256 of the tensor file, so a half-written pair is detected.

Saving a pair takes three atomic steps, so that a process killed (or a disk filling up) between
any two of them still leaves a pair that loads: the new tensors go to
``checkpoint_last.next.safetensors``, the JSON naming their sha256 replaces the old one (this
commits the new checkpoint), and the tensors are renamed over ``checkpoint_last.safetensors``.
A reader that finds the JSON committed but the rename not done loads the ``.next`` file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from medrec.atomicio import write_bytes, write_text
from medrec.errors import ModelError, OutputError
from medrec.hashing import sha256_file

CHECKPOINT_FORMAT = "medrec-checkpoint-1"
# Leading bytes of the weight formats we refuse: pickle protocols 2-5 and zip (torch.save).
_PICKLE_OR_ZIP_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


def encode_state(state: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Turn a nested state (dicts, lists, tuples, scalars, tensors) into JSON-able data.

    Tensors go into ``tensors`` under ``prefix``-based keys; dicts with non-string keys and
    tuples are tagged so that :func:`decode_state` rebuilds them exactly.
    """
    if isinstance(state, torch.Tensor):
        key, suffix = prefix, 1
        while key in tensors:  # keys with dots could collide with nested names
            key, suffix = f"{prefix}#{suffix}", suffix + 1
        tensors[key] = state.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(state, dict):
        return {"__dict__": [[_encode_key(k), encode_state(v, f"{prefix}.{k}", tensors)] for k, v in state.items()]}
    if isinstance(state, tuple):
        return {"__tuple__": [encode_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(state)]}
    if isinstance(state, list):
        return [encode_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(state)]
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise TypeError(f"cannot store {type(state).__name__} at {prefix} in a checkpoint (tensors and scalars only)")


def _encode_key(key: Any) -> Any:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"checkpoint dict keys must be str or int, got {type(key).__name__}")
    return {"__int__": key} if isinstance(key, int) else key


def decode_state(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_state`."""
    if isinstance(data, dict):
        if "__tensor__" in data:
            key = data["__tensor__"]
            if key not in tensors:
                raise ModelError(f"checkpoint is inconsistent: tensor {key!r} is missing from the safetensors file")
            return tensors[key]
        if "__tuple__" in data:
            return tuple(decode_state(v, tensors) for v in data["__tuple__"])
        if "__dict__" in data:
            return {
                (k["__int__"] if isinstance(k, dict) else k): decode_state(v, tensors) for k, v in data["__dict__"]
            }
        raise ModelError(f"checkpoint holds an untagged mapping with keys {sorted(data)[:5]}")
    if isinstance(data, list):
        return [decode_state(v, tensors) for v in data]
    return data


def check_safetensors_file(path: str | os.PathLike[str]) -> bytes:
    """Read a weights file and accept it only if it is safetensors.

    Returns:
        The file's bytes.

    Raises:
        ModelError: the file is missing, or is not safetensors (a pickle or torch zip is refused
            without being opened as one).
    """
    source = Path(path)
    if not source.is_file():
        raise ModelError(f"{source}: weights file not found")
    data = source.read_bytes()
    if data.startswith(_PICKLE_OR_ZIP_MAGIC):
        raise ModelError(
            f"{source}: refused: this is a pickle / torch.save file; medrec loads only safetensors "
            "(convert it with safetensors.torch.save_file on a machine you trust)"
        )
    if len(data) < 10:
        raise ModelError(
            f"{source}: refused: truncated file ({len(data)} bytes); only safetensors weights are accepted")
    header_length = int.from_bytes(data[:8], "little")
    if header_length <= 0 or 8 + header_length > len(data) or data[8:9] != b"{":
        raise ModelError(
            f"{source}: refused: not a safetensors file (bad header); only safetensors weights are accepted")
    return data


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load every tensor of a safetensors file (after :func:`check_safetensors_file`)."""
    data = check_safetensors_file(path)
    try:
        return dict(load_safetensors_bytes(data))
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ModelError(
            f"{path}: refused: damaged safetensors file ({e}); only intact safetensors are accepted") from e


def save_weights(
    path: str | os.PathLike[str], state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> str:
    """Write a model state dict as safetensors atomically; return the sha256 of the file."""
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state_dict.items()}
    data = save_safetensors_bytes(tensors, metadata=metadata)
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(stem: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``stem.next.safetensors``, then ``stem.json`` (commits the pair), then rename to ``stem.safetensors``.

    Interrupted at any point, :func:`load_checkpoint` reads either the previous pair or this one.

    Args:
        stem: path without suffix, e.g. ``RUN/checkpoint_last``.
        state: nested dict of tensors and scalars (model / optimizer / scheduler / RNG / loop state).
    """
    base = Path(stem)
    tensors: dict[str, torch.Tensor] = {}
    structure = encode_state(state, "s", tensors)
    data = save_safetensors_bytes(tensors)
    pending = _pending_tensor_path(base)
    write_bytes(pending, data)
    document = {"format": CHECKPOINT_FORMAT, "tensors_sha256": hashlib.sha256(data).hexdigest(), "state": structure}
    write_text(base.with_suffix(".json"), json.dumps(document, indent=1) + "\n")  # commits the new pair
    try:
        os.replace(pending, base.with_suffix(".safetensors"))
    except OSError as e:
        raise OutputError(f"{pending}: cannot rename to {base.with_suffix('.safetensors').name} ({e.strerror})") from e


def _pending_tensor_path(base: Path) -> Path:
    """Where :func:`save_checkpoint` puts new tensors until their JSON is committed."""
    return base.with_name(base.name + ".next.safetensors")


def load_checkpoint(stem: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ModelError: a file is missing, the pair does not match, or the tensor file is not safetensors.
    """
    base = Path(stem)
    json_path, tensor_path = base.with_suffix(".json"), base.with_suffix(".safetensors")
    if not json_path.is_file():
        raise ModelError(f"{json_path}: checkpoint not found; the run has no completed epoch to resume from")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{json_path}: damaged checkpoint description ({e})") from e
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise ModelError(f"{json_path}: not a medrec checkpoint (format {found!r})")
    expected = document.get("tensors_sha256")
    pending = _pending_tensor_path(base)
    if pending.is_file() and not (tensor_path.is_file() and sha256_file(tensor_path) == expected):
        if sha256_file(pending) == expected:  # the JSON was committed, the rename not yet done
            tensor_path = pending
    data = check_safetensors_file(tensor_path)
    if hashlib.sha256(data).hexdigest() != expected:
        raise ModelError(
            f"{tensor_path}: does not match {json_path.name} (checksum differs); the checkpoint is damaged")
    try:
        tensors = dict(load_safetensors_bytes(data))
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ModelError(f"{tensor_path}: damaged safetensors file ({e})") from e
    return decode_state(document["state"], tensors)

