"""``medrec score``: batch scoring of a manifest or a scan folder with a trained run directory.

The steps live in their own modules: options and result (:mod:`medrec.score.options`), the run directory
(:mod:`medrec.score.scoring_run`), INPUT (:mod:`medrec.score.inputs`), the file's columns
(:mod:`medrec.score.layout`), its lock (:mod:`medrec.score.lock`) and resuming it (:mod:`medrec.score.resume`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from medrec import __version__
from medrec.atomicio import write_csv
from medrec.console import progress
from medrec.data.dataset import PreprocessDataset
from medrec.device import resolve_device
from medrec.errors import ConfigError, InputError, ModelError, OutputError
from medrec.models.findings import is_finding_model
from medrec.rundir import ScoringRun, positive_index_of
from medrec.score.aggregate import aggregate_rows
from medrec.score.findings import (
    CANDIDATE_MIN_PROBABILITY,
    FINDING_COLUMNS,
    MAX_CANDIDATES,
    candidate_findings,
    finding_probability_map,
    top_finding,
)
from medrec.score.inference import Predictor
from medrec.score.inputs import input_fingerprint, load_input
from medrec.score.layout import IDENTITY_COLUMNS, _base_row, output_columns, samples_path, score_columns
from medrec.score.lock import output_lock
from medrec.score.options import ScoreOptions, ScoreResult
from medrec.score.pipeline import iterate_batches
from medrec.score.resume import _check_resume, _refresh_labels, studies_done
from medrec.score.scoring_run import _run_threshold, _voxel_mm, load_scoring_run, scoring_transforms, selection_rules_of
from medrec.score.shards import select_part
from medrec.score.writer import FindingsWriter, PredictionsWriter, findings_path, read_rows, sidecar_path, write_sidecar
from medrec.thresholds import is_positive


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
