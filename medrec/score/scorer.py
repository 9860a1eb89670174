"""``medrec score``: batch scoring of a manifest or a scan folder with a trained run directory."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from medrec import __version__
from medrec.atomicio import write_csv
from medrec.console import console, progress
from medrec.data.dataset import PreprocessDataset
from medrec.device import resolve_device
from medrec.errors import ConfigError, InputError, ModelError, OutputError
from medrec.hashing import sha256_file
from medrec.models.findings import is_finding_model
from medrec.rundir import Run, ScoringRun, load_run, positive_index_of
from medrec.runinfo import MODEL_JSON, MODEL_WEIGHTS, RunInfo
from medrec.score.aggregate import AGGREGATIONS, GROUP_COLUMNS, aggregate_rows
from medrec.score.findings import (
    CANDIDATE_MIN_PROBABILITY,
    FINDING_COLUMNS,
    MAX_CANDIDATES,
    candidate_findings,
    finding_probability_map,
    top_finding,
)
from medrec.score.inference import Predictor
from medrec.score.operating_point import needs_own_threshold, tta_threshold
from medrec.score.operating_point import source_text as tta_source_text
from medrec.score.pipeline import iterate_batches
from medrec.score.shards import LEVEL_KEYS, check_part, select_part
from medrec.score.writer import (
    FindingsWriter,
    PredictionsWriter,
    findings_path,
    read_rows,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from medrec.thresholds import is_positive

if TYPE_CHECKING:
    import torch
    from monai.transforms import Compose

    from medrec.index import SelectionRules

LEVELS = tuple(LEVEL_KEYS)
IDENTITY_COLUMNS = ("sample_id", "patient_id", "study_uid")
# settings that must be the same for every row of one predictions file
RESUME_KEYS = ("model_sha256", "level", "aggregate", "tta", "threshold", "num_parts", "part_id", "findings_file")


@dataclass(frozen=True)
class ScoreOptions:
    """How to score (every ``medrec score`` option that is not an input or output path).

    Attributes:
        level: ``series`` (one row per sample), ``study`` or ``patient`` (rows grouped).
        aggregate: ``max`` or ``mean`` at study / patient level; None: ``max`` for binary runs,
            ``mean`` for multi-class.
        threshold: operating threshold; None: the run's own.
        tta: average over all flips of the spatial axes; adds ``uncertainty``.
        batch_size: samples per inference batch.
        workers: loader processes (0: load in this process).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: float16 autocast on CUDA.
        explain_dir: write Grad-CAM maps (NIfTI + PNG) here.
        retry_errors: score again the samples whose earlier row holds an error.
        overwrite: discard an existing output instead of resuming it.
        num_parts: split the job into this many deterministic parts ...
        part_id: ... and score this one (0-based).
    """

    level: str = "series"
    aggregate: str | None = None
    threshold: float | None = None
    tta: bool = False
    batch_size: int = 8
    workers: int = 0
    device: str = "auto"
    amp: bool = True
    explain_dir: Path | None = None
    retry_errors: bool = False
    overwrite: bool = False
    num_parts: int = 1
    part_id: int = 0

    def validate(self) -> None:
        """Raises ConfigError naming the first invalid option."""
        if self.level not in LEVELS:
            raise ConfigError(f"--level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if self.aggregate is not None and self.aggregate not in AGGREGATIONS:
            raise ConfigError(f"--aggregate must be one of {', '.join(AGGREGATIONS)}, got {self.aggregate!r}")
        if self.threshold is not None and not (0.0 <= self.threshold <= 1.0 and math.isfinite(self.threshold)):
            raise ConfigError(f"--threshold must be a probability in [0, 1], got {self.threshold}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")
        check_part(self.num_parts, self.part_id)


@dataclass
class ScoreResult:
    """What one ``score`` call did.

    Attributes:
        output: the predictions CSV.
        sidecar: its JSON record.
        scored: samples scored by this call.
        failed: samples that failed in this call (their rows hold the reason).
        skipped: samples already in the output (not scored again).
        relabelled: samples already in the output whose label this call refreshed from the input.
        rows: rows in the output after this call.
        rows_ok: rows with a score.
        failures: reason -> count, for this call.
        record: the sidecar content.
    """

    output: Path
    sidecar: Path
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    relabelled: int = 0
    rows: int = 0
    rows_ok: int = 0
    failures: Counter = field(default_factory=Counter)
    record: dict[str, Any] = field(default_factory=dict)


def input_fingerprint(manifest: pd.DataFrame) -> str:
    """sha256 of the sorted sample list (ids, paths and file lists); changes when samples are added or moved."""
    lines = sorted(
        f"{row.get('sample_id', '')}\t{row.get('path', '')}\t{row.get('files', '')}"
        for row in manifest.to_dict("records")
    )
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def samples_path(output: str | Path) -> Path:
    """Where sample-level rows are kept (resumably) when ``--level`` is study or patient."""
    target = Path(output)
    return target.with_name(f"{target.stem}.samples.csv")


def index_dir(output: str | Path) -> Path:
    """Where a scan folder given as INPUT is indexed: ``<output stem>.index/``."""
    target = Path(output)
    return target.with_name(f"{target.stem}.index")


def score_columns(classes: Sequence[str]) -> list[str]:
    """``["score"]`` for a binary run, ``score_<class>`` per class otherwise."""
    return ["score"] if len(classes) == 2 else [f"score_{name}" for name in classes]


def output_columns(classes: Sequence[str], level: str, tta: bool, findings: bool = False) -> list[str]:
    """The header of the predictions file for these classes, level, TTA setting and model kind."""
    columns = [*IDENTITY_COLUMNS, *score_columns(classes), "prediction", "label", "error"]
    if tta:
        columns.append("uncertainty")
    if findings:
        columns.extend(FINDING_COLUMNS)
    if level != "series":
        columns.extend(GROUP_COLUMNS)
    return columns


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _run_threshold(run: ScoringRun, options: ScoreOptions, device: torch.device | None = None,
                   model_sha256: str | None = None) -> tuple[float | None, str]:
    """The operating threshold and where it came from (None for multi-class runs).

    With ``options.tta`` a threshold the run chose on validation is replaced by the one chosen on
    validation scored with TTA (:func:`medrec.score.operating_point.tta_threshold`): a threshold
    belongs to the scores it was chosen on.
    """
    if len(run.classes) != 2:
        return None, "argmax (multi-class)"
    if options.threshold is not None:
        return float(options.threshold), "command line (--threshold)"
    if options.tta and needs_own_threshold(run):
        entry = tta_threshold(run, device if device is not None else resolve_device(options.device),
                              batch_size=options.batch_size, workers=options.workers, amp=options.amp,
                              model_sha256=model_sha256)
        return float(entry.value), tta_source_text(entry)
    value = run.threshold
    if value is None:
        return 0.5, "default 0.5 (the run records no operating threshold)"
    source = getattr(run, "threshold_source", None)
    info = getattr(run, "info", None)
    entry = info.threshold if isinstance(info, RunInfo) else None
    if source is None and entry is not None and entry.method:
        chosen_on = f", chosen on {entry.chosen_on}" if entry.chosen_on else ""
        source = f"{entry.method}{chosen_on}"
    return float(value), f"run: {source or MODEL_JSON}"


def _check_resume(output: Path, rows_file: Path, record: Mapping[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Refuse to mix two models or two settings in one file; returns the previous sidecar (if any)."""
    if overwrite:
        for path in {output, rows_file, sidecar_path(output), findings_path(output)}:
            path.unlink(missing_ok=True)
        return None
    previous = read_sidecar(output)
    has_rows = any(bool(read_rows(path)[1]) for path in {output, rows_file} if path.exists())
    if not has_rows:
        return previous
    if previous is None:
        raise OutputError(
            f"{output}: exists but has no sidecar {sidecar_path(output).name}, so the model that made it is "
            "unknown; pass --overwrite to start fresh or choose another -o"
        )
    if previous.get("model_sha256") != record["model_sha256"]:
        raise OutputError(
            f"{output}: was written by another model (sha256 {str(previous.get('model_sha256'))[:12]}..., this run "
            f"has {record['model_sha256'][:12]}...); pass --overwrite to start fresh or choose another -o"
        )
    for key in RESUME_KEYS[1:]:
        if previous.get(key) != record.get(key):
            raise OutputError(
                f"{output}: was written with {key}={previous.get(key)!r}, this command has {key}={record.get(key)!r}; "
                "rerun with the same options, pass --overwrite to start fresh, or choose another -o"
            )
    return previous


# Lock files held by this process (record locks do not exclude a second holder in one process).
_HELD_LOCKS: set[str] = set()
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<output>.lock`` so that two scoring processes never append to one file.

    A POSIX record lock (``lockf``): it belongs to this process alone, so loader workers forked
    while it is held do not hold it too, and the kernel drops it when the process dies (even by
    SIGKILL): a killed run never leaves a stale lock behind. (A ``flock`` lock would be shared with
    the forked workers through the open file and outlive the parent until they exit.) The file is
    removed when the scorer lets go, on success and on error alike; one left by a killed scorer
    holds no lock and is taken over by the next.

    A second scorer of the same file in this process is refused too.

    Raises:
        OutputError: another scorer holds the lock, or the output folder is not writable.
    """
    lock_path = output.with_name(output.name + ".lock")
    # Record locks are per process: a second scorer in this process is refused here (before it
    # opens the lock file: closing any descriptor of the file would drop this process's lock).
    key = str(lock_path.absolute())
    with _HELD_GUARD:
        if key in _HELD_LOCKS:
            raise OutputError(
                f"{output}: another 'medrec score' is writing this file right now; wait for it or choose another -o"
            )
        _HELD_LOCKS.add(key)
    try:
        with _record_lock(output, lock_path):
            yield
    finally:
        with _HELD_GUARD:
            _HELD_LOCKS.discard(key)


@contextlib.contextmanager
def _record_lock(output: Path, lock_path: Path) -> Iterator[None]:
    """The inter-process part of :func:`output_lock`: a ``lockf`` lock on ``lock_path``, removed on release."""
    handle = _locked_handle(output, lock_path)
    try:
        yield
    finally:
        # removed while still locked: a scorer that opened this file meanwhile finds, once it has
        # the lock, that the path no longer names it, and locks the path afresh
        if _names_handle(lock_path, handle):
            with contextlib.suppress(OSError):
                lock_path.unlink()
        handle.close()


def _names_handle(lock_path: Path, handle: Any) -> bool:
    """Whether ``lock_path`` still names the file open in ``handle`` (not removed, not replaced)."""
    try:
        on_disk, held = os.stat(lock_path), os.fstat(handle.fileno())
    except OSError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _locked_handle(output: Path, lock_path: Path, attempts: int = 20) -> Any:
    """Open ``lock_path`` and take its ``lockf`` lock; retried when the holder removed the file as it let go."""
    for _ in range(attempts):
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a+")  # held for the whole run (lockf needs write access)
        except OSError as e:
            raise OutputError(
                f"{output}: cannot write here ({e.strerror}: {e.filename}); choose a writable output folder"
            ) from e
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            handle.close()
            raise OutputError(
                f"{output}: another 'medrec score' is writing this file right now; wait for it or choose another -o"
            ) from e
        if _names_handle(lock_path, handle):
            return handle
        handle.close()  # locked a file its holder had just removed: lock the one the path names now
    raise OutputError(
        f"{lock_path}: removed and recreated {attempts} times while locking it; another 'medrec score' is "
        "starting and stopping on this output; wait for it or choose another -o"
    )


def score_manifest(
    run: ScoringRun,
    manifest: pd.DataFrame,
    output: str | Path,
    options: ScoreOptions | None = None,
    *,
    model_sha256: str,
    input_description: Mapping[str, Any] | None = None,
    show_progress: bool = True,
    refresh_labels: bool = False,
) -> ScoreResult:
    """Score every sample of ``manifest`` with ``run`` into ``output`` (resumable).

    Args:
        run: a loaded run (:func:`medrec.rundir.load_run`): ``model``, ``classes``, ``threshold``,
            ``predict(batch)`` (calibrated probabilities) and ``deterministic_transforms()``.
        manifest: the samples (manifest contract columns).
        output: the predictions CSV.
        options: see :class:`ScoreOptions`.
        model_sha256: sha256 of the run's ``model.safetensors`` (recorded; resuming checks it).
        input_description: what INPUT was (recorded in the sidecar).
        show_progress: draw a progress bar.
        refresh_labels: give the samples already in the output the label (and patient / study id)
            ``manifest`` has for them now (labels describe the samples, not the scoring: a labels
            file given on a rerun reaches the rows scored before it, which are not scored again).

    Returns:
        A :class:`ScoreResult`.

    Raises:
        ConfigError: invalid options.
        OutputError: the output belongs to another model or other settings (and no ``overwrite``).
    """
    options = options or ScoreOptions()
    options.validate()
    output = Path(output)
    if output.is_dir():
        raise OutputError(f"{output}: is a folder; -o takes the predictions CSV file to write")
    classes = [str(name) for name in run.classes]
    if len(classes) < 2:
        raise ModelError(f"the run has {len(classes)} class(es) ({classes}); a classifier needs at least 2")
    binary = len(classes) == 2
    positive_index = positive_index_of(run)
    positive = classes[positive_index] if positive_index is not None else None
    negative = classes[1 - positive_index] if positive_index is not None else None
    aggregate = options.aggregate or ("max" if binary else "mean")
    if options.level != "series" and not binary and aggregate == "max":
        raise ConfigError("--aggregate max is only defined for binary runs; use --aggregate mean for multi-class")
    device = resolve_device(options.device)
    threshold, threshold_source = _run_threshold(run, options, device, model_sha256)
    probability_columns = score_columns(classes)
    findings = is_finding_model(run.model)
    columns = output_columns(classes, options.level, options.tta, findings)
    sample_columns = output_columns(classes, "series", options.tta, findings)
    rows_file = output if options.level == "series" else samples_path(output)

    part = select_part(manifest, options.num_parts, options.part_id, options.level)
    duplicated = part["sample_id"][part["sample_id"].duplicated()].tolist()
    if duplicated:
        raise InputError(f"the input lists sample_id {duplicated[0]} more than once; re-index the scans")
    with output_lock(output):
        record: dict[str, Any] = {
            "model_sha256": model_sha256,
            "medrec_version": __version__,
            "classes": classes,
            "positive_class": positive,
            "threshold": threshold,
            "threshold_source": threshold_source,
            "level": options.level,
            "aggregate": aggregate if options.level != "series" else None,
            "tta": options.tta,
            "num_parts": options.num_parts,
            "part_id": options.part_id,
            "input": dict(input_description or {}),
            "input_fingerprint": input_fingerprint(manifest),
            "columns": columns,
            "samples_file": None if options.level == "series" else rows_file.name,
            "findings_file": findings_path(output).name if findings else None,
            "device": str(device),
            "amp": options.amp and device.type == "cuda",
            "batch_size": options.batch_size,
            "workers": options.workers,
            "explain_dir": None if options.explain_dir is None else str(options.explain_dir),
            "started": _now(),
            "finished": None,
            "status": "running",
        }
        if findings:
            record.update(findings_min_probability=CANDIDATE_MIN_PROBABILITY, findings_max_per_sample=MAX_CANDIDATES,
                          findings_voxel_mm=_voxel_mm(run))
        previous = _check_resume(output, rows_file, record, options.overwrite)
        record["first_started"] = (previous or {}).get("first_started") or record["started"]
        write_sidecar(output, record)

        writer = PredictionsWriter(rows_file, sample_columns)
        done = writer.start(retry_errors=options.retry_errors)
        relabelled = _refresh_labels(writer, done, manifest) if refresh_labels else 0
        findings_writer = None
        if findings:
            findings_writer = FindingsWriter(findings_path(output))
            if done and not findings_writer.path.is_file():
                raise OutputError(
                    f"{findings_writer.path}: missing, but {len(done)} sample(s) of {rows_file.name} are already "
                    "scored and their candidate findings would be lost; pass --overwrite to score them again"
                )
            findings_writer.start(done)
        already = part["sample_id"].isin(list(done))
        todo = part[~already].reset_index(drop=True)
        result = ScoreResult(output=output, sidecar=sidecar_path(output), skipped=int(already.sum()),
                             relabelled=relabelled)

        explainer = None
        if options.explain_dir is not None and len(todo):
            from medrec.score.explain import GradCamExplainer

            explainer = GradCamExplainer(run, options.explain_dir, device=device)
        predictor = Predictor(run, device, amp=options.amp, tta=options.tta, uncertainty_class=positive_index)
        records = todo.to_dict("records")
        dataset = PreprocessDataset(records, scoring_transforms(run, keep_geometry=explainer is not None or findings))
        started = time.monotonic()
        bar = progress() if show_progress else None
        task = None
        if bar is not None:
            bar.start()
            task = bar.add_task("Scoring", total=len(records), status="")
        try:
            batches = iterate_batches(dataset, options.batch_size, options.workers, pin_memory=device.type == "cuda")
            for batch in batches:
                new_rows: dict[int, dict[str, Any]] = {}
                new_candidates: list[dict[str, Any]] = []
                for index, reason in batch.failed:
                    new_rows[index] = _base_row(records[index]) | {"error": reason}
                    result.failures[reason] += 1
                for positions, stacked in batch.stacks():
                    probabilities, spread = predictor(stacked)
                    for offset, position in enumerate(positions):
                        index = batch.indices[position]
                        row = _base_row(records[index])
                        probs = probabilities[offset]
                        if binary:
                            row["score"] = float(probs[positive_index])
                            row["prediction"] = positive if is_positive(row["score"], threshold) else negative
                        else:
                            row.update({name: float(probs[c]) for c, name in enumerate(probability_columns)})
                            row["prediction"] = classes[int(probs.argmax())]
                        if spread is not None:
                            row["uncertainty"] = float(spread[offset])
                        if findings:
                            # one map per sample: the top finding and the candidates both come from it
                            probability_map = finding_probability_map(run.model, batch.images[position], device)
                            row.update(top_finding(probability_map, batch.affines[position]))
                            identity = {name: row[name] for name in IDENTITY_COLUMNS}
                            new_candidates.extend(identity | candidate for candidate in
                                                  candidate_findings(probability_map, batch.affines[position]))
                        new_rows[index] = row
                        if explainer is not None:
                            explainer.explain_or_warn(records[index], batch.images[position], batch.affines[position],
                                                      class_index=positive_index if binary else int(probs.argmax()))
                ordered = [new_rows[index] for index in sorted(new_rows)]
                if findings_writer is not None:
                    findings_writer.append(new_candidates)  # before the rows: a rerun drops orphan candidates
                writer.append(ordered)
                result.failed += sum(1 for row in ordered if row["error"])
                result.scored += sum(1 for row in ordered if not row["error"])
                if bar is not None:
                    bar.update(task, advance=len(ordered), status=f"{result.failed} failed" if result.failed else "")
        finally:
            if bar is not None:
                bar.stop()

        _, sample_rows = read_rows(rows_file)
        if options.level != "series":
            grouped = aggregate_rows(
                sample_rows, options.level, aggregate, classes, probability_columns, threshold,
                with_uncertainty=options.tta, positive_class=positive, carry=FINDING_COLUMNS if findings else (),
            )
            write_csv(output, pd.DataFrame(grouped, columns=columns))
            final_rows = grouped
        else:
            final_rows = sample_rows
        result.rows = len(final_rows)
        result.rows_ok = sum(1 for row in final_rows if not row.get("error"))
        record.update(
            finished=_now(),
            status="complete" if len(part) == result.skipped + result.scored + result.failed else "partial",
            seconds=round(time.monotonic() - started, 3),
            counts={
                "input_samples": int(len(manifest)),
                "part_samples": int(len(part)),
                "scored": result.scored,
                "failed": result.failed,
                "skipped": result.skipped,
                "labels_refreshed": result.relabelled,
                "rows": result.rows,
                "rows_ok": result.rows_ok,
                "rows_with_error": result.rows - result.rows_ok,
            },
            failure_reasons=dict(result.failures.most_common(10)),
        )
        if explainer is not None:
            record["explain"] = {"maps_written": len(explainer.written) // 2, "failed_samples": explainer.failed}
        write_sidecar(output, record)
        result.record = record
        return result


def _refresh_labels(writer: PredictionsWriter, done: dict[str, dict[str, str]], manifest: pd.DataFrame) -> int:
    """Give the rows already written the label ``manifest`` has for their sample now; returns the rows changed.

    The patient and study ids are refreshed with the label: a labels file matched by path names the
    patient and study of a NIfTI file (which has no UIDs of its own), and study / patient rows are
    grouped by them. Rows of samples that are not in ``manifest`` are kept as they are. The file is
    rewritten atomically, and only when a row changed.
    """
    current = {row["sample_id"]: row for row in map(_base_row, manifest.to_dict("records"))}
    changed = 0
    for sample_id, row in done.items():
        now = current.get(sample_id)
        if now is None:
            continue
        fresh = {name: now[name] for name in ("patient_id", "study_uid", "label")}
        if any(row.get(name, "") != value for name, value in fresh.items()):
            row.update(fresh)
            changed += 1
    if changed:
        writer.rewrite(done.values())
    return changed


def _voxel_mm(run: ScoringRun) -> float | None:
    """The largest voxel edge (mm) of the run's preprocessed grid: one voxel of a finding map's location."""
    spacing = getattr(getattr(run, "plan", None), "spacing", None)
    return round(float(max(spacing)), 4) if spacing else None


def scoring_transforms(run: ScoringRun, keep_geometry: bool = False) -> Compose:
    """The run's deterministic preprocessing chain (training's, without augmentation).

    Args:
        run: the loaded run.
        keep_geometry: end with a MetaTensor that keeps its affine (needed to map Grad-CAM back
            onto the input grid); the voxel values are the same either way.
    """
    if keep_geometry and getattr(run, "plan", None) is not None:
        from medrec.transforms import build_transforms

        return build_transforms(run.plan, keys=("image",), track_meta=True)[0]
    return run.deterministic_transforms()


def _base_row(sample: Mapping[str, Any]) -> dict[str, Any]:
    def text(name: str) -> str:
        value = sample.get(name, "")
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)

    return {"sample_id": text("sample_id"), "patient_id": text("patient_id"), "study_uid": text("study_uid"),
            "label": text("label"), "error": "", "prediction": ""}


def load_input(
    input_path: str | Path, output: str | Path, rules: Any = None, labels: str | Path | None = None,
    workers: int | None = None, match_on: str | None = None, filters: Any = None,
    skip_studies: Sequence[str] = (),
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The manifest to score: a manifest CSV as is, or a scan folder indexed into ``<output stem>.index/``.

    ``labels`` (and its key ``match_on``) label the samples of a scan folder, as ``medrec index --labels``.
    A ``dicomweb:URL`` INPUT is fetched (the studies ``filters`` select, except ``skip_studies``) into
    ``<output stem>.dicomweb/`` and indexed from there like a scan folder.

    Returns:
        ``(manifest, description)`` where description goes into the sidecar.

    Raises:
        InputError: INPUT does not exist, or is a file that is not a manifest CSV.
    """
    from medrec.index.dicomweb import is_dicomweb

    if is_dicomweb(input_path):
        return _load_dicomweb(str(input_path), output, rules, labels, workers, match_on, filters, skip_studies)
    if filters is not None:
        raise ConfigError("--study-uid / --patient-id / --modality / --accession / --since / --until select "
                          "studies of a dicomweb:URL INPUT")
    source = Path(input_path)
    if source.is_dir():
        from medrec.index import index_folder

        target = index_dir(output)
        console.print(f"Indexing {source} into {target} ...")
        result = index_folder(source, target, labels=labels, match_on=match_on, rules=rules, workers=workers)
        # absolute: 'medrec report' finds the scored manifest from any working directory
        description = {"kind": "folder", "path": str(source.resolve()), "index_dir": str(target.resolve()),
                       "rules": _describe_rules(rules)}
        if labels is not None:
            description["labels"] = {"file": Path(labels).name, "match_on": (result.summary.get("labels") or {})
                                     .get("match_on", match_on)}
        return result.manifest, description
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise InputError(
                f"{source}: INPUT must be a scan folder or a manifest CSV, got a {source.suffix or 'plain'} file"
            )
        if labels is not None or match_on is not None:
            raise ConfigError("--labels applies to a scan folder; a manifest already carries its label column")
        from medrec.manifest import read_manifest

        return read_manifest(source), {"kind": "manifest", "path": str(source.resolve())}
    raise InputError(f"{source}: INPUT not found; give a scan folder or a manifest CSV (from 'medrec index')")


def dicomweb_cache(output: str | Path) -> Path:
    """Where the studies of a ``dicomweb:URL`` INPUT are fetched: ``<output stem>.dicomweb/``."""
    target = Path(output)
    return target.with_name(f"{target.stem}.dicomweb")


def _load_dicomweb(source: str, output: str | Path, rules: Any, labels: str | Path | None, workers: int | None,
                   match_on: str | None, filters: Any,
                   skip_studies: Sequence[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    from medrec.index.dicomweb import fetch_and_index

    target, cache = index_dir(output), dicomweb_cache(output)
    index, fetched = fetch_and_index(source, target, cache, filters, skip_studies=skip_studies, labels=labels,
                                     match_on=match_on, rules=rules, workers=workers)
    description = {"kind": "dicomweb", "path": str(cache.resolve()), "index_dir": str(target.resolve()),
                   "dicomweb": {**fetched.describe(), "filters": filters.describe() if filters else {}},
                   "rules": _describe_rules(rules)}
    if labels is not None:
        description["labels"] = {"file": Path(labels).name, "match_on": (index.summary.get("labels") or {})
                                 .get("match_on", match_on)}
    return index.manifest, description


def studies_done(output: str | Path, level: str, retry_errors: bool) -> list[str]:
    """The studies an existing output already scored (not fetched again from a PACS); with ``retry_errors``
    a study with a failed row counts as not done."""
    rows_file = Path(output) if level == "series" else samples_path(output)
    if not rows_file.is_file():
        return []
    from medrec.score.writer import read_rows

    done: dict[str, bool] = {}
    for row in read_rows(rows_file)[1]:
        study = str(row.get("study_uid") or "")
        if study:
            done[study] = done.get(study, True) and not (retry_errors and row.get("error"))
    return sorted(study for study, ok in done.items() if ok)


def _describe_rules(rules: Any) -> Any:
    if rules is None:
        return "SelectionRules defaults"
    for method in ("model_dump", "_asdict"):
        if hasattr(rules, method):
            return getattr(rules, method)()
    try:
        from dataclasses import asdict

        return asdict(rules)
    except TypeError:
        return repr(rules)


def selection_rules_of(run_dir: str | Path) -> SelectionRules | None:
    """The series-selection rules the run's scans were indexed with, or None for ``SelectionRules`` defaults.

    ``medrec train`` takes a manifest and records no indexing rules; ``medrec run`` indexes the
    scans itself and keeps its resolved recipe, ``index.rules`` included, in ``RUN/workflow.yaml``
    (a cross-validation fold, ``RUN/folds/fold_i``, in its recipe's folder two levels up).

    Raises:
        ModelError: the recorded rules are not valid :class:`~medrec.index.SelectionRules`.
    """
    folder = Path(run_dir)
    # the file and folder names of medrec.workflow, which lies above scoring in the pipeline
    candidates = [folder / "workflow.yaml"]
    if folder.parent.name == "folds":
        candidates.append(folder.parent.parent / "workflow.yaml")
    recipe = next((path for path in candidates if path.is_file()), None)
    if recipe is None:
        return None
    try:
        content = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ModelError(f"{recipe}: cannot be read ({e}); the series-selection rules of the run are unknown: "
                         "repair or remove the file (without it the default rules apply)") from e
    index = content.get("index") if isinstance(content, dict) else None
    rules = index.get("rules") if isinstance(index, dict) else None
    if rules is None:
        return None
    from medrec.index import SelectionRules

    try:
        return SelectionRules.model_validate(rules)
    except ValueError as e:
        raise ModelError(f"{recipe}: index.rules are not valid series-selection rules ({e})") from e


def load_scoring_run(run_dir: str | Path) -> tuple[Run, str]:
    """Load a run directory for scoring; returns ``(run, sha256 of model.safetensors)``.

    Raises:
        ModelError: RUN is a file (e.g. a pickled ``.pt`` checkpoint) or not a complete run directory.
    """
    folder = Path(run_dir)
    if folder.is_file():
        raise ModelError(
            f"{folder}: RUN must be a run directory (model.safetensors + model.json from 'medrec train'), got a "
            f"file; pickled checkpoints (.pt, .pth, .pkl) are never loaded"
        )
    if not folder.is_dir():
        raise ModelError(
            f"{folder}: run directory not found; train one with 'medrec train RECIPE -o RUN --manifest MANIFEST'")
    run = load_run(folder)
    weights = folder / MODEL_WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{folder}: has no {MODEL_WEIGHTS}; only safetensors run directories are scored")
    return run, sha256_file(weights)


def score(
    run_dir: str | Path,
    input_path: str | Path,
    output: str | Path,
    options: ScoreOptions | None = None,
    labels: str | Path | None = None,
    show_progress: bool = True,
    match_on: str | None = None,
    filters: Any = None,
) -> ScoreResult:
    """Score a scan folder, a manifest CSV or a DICOMweb service with a run directory (``medrec score RUN INPUT``).

    A scan folder is indexed with the run's own series-selection rules (else the defaults) into
    ``<output stem>.index/``; a manifest CSV is used as is. With ``labels``, a rerun also refreshes
    the label of the samples scored before (they are not scored again).

    Args:
        run_dir: the run directory (``model.safetensors`` + ``model.json``).
        input_path: a scan folder, a manifest CSV or ``dicomweb:URL`` (studies already scored in the output
            are not fetched again).
        output: the predictions CSV.
        options: see :class:`ScoreOptions`.
        labels: labels file for a scan folder (adds the ``label`` column).
        show_progress: draw progress bars.
        match_on: the labels key (``patient_id``, ``study_uid``, ``accession``, ``path``); None: the
            key that matches most samples.
        filters: :class:`medrec.index.dicomweb.DicomwebFilters` choosing the studies of a DICOMweb INPUT.

    Returns:
        A :class:`ScoreResult`.

    Raises:
        ModelError: RUN is not a run directory.
        InputError: INPUT is missing or holds no samples.
        OutputError: the output belongs to another model or other settings.
    """
    options = options or ScoreOptions()
    options.validate()
    run, model_hash = load_scoring_run(run_dir)
    rules = selection_rules_of(run_dir)
    from medrec.index.dicomweb import is_dicomweb

    # only a PACS input needs them: its scored studies are not fetched again (a folder is read whole anyway)
    skip = [] if options.overwrite or not is_dicomweb(input_path) else studies_done(
        output, options.level, options.retry_errors)
    manifest, description = load_input(input_path, output, rules=rules, labels=labels,
                                       workers=options.workers or None, match_on=match_on, filters=filters,
                                       skip_studies=skip)
    if manifest.empty:
        raise InputError(f"{input_path}: holds no sample to score (see the index's qc.csv for what was left out)")
    description["run_dir"] = str(Path(run_dir).resolve())
    return score_manifest(run, manifest, output, options, model_sha256=model_hash,
                          input_description=description, show_progress=show_progress,
                          refresh_labels=labels is not None)
