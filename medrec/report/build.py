"""Build the clinical validation report: read the inputs, analyse, draw, render, write.

:func:`write_report` is the one entry point (the ``medrec report`` command and ``medrec evaluate``
call it). It writes, inside ``out_dir``::

    report.html      self-contained (inline CSS, images as data URIs)
    report.pdf       the same content, A4, paginated
    report.json      the analysis dict plus ``cohort``, ``limitations``, ``provenance``, ``figures``
    figures/*.png    every figure (file names never come from identifiers or header values)

Identifiers are pseudonymised before the analysis sees them (see :mod:`medrec.report.pseudonym`),
so nothing downstream can leak them; a final check refuses to write any output that still
contains a raw patient, study or sample identifier.

Its steps live beside it: inputs, operating_threshold, label_space, held_out, cohort_flow, data_origin,
provenance, figure_set, case_pictures and json_ready (modules of :mod:`medrec.report`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medrec.atomicio import write_bytes, write_text
from medrec.errors import ConfigError, InputError, ModelError
from medrec.manifest import read_manifest
from medrec.report import document as doc_model
from medrec.report import failures
from medrec.report.acceptance import judge_acceptance
from medrec.report.case_pictures import _explain_folders, _representative_members, draw_thumbnails
from medrec.report.cohort_flow import cohort_flow
from medrec.report.data_origin import synthetic_origin
from medrec.report.figure_set import compare_curves, draw_figures
from medrec.report.held_out import (
    _record_training_rows,
    _split_counts_text,
    check_same_model,
    fitted_on,
    run_of_predictions,
    training_split_of_rows,
)
from medrec.report.inputs import (
    _read_optional_csv,
    flow_splits,
    is_multiclass,
    manifest_for_flow,
    predictions_level,
    read_predictions,
    read_run,
    read_scoring_record,
    scanned_folder,
    scoring_samples_file,
    sidecar_of,
)
from medrec.report.json_ready import to_json_ready
from medrec.report.label_space import label_mapping, run_label_space
from medrec.report.operating_threshold import resolve_threshold, scored_threshold, tta_run_info
from medrec.report.provenance import provenance_block, report_date
from medrec.report.pseudonym import Pseudonymiser, check_no_identifiers, key_from_file, raw_identifiers
from medrec.report.reference import attach_labels
from medrec.report.render_html import render_html
from medrec.report.render_pdf import render_pdf
from medrec.report.validation_split import validation_results
from medrec.runinfo import MODEL_JSON

if TYPE_CHECKING:  # medrec.config imports medrec.transforms, which imports torch: not at report start-up
    from medrec.config import AcceptanceCriteria, StudyContext


PREDICTION_ID_COLUMNS: tuple[str, ...] = ("sample_id", "patient_id", "study_uid")


def write_report(
    predictions_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    qc: str | os.PathLike[str] | None = None,
    *,
    threshold: float | None = None,
    exploratory_threshold: str | None = None,
    subgroups: Sequence[str] = (),
    prevalence: float | None = None,
    ci_method: str = "wilson",
    n_boot: int = 2000,
    seed: int = 0,
    compare: str | os.PathLike[str] | None = None,
    keep_identifiers: bool = False,
    title: str | None = None,
    lesions: str | os.PathLike[str] | None = None,
    lesion_tolerance_mm: float | None = None,
    labels: str | os.PathLike[str] | None = None,
    match_on: str | None = None,
    label_column: str = "label",
    prevalence_source: str | None = None,
    acceptance: AcceptanceCriteria | None = None,
    acceptance_source: str = "",
    acceptance_caveat: str = "",
    context: StudyContext | None = None,
    **analysis_kw,
) -> dict:
    """Analyse a predictions file and write report.html, report.pdf, report.json and figures/.

    Args:
        predictions_csv: the ``medrec score`` output.
        out_dir: the report folder (created).
        run_dir: the run directory; its ``model.json`` gives the frozen operating threshold, its
            ``manifest.csv`` / ``splits.csv`` / ``config.yaml`` are used when present.
        manifest: manifest.csv for subgroup columns and thumbnails (default: the manifest the
            predictions were scored from, as their sidecar records it, else ``RUN/manifest.csv``).
        qc: qc.csv for the exclusions in the cohort flow (default: beside the manifest).
        threshold: a user-given operating threshold (overrides the run's and the sidecar's).
        exploratory_threshold: ``youden`` or ``sensitivity:0.95``: choose the threshold on these
            data (labelled EXPLORATORY everywhere).
        subgroups: manifest (or predictions) columns to break the metrics down by.
        prevalence: the clinical prevalence for adjusted PPV / NPV.
        ci_method: ``wilson`` or ``clopper-pearson`` for proportions.
        n_boot: bootstrap replicates (AUC-free metrics, patient-clustered).
        seed: bootstrap seed.
        compare: a second predictions CSV to compare against (paired on sample_id).
        keep_identifiers: write raw identifiers instead of pseudonyms (internal use only).
        title: the report title.
        lesions: a lesion table (``study_uid`` / ``series_uid``, ``center_x/y/z`` LPS mm, ``diameter_mm``,
            optional ``contrast``): adds the lesion-level results of a finding-map run (hit rate, FROC,
            sensitivity by size and contrast; :mod:`medrec.report.lesions`). Needs the candidate
            findings file that ``medrec score`` writes beside the predictions of such a run. The
            failure review shows each flagged case on the slice of its largest lesion, circled
            (:mod:`medrec.report.failures`); a ``mask`` column of ``labels`` serves the same way.
        lesion_tolerance_mm: added to a lesion's radius when matching a finding; default one voxel of
            the scoring grid (from the predictions sidecar).
        labels: a labels file whose labels replace the predictions' label column
            (:mod:`medrec.report.reference`); the report names it as the reference standard.
        match_on: the labels key (``patient_id``, ``study_uid``, ``accession``, ``path``); None: the
            key that matches most samples.
        label_column: the labels file's label column.
        prevalence_source: where ``prevalence`` came from (``--prevalence``, ``recipe
            evaluation.prevalence``), printed beside every PPV / NPV at it.
        acceptance: pre-specified acceptance criteria, judged PASS / FAIL on the report's metrics
            (page 1 and ``report.json`` ``acceptance``; :mod:`medrec.report.acceptance`).
        acceptance_source: where the criteria came from, for the report.
        acceptance_caveat: what a reader of the verdicts must know about the data judged.
        context: the study's context (intended use, target condition, reference standard, data
            source, sites, dates), printed on page 1.
        **analysis_kw: passed on to :func:`medrec.report.analysis.analyse_predictions`.

    Returns:
        The report dict as written to report.json.

    The threshold is, in this order: ``threshold``, ``exploratory_threshold``, the run's model.json,
    the threshold the predictions were made at (their sidecar ``PREDICTIONS.json``, written by
    ``medrec score``). When the one used differs from the one the predictions were made at, the
    decisions are recomputed (``score >= threshold``) and ``threshold_source`` says both.
    Predictions scored with TTA take the run's ``threshold_tta`` (:func:`tta_run_info`).

    Rows from the training or validation split of the run (``run_dir``, else the run the sidecar
    names when it still holds the weights that scored) are left out of the analysis, counted in
    the flow and flagged first among the warnings and in a banner (:func:`training_split_of_rows`).
    The flow describes the manifest that was scored (:func:`manifest_for_flow`).

    Raises:
        InputError: unreadable predictions / manifest / qc / sidecar, a score that is not a number,
            predictions made by other weights than the run's, predictions that all come from the
            run's training / validation split, or ``lesions`` given for predictions without a
            findings file (not a finding-map run).
        LabelsError: ``labels`` is unusable or matches none of the predictions.
        AnnotationError: the lesion table is missing or lacks columns.
        ConfigError: no threshold source, or contradictory options.
        ModelError: the run's model.json is missing or has no threshold, or TTA predictions have no
            threshold chosen with TTA.
        SecurityError: an output would contain a raw identifier.
        OutputError: the output folder is not writable.
    """
    from medrec.report.analysis import analyse_predictions

    predictions_path = Path(predictions_csv)
    out = Path(out_dir)
    run = Path(run_dir) if run_dir is not None else None
    if run is not None and not run.is_dir():
        raise ModelError(f"{run}: run directory not found; pass the folder written by 'medrec train -o RUN'")
    predictions = read_predictions(predictions_path)
    multiclass = is_multiclass(predictions)
    record = read_scoring_record(predictions_path)
    sidecar = sidecar_of(predictions_path)
    lesion_module = None
    if lesions is not None:
        # deferred: the findings file's reader lives in medrec.score, which imports torch
        from medrec.report import lesions as lesion_module

        if multiclass:
            raise ConfigError("--lesions applies to binary finding-map runs; these predictions are multi-class")
        lesion_module.findings_file_of(predictions_path)  # fail before the analysis, naming the file
        lesion_module.require_lesion_table(lesions)

    run_info = None
    if run is not None and ((threshold is None and not exploratory_threshold) or (run / MODEL_JSON).is_file()):
        run_info = read_run(run)
    check_same_model(record, sidecar, run, run_info)
    scored = scored_threshold(record, sidecar)
    space = run_label_space({"classes": run_info.classes, "positive_class": run_info.positive_class}
                            if run_info is not None else record)
    threshold_info, tta_threshold_used = tta_run_info(run_info, record, scored, sidecar, threshold,
                                                      exploratory_threshold)
    value, kind, method, source_text = resolve_threshold(
        threshold_info, run / MODEL_JSON if run else None, threshold, exploratory_threshold, multiclass, scored)
    if tta_threshold_used:
        source_text += "; chosen on validation scored with test-time augmentation, as these predictions were"

    # Rows of the run's own training / validation split are no validation data: they leave the analysis.
    level = predictions_level(record, predictions)
    owner = run_of_predictions(run, record)
    fitted = fitted_on(owner) if owner is not None else None
    in_training = (training_split_of_rows(predictions, fitted, level) if fitted is not None
                   else pd.Series("", index=predictions.index, dtype=str))
    training_rows = predictions[in_training != ""]
    if len(training_rows) and len(training_rows) == len(predictions):
        raise InputError(
            f"{predictions_path}: all {len(predictions)} rows hold data from the training or validation split of the "
            f"run ({owner.name}/splits.csv: {_split_counts_text(in_training)}); a validation report needs data the "
            "model was neither fitted nor tuned on: 'medrec evaluate RUN' scores the run's locked test split, or "
            "score a new cohort"
        )
    predictions = predictions[in_training == ""].reset_index(drop=True)

    if manifest is not None and not Path(manifest).is_file():
        raise InputError(f"{manifest}: manifest not found; pass the manifest.csv written by 'medrec index'")
    if qc is not None and not Path(qc).is_file():
        raise InputError(f"{qc}: qc file not found; pass the qc.csv written by 'medrec index'")
    manifest_path, manifest_warning = manifest_for_flow(predictions_path, record,
                                                        Path(manifest) if manifest is not None else None,
                                                        run if run is not None else owner)
    manifest_frame = read_manifest(manifest_path) if manifest_path is not None and manifest_path.is_file() else None
    reference = None
    if labels is not None:
        predictions, reference = attach_labels(
            predictions, Path(labels), match_on=match_on, label_column=label_column,
            samples_file=scoring_samples_file(predictions_path, record), manifest=manifest_frame,
            scans_root=scanned_folder(record), space=space,
        )
    qc_path = Path(qc) if qc is not None else (manifest_path.parent / "qc.csv" if manifest_frame is not None else None)
    qc_frame = _read_optional_csv(qc_path)
    splits_frame = flow_splits(manifest_path, manifest_frame, predictions, run if run is not None else owner)
    compare_path = Path(compare) if compare is not None else None
    compare_frame = read_predictions(compare_path) if compare_path is not None else None
    for column in subgroups:
        if column not in predictions.columns and (manifest_frame is None or column not in manifest_frame.columns):
            available = sorted(manifest_frame.columns) if manifest_frame is not None else []
            raise ConfigError(
                f"--subgroup {column!r}: no such column in the manifest or the predictions; available: "
                f"{', '.join(available) if available else 'none (pass --manifest MANIFEST)'}"
            )

    # Pseudonymise before anything is analysed or drawn: nothing downstream sees a raw identifier.
    pseudonymiser = Pseudonymiser(key_from_file(predictions_path), enabled=not keep_identifiers)
    tables = [t for t in (predictions, manifest_frame, compare_frame, splits_frame) if t is not None]
    for column in ("patient_id", "study_uid", "sample_id", "series_uid", "accession"):
        pseudonymiser.reserve(column, (v for t in tables if column in t.columns for v in t[column]))
    shown_to_raw = {pseudonymiser.pseudonym(s, "sample_id"): str(s) for s in predictions["sample_id"]}
    manifest_rows = ({str(r["sample_id"]): r for r in manifest_frame.to_dict("records")}
                     if manifest_frame is not None else {})
    # a study / patient row is pictured by its highest-scoring member sample (its scan and its map)
    representatives = _representative_members(predictions, scoring_samples_file(predictions_path, record),
                                               manifest_rows)
    for group, member in representatives.items():
        manifest_rows.setdefault(group, manifest_rows[member])
    keep_columns = {*PREDICTION_ID_COLUMNS, "prediction", "label", "error", "split", *subgroups}
    predictions_view = pseudonymiser.frame(predictions)
    predictions_view = predictions_view[[c for c in predictions_view.columns
                                         if c in keep_columns or c == "score" or c.startswith("score_")]]
    compare_view = pseudonymiser.frame(compare_frame)
    positive_label = analysis_kw.pop("positive_label", None)
    mapping: dict[str, str] = {}
    if not multiclass:
        mapping, positive_label = label_mapping(predictions, space, positive_label, predictions_path.name)
        if positive_label is None and run_info is not None and run_info.positive_class is not None:
            positive_label = run_info.positive_class
    if mapping and "prediction" in predictions_view.columns:
        # 'prediction' holds the run's class names; the analysis reads it in the labels' vocabulary
        to_label = {name: label for label, name in mapping.items()}
        predictions_view = predictions_view.assign(prediction=predictions_view["prediction"].map(
            lambda value: to_label.get(str(value).strip(), value)))

    report = dict(analyse_predictions(
        predictions_view, value, source_text,
        manifest=pseudonymiser.frame(manifest_frame),
        subgroups=tuple(subgroups),
        prevalence=prevalence,
        prevalence_source=prevalence_source if prevalence is not None else None,
        ci_method=ci_method,
        n_boot=n_boot,
        seed=seed,
        compare=compare_view,
        exploratory_threshold=method if kind == "exploratory" else None,
        positive_label=positive_label,
        **analysis_kw,
    ))
    report["threshold_kind"] = kind
    report["threshold_method"] = method
    report["scoring_threshold"] = scored.value if scored is not None else None
    report["label_mapping"] = mapping or None
    report["reference_standard"] = reference.as_dict() if reference is not None else None
    warnings = report.setdefault("warnings", [])
    if scored is not None and report.get("threshold") is not None and kind != "exploratory" \
            and not math.isclose(float(report["threshold"]), scored.value, rel_tol=0.0, abs_tol=1e-12):
        warnings.append(f"the predictions were made at {scored.value:g} ({scored.origin}); this report "
                        f"recomputes every decision at {float(report['threshold']):g} (score >= threshold); the "
                        "file's 'prediction' column holds the decisions of scoring")
    if len(training_rows):
        _record_training_rows(report, in_training)
    if manifest_warning:
        warnings.append(manifest_warning)
    if lesion_module is not None:
        # raw identifiers are needed to match the lesion table; only counts and rates come back
        report["lesion_level"] = lesion_module.lesion_level_results(
            predictions_path, predictions, lesions, threshold=float(report["threshold"]),
            positive_label=str(report.get("positive_label")), classes=report.get("classes") or (),
            manifest=manifest_frame, tolerance_mm=lesion_tolerance_mm, ci_method=ci_method,
        )
        report.setdefault("methods", {})["lesion_level"] = doc_model.lesion_method_sentence(report["lesion_level"])
    cohort = dict(report.get("cohort") or {})
    run_positive = mapping.get(str(report.get("positive_label")))
    for name, item in cohort_flow(predictions, manifest_frame, qc_frame, splits_frame,
                                  report.get("positive_label"), report.get("classes") or (),
                                  positive_aliases=[run_positive] if run_positive else [],
                                  also_scored=training_rows, level=level).items():
        cohort.setdefault(name, item)
    report["cohort"] = cohort
    report["validation_split"] = validation_results(
        run if run is not None else owner, report.get("threshold"), space[1] if space is not None else None,
        ci_method)
    report["context"] = {key: value for key, value in (context.model_dump() if context is not None else {}).items()
                         if value} or None
    report["data_origin"] = synthetic_origin(manifest_frame, [scanned_folder(record)])
    report["acceptance"] = judge_acceptance(acceptance, report, acceptance_source or "given to the report",
                                            acceptance_caveat)
    date = report_date()
    report["provenance"] = provenance_block(
        predictions_path, run, run_info, report, keep_identifiers,
        {"ci_method": ci_method, "n_boot": n_boot, "seed": seed}, date,
        compare_path=compare_path, manifest_path=manifest_path if manifest_frame is not None else None,
    )
    report["limitations"] = doc_model.limitations(report)

    figures = draw_figures(report, compare_curves(compare_view, report))
    cases = draw_thumbnails(report, shown_to_raw, manifest_rows, _explain_folders(predictions_path, record),
                            representatives, lesions=lesions, masks=failures.masks_file(labels),
                            findings=failures.top_findings(predictions), analysed=predictions_view)
    for key, flagged_cases in cases.items():  # report.json records what each case's picture shows
        for entry, case in zip((report.get("flagged") or {}).get(key) or [], flagged_cases, strict=False):
            entry["picture"] = case.picture_note
            entry["other_studies"] = [{"sample_id": sample_id, "score": score, "label": label}
                                      for sample_id, score, label in case.other_studies or ()]
    all_figures = dict(figures)
    for flagged_cases in cases.values():
        all_figures.update({c.figure.name: c.figure.png for c in flagged_cases if c.figure is not None})
    report["figures"] = [f"figures/{name}" for name in sorted(all_figures)]
    report = to_json_ready(report)

    document = doc_model.compose(report, figures, cases, title or doc_model.DEFAULT_TITLE, date)
    held_out = report.get("held_out_check") or {}
    if held_out.get("n_excluded"):
        banner = (f"{held_out['n_excluded']} of {report.get('n_rows')} prediction rows came from the data this model "
                  f"was trained or tuned on ({held_out['splits_text']}) and were EXCLUDED: the results below are "
                  "from the remaining rows only.")
        document.banner = f"{document.banner} {banner}" if document.banner else banner
    html = render_html(document)
    pdf = render_pdf(document)
    report_text = json.dumps(report, indent=2, allow_nan=False, ensure_ascii=False) + "\n"

    if not keep_identifiers:
        check_no_identifiers(
            {"report.html": html, "report.json": report_text, "report.pdf": "\n".join(document.texts()),
             "figures/": "\n".join(all_figures)},
            raw_identifiers([predictions, manifest_frame, compare_frame]),
        )

    figure_dir = out / "figures"
    for name, png in sorted(all_figures.items()):
        write_bytes(figure_dir / name, png)
    for stale in figure_dir.glob("*.png"):
        if stale.name not in all_figures:
            stale.unlink()
    write_bytes(out / "report.pdf", pdf)
    write_text(out / "report.html", html)
    write_text(out / "report.json", report_text)
    return report
