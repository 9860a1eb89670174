"""SHA-256 of files and of JSON-able values: the fingerprints that runs, steps and reports record.

Standard library only, so that the report and the index can hash without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike[str], prefix: bytes = b"") -> str:
    """Hex SHA-256 of ``prefix`` followed by a file's bytes, read in 1 MiB blocks.

    Args:
        path: the file.
        prefix: bytes hashed first (a domain separator, e.g. for a key derived from the file).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256(prefix)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hex SHA-256 of ``value`` as canonical JSON (sorted keys; what JSON cannot hold as ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()
