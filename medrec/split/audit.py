"""The leakage audit run before splits are written: a patient, a study or identical pixel content in
two partitions is refused, the patients named by a keyed pseudonym, never by their raw id.
"""

from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import pandas as pd

from medrec.errors import LeakageError, ManifestError
from medrec.split.cohort import _without_split

MAX_LISTED = 10  # offenders listed per kind of leak in an error message


def pseudonym_key(manifest: pd.DataFrame) -> bytes:
    """Key for :func:`patient_pseudonym`: SHA-256 of the manifest's sorted sample ids.

    Keying the pseudonyms with the manifest keeps a log line from being reversed by hashing a
    list of candidate patient ids; whoever holds the manifest can map them back.
    """
    ids = "\n".join(sorted(manifest["sample_id"].astype(str)))
    return hashlib.sha256(b"medrec split pseudonym\0" + ids.encode("utf-8")).digest()


def patient_pseudonym(patient_id: str, key: bytes = b"") -> str:
    """A stable pseudonym for messages (raw patient ids never appear in logs): ``patient#`` + 8 hex."""
    return "patient#" + hmac.new(key, str(patient_id).encode("utf-8"), hashlib.sha256).hexdigest()[:8]


@dataclass
class LeakageAudit:
    """What the audit checked.

    Attributes:
        n_samples: samples checked.
        pixel_checked: whether pixel content was compared.
        hashes: ``sample_id -> content hash`` for the samples that loaded.
        unreadable: ``sample_id -> reason`` for samples whose pixels could not be loaded (not hashed).
    """

    n_samples: int
    pixel_checked: bool
    hashes: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


def pixel_hashes(
    rows: Sequence[Mapping],
    workers: int | None = None,
    max_bytes: int | None = None,
    on_done: Callable[[str], None] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Content hashes of the given manifest rows, each decoded once, in a small process pool.

    Args:
        rows: manifest rows (dicts).
        workers: processes (default ``min(2, cpu count)``); 1 or very few rows: in this process.
        max_bytes: per-sample memory budget.
        on_done: called with each sample id when its hash is done (progress bars).

    Returns:
        ``(hashes, unreadable)``: ``sample_id -> hash`` and ``sample_id -> reason``.
    """
    from medrec.loader.rows import content_hash_job

    jobs = [{**dict(r), "sample_id": str(r["sample_id"]), "_max_bytes": max_bytes} for r in rows]
    n_workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    hashes: dict[str, str] = {}
    unreadable: dict[str, str] = {}

    def collect(result: tuple[str, str, str]) -> None:
        sample_id, digest, reason = result
        if digest:
            hashes[sample_id] = digest
        else:
            unreadable[sample_id] = reason
        if on_done is not None:
            on_done(sample_id)

    if n_workers == 1 or len(jobs) < 4:
        for job in jobs:
            collect(content_hash_job(job))
    else:
        # spawn: workers import only numpy / pydicom / nibabel, never a forked copy of torch state
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
            for result in pool.map(content_hash_job, jobs, chunksize=4):
                collect(result)
    return hashes, unreadable


def _describe(rows: pd.DataFrame) -> str:
    by_split = rows.groupby("split", sort=True)["sample_id"].apply(lambda ids: ", ".join(sorted(ids)))
    return "; ".join(f"{split}: {ids}" for split, ids in by_split.items())


def audit_leakage(
    manifest: pd.DataFrame,
    splits: pd.DataFrame,
    check_pixels: bool = True,
    workers: int | None = None,
    max_bytes: int | None = None,
    on_hashed: Callable[[str], None] | None = None,
) -> LeakageAudit:
    """Refuse splits that leak a patient, a study or pixel content across partitions.

    Args:
        manifest: the manifest the splits were made from.
        splits: ``sample_id, patient_id, split``.
        check_pixels: also decode every split sample once and compare content hashes.
        workers: processes for pixel hashing.
        max_bytes: per-sample memory budget for decoding.
        on_hashed: progress callback, called with each hashed sample id.

    Returns:
        The :class:`LeakageAudit` (hashes and samples that could not be decoded).

    Raises:
        LeakageError: one of the three leaks; the message lists every kind found, the offending
            sample ids per partition and patient pseudonyms.
        ManifestError: a split sample is not in the manifest.
    """
    merged = splits[["sample_id", "split"]].astype(str).merge(
        _without_split(manifest), on="sample_id", how="left", indicator=True)
    unknown = merged.loc[merged["_merge"] == "left_only", "sample_id"]
    if len(unknown):
        raise ManifestError(f"splits list {len(unknown)} sample(s) not in the manifest (e.g. {unknown.iloc[0]})")
    merged["patient_id"] = merged["patient_id"].fillna("").astype(str)
    key = pseudonym_key(manifest)

    def pseudonym(patient_id: str) -> str:
        return patient_pseudonym(patient_id, key)

    problems: list[str] = []

    crossing = merged.groupby("patient_id")["split"].nunique()
    crossing = crossing[crossing > 1]
    if len(crossing):
        lines = [f"{pseudonym(p)} in {_describe(merged[merged['patient_id'] == p])}"
                 for p in sorted(crossing.index)[:MAX_LISTED]]
        more = f" (+{len(crossing) - MAX_LISTED} more)" if len(crossing) > MAX_LISTED else ""
        problems.append(f"{len(crossing)} patient(s) in more than one partition{more}: " + " | ".join(lines))

    if "study_uid" in merged.columns:
        studies = merged[merged["study_uid"].fillna("").astype(str) != ""]
        spread = studies.groupby("study_uid").agg(patients=("patient_id", "nunique"), splits=("split", "nunique"))
        bad = spread[(spread["patients"] > 1) & (spread["splits"] > 1)]
        if len(bad):
            lines = []
            for study in sorted(bad.index)[:MAX_LISTED]:
                rows = studies[studies["study_uid"] == study]
                names = ", ".join(pseudonym(p) for p in sorted(rows["patient_id"].unique()))
                lines.append(f"study of samples [{_describe(rows)}] filed under {names}")
            more = f" (+{len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
            problems.append(
                f"{len(bad)} study_uid(s) under several patient ids, in more than one partition{more}: "
                + " | ".join(lines)
            )

    audit = LeakageAudit(n_samples=len(merged), pixel_checked=check_pixels)
    if check_pixels:
        rows = merged.drop(columns=["_merge"]).to_dict(orient="records")
        audit.hashes, audit.unreadable = pixel_hashes(rows, workers=workers, max_bytes=max_bytes, on_done=on_hashed)
        hashed = merged[merged["sample_id"].isin(audit.hashes)].copy()
        hashed["content_hash"] = hashed["sample_id"].map(audit.hashes)
        spread = hashed.groupby("content_hash")["split"].nunique()
        duplicated = spread[spread > 1]
        if len(duplicated):
            lines = []
            for digest in sorted(duplicated.index)[:MAX_LISTED]:
                rows_same = hashed[hashed["content_hash"] == digest]
                names = ", ".join(pseudonym(p) for p in sorted(rows_same["patient_id"].unique()))
                lines.append(f"identical pixels in [{_describe(rows_same)}] ({names})")
            more = f" (+{len(duplicated) - MAX_LISTED} more)" if len(duplicated) > MAX_LISTED else ""
            problems.append(f"{len(duplicated)} image(s) with identical pixel content in more than one partition"
                            f"{more}: " + " | ".join(lines))

    if problems:
        raise LeakageError(
            "leakage audit failed, nothing was written: " + "; ".join(problems)
            + ". Fix the patient ids / duplicates in the manifest (or drop the duplicated samples) and split again"
        )
    return audit
