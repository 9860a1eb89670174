"""``medrec score``: batch scoring with a trained run directory (and ``--merge`` of sharded parts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer

from medrec.commands import dicomweb_options
from medrec.commands.index import MatchOn
from medrec.console import console, print_summary
from medrec.errors import ConfigError, InputError, ModelError

HELP = """Score a scan folder or a manifest with a trained run; resumable, one bad
study never stops the batch.

INPUT is a scan folder (indexed on the fly with the run's series-selection
rules into <output stem>.index/) or a manifest CSV from 'medrec index'.
Preprocessing is the run's own (the training transforms without
augmentation).

Output (-o predictions.csv): sample_id, patient_id, study_uid, score
(calibrated probability of the positive class; score_<class> per class for
multi-class runs), prediction (class name at the run's operating threshold,
or --threshold), label ('' when unknown), error ('' when fine), plus
uncertainty with --tta. A sidecar predictions.csv.json records the model's
sha256, the medrec version, the threshold and its source, the input
fingerprint, level, counts and times.

Finding-map runs (e.g. finding_fcn) add the top finding of each row
(finding_x, finding_y, finding_z in LPS mm, finding_diameter_mm,
finding_probability) and write every candidate finding (regions of the map
above probability 0.05, at most 10 per sample) to <output stem>.findings.csv
(sample_id, study_uid, patient_id, rank, x, y, z, diameter_mm, probability),
resumable like the predictions; 'medrec report --lesions' reads it.

Levels: --level series gives one row per sample. --level study | patient
groups the samples (sample-level rows are kept, resumably, in <output
stem>.samples.csv) and aggregates the score with --aggregate max (default
for binary runs) or mean (multi-class: mean only). Failed samples are left
out of their group: a group with at least one scored sample keeps the
aggregate of those (error empty, n_failed says how many were dropped); a
group where every sample failed has an empty score and error 'all N samples
failed: <reason>'. The group label is the members' label when they agree,
else the positive class if any member is positive.

Resuming: rerunning the same command skips samples already in the output;
rows with an error are kept as they are unless --retry-errors scores them
again. An output made by another model (or with other --level / --aggregate
/ --tta / --threshold / parts) is refused; --overwrite starts fresh.
--explain maps are written only for the samples scored by that call.

Labels describe the samples, not the scoring: a rerun with --labels FILE
(e.g. labels that arrived after scoring) refreshes the label column (and the
patient / study ids a labels file gives NIfTI files) of the rows already
scored, without scoring them again; the summary counts them as 'labels
refreshed'. 'medrec report --labels FILE' attaches labels at report time
instead.

Test-time augmentation (--tta): every flip combination of the spatial axes
(4 in 2D, 8 in 3D) is scored and averaged; uncertainty is the standard
deviation of the positive-class probability (multi-class: of the predicted
class) over the flips. Flip averaging moves the scores, so the threshold
training chose does not apply to them: the operating threshold of TTA scores
is chosen on the run's validation split scored with TTA, by the run's own
rule (computed on first use, kept in RUN/model.json as threshold_tta);
--threshold overrides it.

Grad-CAM (--explain DIR): DIR/<sample_id>.nii.gz holds the positive-class
Grad-CAM of the last convolution, resampled onto the input image grid (same
RAS affine as the input), 1 = strongest evidence for the positive class;
DIR/<sample_id>.png shows the most activated slice. Finding-map runs write
their own finding map instead (the voxel probability of a lesion, on the
input grid).

Many machines: --num-parts K --part-id I scores the samples whose
sha256(sample_id) mod K == I (at study / patient level the hash of the study
/ patient, so groups stay whole) into its own file; then 'medrec score
--merge -o predictions.csv part*.csv' checks the parts (same model, all K
present, no sample twice) and combines them.

DICOM results (--dicom-out DIR): one Comprehensive 3D SR per study
(TID 1500: finding present / absent at the operating threshold, the
calibrated score, the model's name, version and weights sha256, the
threshold and its source; finding-map runs add the top finding as a circle
on the source slice and a SEG of the finding map, whose maps go to
--explain, default DIR/maps). UIDs are stable: writing again replaces. DIR/
dicom_out.csv lists what was written per study; a rerun writes only the
studies whose results changed. --store dicomweb:URL sends the objects to a
PACS (STOW-RS, same credentials as a dicomweb INPUT).

PACS: INPUT dicomweb:URL fetches the selected studies into <output
stem>.dicomweb/ (a study already scored in the output is not fetched again)
and scores them like a folder. See 'medrec index --help' for the filters,
credentials and caching.

Exit code 0 when at least one sample is scored in the output; non-zero when
none could be.

\b
Examples:
  medrec score runs/ct01 scans/new_ct -o predictions.csv
  medrec score runs/ct01 scans/new_ct -o predictions.csv --labels labels.csv
  medrec score runs/ct01 index/manifest.csv -o study.csv --level study --aggregate max --tta
  medrec score runs/ct01 index/manifest.csv -o preds.csv --explain gradcam/
  medrec score runs/ct01 index/manifest.csv -o part0.csv --num-parts 4 --part-id 0
  medrec score --merge -o predictions.csv part0.csv part1.csv part2.csv part3.csv
  medrec score runs/ct01 dicomweb:https://pacs/dicom-web --modality CT --since 2026-11-01 -o new.csv
  medrec score runs/ct01 dicomweb:https://pacs/dicom-web -o new.csv --dicom-out results/ --store dicomweb:https://pacs/dicom-web
"""


def on_interrupt(params: Mapping[str, Any], args: Sequence[str]) -> tuple[str, list[str]]:
    """What an interrupted ``medrec score`` kept, and the command line that resumes it.

    Args:
        params: the parsed parameters of the command (``output``, ``level``, ``merge``).
        args: the command line after ``medrec``.

    Returns:
        The text saying what was kept, and the arguments that resume (without ``--overwrite``, which
        would throw the kept rows away).
    """
    output = Path(params["output"])
    resume_args = [word for word in args if word != "--overwrite"]
    if params.get("merge"):
        return f"nothing was merged into {output}; the part files are unchanged", resume_args
    # deferred: medrec.score imports torch, which the CLI does not load before a command needs it
    from medrec.score.layout import samples_path
    from medrec.score.writer import read_rows

    rows_file = output if params.get("level", "series") == "series" else samples_path(output)
    try:
        rows = len(read_rows(rows_file)[1]) if rows_file.is_file() else 0
    except (OSError, ValueError):
        rows = None
    if rows == 0:
        return f"no row had been written to {rows_file}", resume_args
    count = "the rows" if rows is None else f"the {rows} row{'' if rows == 1 else 's'}"
    return (f"{rows_file} keeps {count} scored so far; the same command skips them and scores the rest",
            resume_args)


def _finding_run(run_dir: Path) -> bool:
    """Whether RUN holds a finding-map model (read from its model.json; False when that cannot be read)."""
    from medrec.runinfo import read_run_info  # deferred: the CLI starts without pydantic

    try:
        name = read_run_info(run_dir).architecture.name
        from medrec.models.registry import model_family  # deferred: imports torch

        return model_family(name) == "finding-map"
    except (LookupError, ModelError):
        return False


def _default_workers() -> int:
    from medrec.score import default_workers

    return default_workers()


def register(app: typer.Typer) -> None:
    """Add ``medrec score`` to the CLI."""

    @app.command("score", help=HELP, no_args_is_help=True)
    def score_command(
        arguments: list[str] = typer.Argument(
            ..., metavar="RUN INPUT | PART.csv...",
            help="RUN directory and INPUT (scan folder, manifest CSV or dicomweb:URL); with --merge: the part files.",
        ),
        output: Path = typer.Option(..., "-o", "--output", help="Predictions CSV to write (or resume)."),
        level: str = typer.Option("series", "--level", help="series | study | patient."),
        aggregate: str | None = typer.Option(None, "--aggregate",
                                             help="max | mean for study / patient rows [binary: max]."),
        threshold: float | None = typer.Option(None, "--threshold",
                                               help="Operating threshold instead of the run's own."),
        tta: bool = typer.Option(False, "--tta", help="Average all flips; adds an uncertainty column."),
        explain: Path | None = typer.Option(None, "--explain", metavar="DIR",
                                            help="Write Grad-CAM maps, or finding maps of finding-map runs "
                                                 "(NIfTI + PNG), into DIR."),
        labels: Path | None = typer.Option(None, "--labels", help="Labels file when INPUT is a scan folder; on a "
                                                                  "rerun it also relabels the rows already scored."),
        match_on: MatchOn | None = typer.Option(
            None, "--match-on", help="Labels key; default: the column that matches most samples."),
        workers: int | None = typer.Option(None, "--workers",
                                           help="Loader processes (0: in the main process) "
                                                "[one per core, at most 4; 0 on one core]."),
        batch_size: int = typer.Option(8, "--batch-size", help="Samples per inference batch."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        amp: bool = typer.Option(True, "--amp/--no-amp", help="float16 autocast on CUDA."),
        retry_errors: bool = typer.Option(False, "--retry-errors", help="Score again rows that hold an error."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Discard an existing output and start fresh."),
        num_parts: int = typer.Option(1, "--num-parts", help="Split the job into K deterministic parts."),
        part_id: int = typer.Option(0, "--part-id", help="Which part to score (0..K-1)."),
        merge: bool = typer.Option(False, "--merge", help="Combine part files (given as arguments) into -o."),
        allow_incomplete: bool = typer.Option(False, "--allow-incomplete",
                                              help="--merge: accept missing or unfinished parts."),
        study_uid: list[str] = dicomweb_options.STUDY_UID,
        patient_id: list[str] = dicomweb_options.PATIENT_ID,
        accession: list[str] = dicomweb_options.ACCESSION,
        modality: list[str] = typer.Option([], "--modality",
                                           help="dicomweb INPUT: only studies / series of this modality (repeatable)."),
        since: str | None = dicomweb_options.SINCE,
        until: str | None = dicomweb_options.UNTIL,
        dicom_out: Path | None = typer.Option(
            None, "--dicom-out", metavar="DIR",
            help="Also write the results as DICOM: an SR (TID 1500) per study, a SEG per finding map."),
        store: str | None = typer.Option(None, "--store", metavar="dicomweb:URL",
                                         help="Send the --dicom-out objects to a PACS (STOW-RS)."),
    ) -> None:
        paths = [Path(a) for a in arguments]
        if merge:
            _merge(paths, output, allow_incomplete, overwrite)
            return
        if len(paths) != 2:
            raise ConfigError(
                f"medrec score takes RUN and INPUT (got {len(paths)} argument(s)); to combine part files use "
                "'medrec score --merge -o predictions.csv part*.csv'"
            )
        if modality and not arguments[1].startswith("dicomweb:"):
            raise ConfigError("--modality selects studies of a dicomweb:URL INPUT; a folder or manifest is taken whole")
        filters = dicomweb_options.filters_from(study_uid, patient_id, accession, modality, since, until, arguments[1])
        if store is not None and dicom_out is None:
            raise ConfigError("--store sends the DICOM results: give --dicom-out DIR too")
        if store is not None:
            from medrec.index.dicomweb import service_url

            service_url(store)  # a malformed address fails before scoring, not after
        if dicom_out is not None and explain is None and _finding_run(paths[0]):
            explain = dicom_out / "maps"  # the SEG objects are made from the finding maps
        from medrec.score import ScoreOptions, score

        options = ScoreOptions(
            level=level, aggregate=aggregate, threshold=threshold, tta=tta,
            batch_size=batch_size, workers=_default_workers() if workers is None else workers, device=device,
            amp=amp, explain_dir=explain, retry_errors=retry_errors, overwrite=overwrite,
            num_parts=num_parts, part_id=part_id,
        )
        result = score(paths[0], arguments[1] if filters is not None else paths[1], output, options, labels=labels,
                       match_on=match_on.value if match_on is not None else None, filters=filters)
        rows = [
            ("scored", result.scored),
            ("failed", result.failed),
            ("skipped (already done)", result.skipped),
            *([("labels refreshed (rows already scored)", result.relabelled)] if labels is not None else []),
            ("rows in output", result.rows),
            ("rows with a score", result.rows_ok),
            ("level", result.record.get("level")),
            ("threshold", f"{result.record.get('threshold')} ({result.record.get('threshold_source')})"),
            ("output", result.output),
            ("sidecar", result.sidecar),
        ]
        if result.record.get("findings_file"):
            rows.append(("candidate findings", Path(output).with_name(result.record["findings_file"])))
        if num_parts > 1:
            rows.insert(rows.index(("level", result.record.get("level"))), ("part", f"{part_id} of {num_parts}"))
        if explain is not None:
            rows.append(("Grad-CAM maps", explain))
        print_summary("medrec score", rows)
        if dicom_out is not None and result.rows_ok:
            from medrec.score.dicom_results import write_dicom_results

            written = write_dicom_results(output, dicom_out, store=store, explain_dir=explain)
            print_summary("DICOM results", written.rows())
            for study, reason in written.failures[:5]:
                console.print(f"[yellow]DICOM result not written for study {study}:[/] {reason}")
        if result.failures:
            top_reasons = [(reason[:160], count) for reason, count in result.failures.most_common(5)]
            print_summary("Top failure reasons", top_reasons, columns=("reason", "samples"))
        counts = result.record.get("counts", {})
        if result.rows and not result.rows_ok:
            top = result.failures.most_common(1)
            reason = f"; first reason: {top[0][0]}" if top else ""
            raise InputError(f"no sample could be scored ({result.rows} failed){reason}")
        if not counts.get("part_samples"):
            console.print(f"[yellow]warning:[/] part {part_id} of {num_parts} holds no sample; wrote an empty {output}")


def _merge(parts: list[Path], output: Path, allow_incomplete: bool, overwrite: bool) -> None:
    from medrec.score import merge_parts

    result = merge_parts(parts, output, allow_incomplete=allow_incomplete, overwrite=overwrite)
    rows = [
        ("parts merged", len(result.parts)),
        ("rows", result.rows),
        ("rows with a score", result.rows_ok),
        ("output", result.output),
        ("sidecar", result.sidecar),
    ]
    if result.missing_parts:
        rows.append(("missing parts", ", ".join(map(str, result.missing_parts))))
    if result.incomplete_parts:
        rows.append(("unfinished parts", ", ".join(map(str, result.incomplete_parts))))
    print_summary("medrec score --merge", rows)
