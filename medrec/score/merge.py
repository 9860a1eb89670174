"""Combine the part files of a sharded scoring job (``medrec score --merge``) into one predictions file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medrec.errors import InputError, OutputError
from medrec.score.writer import (
    FindingsWriter,
    PredictionsWriter,
    findings_path,
    read_findings,
    read_rows,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

# settings every part must share (else the parts come from different jobs)
SHARED_KEYS = ("model_sha256", "classes", "level", "aggregate", "tta", "threshold", "num_parts", "columns")


@dataclass
class MergeResult:
    """What a merge wrote: the output, its sidecar, row counts and any parts that were missing."""

    output: Path
    sidecar: Path
    rows: int = 0
    rows_ok: int = 0
    parts: list[int] = field(default_factory=list)
    missing_parts: list[int] = field(default_factory=list)
    incomplete_parts: list[int] = field(default_factory=list)


def _samples_file(path: Path, record: dict[str, Any]) -> Path | None:
    name = record.get("samples_file")
    return path.with_name(name) if name else None


def merge_parts(parts: Sequence[str | Path], output: str | Path, allow_incomplete: bool = False,
                overwrite: bool = False) -> MergeResult:
    """Merge part files written with ``--num-parts K --part-id I`` into ``output``.

    Checks that every part was made by the same model (sidecar ``model_sha256``) with the same
    settings, that no sample (or group) appears twice, and that all K parts are there and
    finished. Rows are sorted by ``sample_id``, so the result does not depend on the order of the
    part files. The merged sidecar says ``num_parts = 1``: rerunning the unsharded command on the
    merged file resumes it.

    Args:
        parts: the part CSVs (each with its ``.json`` sidecar beside it).
        output: the merged predictions CSV.
        allow_incomplete: merge even when parts are missing or unfinished (recorded in the sidecar).
        overwrite: replace an existing output.

    Returns:
        A :class:`MergeResult`.

    Raises:
        InputError: a part is missing its sidecar, comes from another model or other settings,
            repeats a part id or a sample, or (without ``allow_incomplete``) parts are missing or unfinished.
        OutputError: the output exists (without ``overwrite``) or is one of the parts.
    """
    if not parts:
        raise InputError("--merge needs the part files to combine, e.g. medrec score --merge part*.csv -o out.csv")
    target = Path(output)
    paths = [Path(p) for p in parts]
    if any(p.resolve() == target.resolve() for p in paths):
        raise OutputError(f"{target}: the merged output cannot be one of the parts; choose another -o")
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: exists; pass --overwrite to replace it or choose another -o")
    records: list[dict[str, Any]] = []
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: part file not found")
        record = read_sidecar(path)
        if record is None:
            raise InputError(f"{path}: has no sidecar {sidecar_path(path).name}; only files written by "
                             "'medrec score --num-parts K --part-id I' can be merged")
        records.append(record)
    first = records[0]
    for path, record in zip(paths[1:], records[1:], strict=True):
        for key in SHARED_KEYS:
            if record.get(key) != first.get(key):
                what = "another model" if key == "model_sha256" else f"another {key}"
                raise InputError(f"{path}: was made with {what} ({key}={record.get(key)!r}) than {paths[0]} "
                                 f"({key}={first.get(key)!r}); merge only the parts of one job")
    num_parts = int(first.get("num_parts") or 1)
    seen_parts: dict[int, Path] = {}
    for path, record in zip(paths, records, strict=True):
        part_id = int(record.get("part_id") or 0)
        if part_id in seen_parts:
            raise InputError(f"{path}: part {part_id} given twice (also {seen_parts[part_id]})")
        seen_parts[part_id] = path
    result = MergeResult(output=target, sidecar=sidecar_path(target), parts=sorted(seen_parts))
    result.missing_parts = [i for i in range(num_parts) if i not in seen_parts]
    result.incomplete_parts = sorted(int(r.get("part_id") or 0) for r in records if r.get("status") != "complete")
    if not allow_incomplete and (result.missing_parts or result.incomplete_parts):
        problems = []
        if result.missing_parts:
            problems.append(f"part(s) {', '.join(map(str, result.missing_parts))} of {num_parts} missing")
        if result.incomplete_parts:
            problems.append(f"part(s) {', '.join(map(str, result.incomplete_parts))} unfinished "
                            "(rerun their score command to complete them)")
        raise InputError(f"cannot merge: {'; '.join(problems)}; pass --allow-incomplete to merge anyway")

    columns = list(first["columns"])
    merged_rows = _collect(paths, columns)
    sample_rows = None
    samples = [_samples_file(path, record) for path, record in zip(paths, records, strict=True)]
    if all(s is not None and s.is_file() for s in samples):
        sample_columns = read_rows(samples[0])[0]
        sample_rows = _collect(samples, sample_columns)
    merged_record = {key: first.get(key) for key in SHARED_KEYS + ("positive_class", "threshold_source",
                                                                     "medrec_version", "input")}
    merged_record.update(
        num_parts=1,
        part_id=0,
        merged_from=[{"path": str(path), "part_id": int(r.get("part_id") or 0), "status": r.get("status"),
                      "input_fingerprint": r.get("input_fingerprint"), "counts": r.get("counts")}
                     for path, r in zip(paths, records, strict=True)],
        original_num_parts=num_parts,
        missing_parts=result.missing_parts,
        started=min(str(r.get("first_started") or r.get("started") or "") for r in records),
        first_started=min(str(r.get("first_started") or r.get("started") or "") for r in records),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        status="complete" if not (result.missing_parts or result.incomplete_parts) else "partial",
        samples_file=None,
    )
    if sample_rows is not None:
        samples_target = target.with_name(f"{target.stem}.samples.csv")
        PredictionsWriter(samples_target, sample_columns).rewrite(sample_rows)
        merged_record["samples_file"] = samples_target.name
    finding_files = [path.with_name(str(r["findings_file"])) if r.get("findings_file") else None
                     for path, r in zip(paths, records, strict=True)]
    if finding_files and all(f is not None and f.is_file() for f in finding_files):
        # the candidates of a finding-map run: concatenated part by part (each sample lies in one part)
        writer = FindingsWriter(findings_path(target))
        writer.start([])
        for source in finding_files:
            writer.append(read_findings(source))  # type: ignore[arg-type]
        merged_record.update({key: first.get(key) for key in ("findings_min_probability", "findings_max_per_sample",
                                                              "findings_voxel_mm")})
        merged_record["findings_file"] = writer.path.name
    result.rows = len(merged_rows)
    result.rows_ok = sum(1 for row in merged_rows if not row.get("error"))
    merged_record["counts"] = {"rows": result.rows, "rows_ok": result.rows_ok,
                               "rows_with_error": result.rows - result.rows_ok}
    write_sidecar(target, merged_record)
    PredictionsWriter(target, columns).rewrite(merged_rows)
    return result


def _collect(paths: Sequence[Path], columns: list[str]) -> list[dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        found, part_rows = read_rows(path)
        if found != columns:
            raise InputError(
                f"{path}: columns ({', '.join(found)}) differ from the first part's ({', '.join(columns)})"
            )
        for row in part_rows:
            key = row["sample_id"]
            if key in rows:
                raise InputError(f"sample {key} appears in both {origin[key]} and {path}; the parts overlap "
                                 "(were they made with the same --num-parts?)")
            rows[key] = row
            origin[key] = path
    return [rows[key] for key in sorted(rows)]
