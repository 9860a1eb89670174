"""Deterministic sharding of a scoring job over many machines.

A sample belongs to part ``sha256(key) mod K``. The key is the sample id at series level; at
study or patient level it is the study / patient, so that a group is never split between
machines and each part file already holds whole groups. The hash depends on nothing but the
key, so every machine computes the same partition without talking to the others.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from medrec.errors import ConfigError

LEVEL_KEYS: dict[str, str] = {"series": "sample_id", "study": "study_uid", "patient": "patient_id"}


def shard_of(key: str, num_parts: int) -> int:
    """The part (0 .. num_parts-1) that ``key`` belongs to.

    Args:
        key: a sample id (or a study / patient key at those levels).
        num_parts: the number of parts K (>= 1).

    Returns:
        ``int(sha256(key)) mod num_parts``.
    """
    if num_parts < 1:
        raise ConfigError(f"--num-parts must be >= 1, got {num_parts}")
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_parts


def check_part(num_parts: int, part_id: int) -> None:
    """Validate ``--num-parts`` / ``--part-id``.

    Raises:
        ConfigError: ``num_parts < 1`` or ``part_id`` outside ``0 .. num_parts-1``.
    """
    if num_parts < 1:
        raise ConfigError(f"--num-parts must be >= 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise ConfigError(f"--part-id must be in 0..{num_parts - 1} for --num-parts {num_parts}, got {part_id}")


def select_part(manifest: pd.DataFrame, num_parts: int, part_id: int, level: str = "series") -> pd.DataFrame:
    """The rows of ``manifest`` that belong to part ``part_id`` of ``num_parts``.

    Args:
        manifest: manifest rows (needs ``sample_id``, and ``study_uid`` / ``patient_id`` at those levels).
        num_parts: K; 1 returns the manifest unchanged.
        part_id: which part, 0-based.
        level: ``series`` (key = sample_id), ``study`` (study_uid) or ``patient`` (patient_id).

    Returns:
        The selected rows, in manifest order, with a fresh index.
    """
    check_part(num_parts, part_id)
    if level not in LEVEL_KEYS:
        raise ConfigError(f"level must be one of {', '.join(LEVEL_KEYS)}, got {level!r}")
    if num_parts == 1:
        return manifest.reset_index(drop=True)
    keys = group_keys(manifest, level)
    mask = [shard_of(key, num_parts) == part_id for key in keys]
    return manifest.loc[mask].reset_index(drop=True)


def group_keys(manifest: pd.DataFrame, level: str) -> list[str]:
    """The grouping key of each row at ``level``: its sample id, study uid or patient id.

    An empty study uid or patient id falls back to the sample id, so that unrelated samples are
    never merged into one group.
    """
    column = LEVEL_KEYS[level]
    keys: list[str] = []
    for _, row in manifest.iterrows():
        value = str(row.get(column, "") or "")
        keys.append(value if value else f"sample:{row['sample_id']}")
    return keys
