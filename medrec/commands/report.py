"""``medrec report``: the clinical validation report of a predictions file."""

from __future__ import annotations

from pathlib import Path

import typer

from medrec.commands.index import MatchOn
from medrec.console import console, print_summary
from medrec.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to the CLI."""

    @app.command("report")
    def report(
        predictions: Path = typer.Argument(..., help="predictions.csv written by 'medrec score'."),
        out: Path = typer.Option(..., "-o", "--out", help="Report folder (report.html, report.pdf, report.json, "
                                                           "figures/)."),
        run: Path | None = typer.Option(None, "--run", help="Run directory: its model.json gives the operating "
                                                             "threshold chosen on validation (overrides the "
                                                             "sidecar's); rows from its training / validation split "
                                                             "are left out; predictions made by other weights are "
                                                             "refused."),
        manifest: Path | None = typer.Option(None, "--manifest", help="manifest.csv for subgroups, thumbnails and "
                                                                       "--labels by path / accession (default: the "
                                                                       "manifest the predictions were scored from, "
                                                                       "per their sidecar, else RUN/manifest.csv)."),
        qc: Path | None = typer.Option(None, "--qc", help="qc.csv for the exclusions (default: beside the "
                                                          "manifest)."),
        subgroup: list[str] = typer.Option([], "--subgroup", help="Column to break the metrics down by; repeat "
                                                                   "it or separate with commas."),
        prevalence: float | None = typer.Option(None, "--prevalence", min=0.0, max=1.0,
                                                help="Clinical prevalence for adjusted PPV / NPV."),
        threshold: float | None = typer.Option(None, "--threshold", min=0.0, max=1.0,
                                               help="User-given operating threshold (overrides the run's and the "
                                                    "sidecar's)."),
        exploratory_threshold: str | None = typer.Option(
            None, "--exploratory-threshold",
            help="Choose the threshold on these data: 'youden' or 'sensitivity:0.95' (labelled EXPLORATORY)."),
        ci_method: str = typer.Option("wilson", "--ci-method", help="CI for proportions: wilson or "
                                                                    "clopper-pearson."),
        bootstrap: int = typer.Option(2000, "--bootstrap", min=0, help="Bootstrap replicates (patient-clustered)."),
        seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
        compare: Path | None = typer.Option(None, "--compare", help="A second predictions CSV to compare with "
                                                                     "(paired on sample_id)."),
        keep_identifiers: bool = typer.Option(False, "--keep-identifiers",
                                              help="Write raw patient / sample ids instead of pseudonyms "
                                                   "(internal use only)."),
        title: str | None = typer.Option(None, "--title", help="Report title."),
        lesions: Path | None = typer.Option(
            None, "--lesions", help="Lesion table (study_uid or series_uid, center_x/y/z LPS mm, diameter_mm, "
                                    "optional contrast): adds lesion-level results (hit rate, FROC, CPM) for the "
                                    "predictions of a finding-map run, and shows each false negative / positive on "
                                    "its lesion's slice with the lesion circled."),
        lesion_tolerance: float | None = typer.Option(
            None, "--lesion-tolerance", min=0.0, help="mm added to a lesion's radius when matching a finding "
                                                      "(default: one voxel of the scoring grid)."),
        labels: Path | None = typer.Option(
            None, "--labels", help="Labels file (CSV/TSV: label column + patient_id / study_uid / accession / path): "
                                   "its labels replace the predictions' label column; the report names it as the "
                                   "reference standard."),
        match_on: MatchOn | None = typer.Option(
            None, "--match-on", help="Labels key; default: the column that matches most scored samples."),
        label_column: str = typer.Option("label", "--label-column", help="Name of the labels column."),
        positive_label: str | None = typer.Option(
            None, "--positive-label", metavar="LABEL",
            help="The positive class among the reference labels, when their values do not say which (e.g. "
                 "'hcc' / 'fnh'); with --run, the label that means the run's positive class."),
        acceptance: Path | None = typer.Option(
            None, "--acceptance", help="YAML file of pre-specified acceptance criteria, e.g. 'auc: {lower_ci: 0.85}' "
                                       "and 'specificity: {value: 0.85}' (as a recipe's evaluation.acceptance): "
                                       "PASS / FAIL on page 1 and in report.json, with the sample size each "
                                       "lower-CI criterion needs; the exit status does not change."),
        dicom_out: Path | None = typer.Option(
            None, "--dicom-out", metavar="DIR",
            help="Also write report.pdf as a DICOM Encapsulated PDF into DIR, linked to the studies it describes."),
        store: str | None = typer.Option(None, "--store", metavar="dicomweb:URL",
                                         help="Send the --dicom-out object to a PACS (STOW-RS)."),
    ) -> None:
        """Write a clinical validation report (HTML, PDF, JSON, figures) for a predictions file.

        The operating threshold is the first of: --threshold (user-given),
        --exploratory-threshold (chosen on these data: EXPLORATORY),
        RUN/model.json (chosen on validation, frozen), and the threshold the
        predictions were made at (their sidecar PREDICTIONS.json from 'medrec
        score'). Every decision is recomputed as score >= threshold. An
        explicit --threshold or --run wins over the sidecar: a validation
        report is about the operating point named for it (for --run, the one
        pre-specified on validation), not about whatever threshold scoring
        happened to use. When it differs from the threshold the predictions
        were made at (e.g. scored with --threshold 0.3, reported with --run),
        the report states that the predictions were made at 0.3 and that their
        decisions were recomputed at the new threshold.

        The reference standard is the predictions' label column, or --labels
        FILE matched to the scored samples when the report is made (by
        study_uid, accession, path or patient_id, as 'medrec index' matches;
        study / patient rows get the label of their samples). Matching by path
        or accession needs the manifest the predictions were scored from (found
        through the sidecar, or --manifest). Rows left without a label are
        excluded as 'no label'; the report names the file it used.

        Predictions scored with --tta are compared with the threshold chosen on
        validation scored with TTA (RUN/model.json threshold_tta, which 'medrec
        score --tta' writes), never with the one chosen without it.

        A report validates data the model never learned from: rows whose
        sample (study / patient rows: a member sample, or the study / patient)
        lies in the training or validation split of the run (--run, or the run
        the sidecar names) are excluded, counted in the flow and flagged on
        page 1; when no row is left the report is refused. Predictions whose
        sidecar names other weights than --run's are refused. The flow
        describes the data that were scored: the manifest the sidecar names
        (or --manifest), never the run's training manifest.

        A score that is not a number ('abc', '0,73') is an error naming the
        row; an empty score (with the reason in 'error') excludes the row.

        The positive class is the run's (--run or the sidecar), else the label
        the vocabulary knows as positive (1, true, positive, tumor, lesion,
        malignant, ...); labels that do not say which (e.g. hcc / fnh) are an
        error until --positive-label names it.

        Identifiers are pseudonymised unless --keep-identifiers.

        --acceptance FILE judges pre-specified criteria (value: the point
        estimate, lower_ci: the lower 95% CI bound must reach the bound) and
        gives, for each lower-CI criterion, the sample size that shows it with
        80% power at the observed value. A FAIL is reported, not an error.

        Examples:

            medrec report predictions.csv -o reports/test --run runs/ct1

            medrec report predictions.csv -o reports/test --run runs/ct1 --subgroup manufacturer --prevalence 0.05

            medrec report predictions.csv -o reports/explore --exploratory-threshold youden

            medrec report predictions.csv -o reports/lesions --run runs/ct1 --lesions ground_truth.csv

            medrec report new.csv -o reports/new --labels new_labels.csv --match-on study_uid

            medrec report predictions.csv -o reports/test --run runs/ct1 --acceptance acceptance.yaml

            medrec report predictions.csv -o reports/test --run runs/ct1 --dicom-out dicom/ --store dicomweb:https://pacs/dicom-web
        """
        from medrec.report.build import write_report
        from medrec.report.document import KEY_METRICS, METRICS, fmt_ci, fmt_mm, fmt_threshold, fmt_value

        if ci_method not in ("wilson", "clopper-pearson"):
            raise ConfigError(f"--ci-method {ci_method!r} is not known; use wilson or clopper-pearson")
        columns = [c.strip() for item in subgroup for c in item.split(",") if c.strip()]
        criteria = None
        if acceptance is not None:
            from medrec.config import load_acceptance  # deferred: medrec.config imports torch

            criteria = load_acceptance(acceptance)
        if store is not None and dicom_out is None:
            raise ConfigError("--store sends the DICOM Encapsulated PDF: give --dicom-out DIR too")
        with console.status("Analysing predictions and drawing the report"):
            result = write_report(
                predictions, out, run_dir=run, manifest=manifest, qc=qc,
                threshold=threshold, exploratory_threshold=exploratory_threshold, subgroups=columns,
                prevalence=prevalence, ci_method=ci_method, n_boot=bootstrap, seed=seed, compare=compare,
                keep_identifiers=keep_identifiers, title=title, lesions=lesions,
                lesion_tolerance_mm=lesion_tolerance, labels=labels,
                match_on=match_on.value if match_on is not None else None, label_column=label_column,
                prevalence_source="--prevalence" if prevalence is not None else None,
                acceptance=criteria, acceptance_source=f"--acceptance {acceptance.name}" if acceptance else "",
                positive_label=positive_label,
            )
        metrics = result.get("metrics") or {}
        rows = []
        for name in (*KEY_METRICS, *(m for m in METRICS if m not in KEY_METRICS)):
            metric = metrics.get(name)
            if metric:
                style = METRICS[name][1]
                rows.append((METRICS[name][0], fmt_value(metric.get("value"), style),
                             fmt_ci(metric.get("ci95"), style), metric.get("method", "")))
        source = result.get("threshold_source")
        label = f"EXPLORATORY: {source}" if result.get("threshold_kind") == "exploratory" else source
        print_summary(
            f"Validation report: {result.get('n_samples')} samples, {result.get('n_patients')} patients, "
            f"threshold {fmt_threshold(result.get('threshold'))} ({label})",
            rows, columns=("metric", "value", "95% CI", "CI method"),
        )
        reference = result.get("reference_standard")
        if reference:
            console.print(f"Reference standard: {reference.get('summary')}")
        loud = ("the manifest the predictions were scored from",)
        for index, warning in enumerate(result.get("warnings") or []):
            if warning.startswith("the predictions were made"):
                console.print(f"[yellow]note:[/] {warning}")
            elif warning.startswith(loud) or (index == 0 and result.get("held_out_check")):
                console.print(f"[bold red]warning:[/] {warning}")
        print_acceptance(result.get("acceptance"))
        lesion = result.get("lesion_level")
        if lesion:
            hit_rate = lesion.get("hit_rate") or {}
            cpm = fmt_value((lesion.get("froc") or {}).get("cpm"))
            console.print(
                f"Lesion level: top finding inside a lesion in {hit_rate.get('numerator')}/"
                f"{hit_rate.get('denominator')} true-positive studies; FROC CPM {cpm} over "
                f"{lesion.get('n_lesions')} lesions (tolerance {fmt_mm(lesion.get('tolerance_mm'))})"
            )
        console.print(f"Report: {Path(out) / 'report.html'} (also report.pdf, report.json)")
        if dicom_out is not None:
            from medrec.score.dicom_results import store_objects, write_report_dicom

            written = write_report_dicom(predictions, Path(out) / "report.pdf", dicom_out, title=title or
                                         "medrec validation report", manifest=manifest, run_dir=run)
            console.print(f"DICOM Encapsulated PDF: {written}")
            if store is not None:
                store_objects(store, [written])
                console.print(f"Stored on {store}")


def print_acceptance(acceptance: dict | None) -> None:
    """The acceptance criteria's verdicts on the console (a FAIL is reported, not an error)."""
    if not acceptance:
        return
    colour = {"PASS": "green", "FAIL": "bold red"}
    console.print(f"Acceptance criteria ({acceptance.get('source')}): "
                  f"[{colour.get(acceptance.get('overall'), 'yellow')}]{acceptance.get('overall')}[/]")
    for entry in acceptance.get("criteria") or []:
        size = entry.get("sample_size") or {}
        needed = (f"; {size['n_needed']} {size.get('unit')} needed for 80% power, {size.get('n_in_test_set')} here"
                  if size.get("n_needed") is not None else "")
        verdict = entry.get("verdict")
        console.print(f"  [{colour.get(verdict, 'yellow')}]{verdict}[/] {entry.get('metric')}: "
                      f"{'; '.join(entry.get('reasons') or [])}{needed}")
    if acceptance.get("caveat"):
        console.print(f"  Note: {acceptance['caveat']}")
