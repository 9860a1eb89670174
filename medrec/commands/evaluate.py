"""``medrec evaluate``: score a run's locked test split and write its report into ``RUN/evaluation/``."""

from __future__ import annotations

import difflib
from pathlib import Path

import typer

from medrec.errors import ModelError


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to ``app``."""

    @app.command("evaluate")
    def evaluate_command(
        run_dir: Path = typer.Argument(..., metavar="RUN", help="A run directory written by 'medrec train'."),
        prevalence: float | None = typer.Option(
            None, "--prevalence", min=0.0, max=1.0, help="Clinical prevalence for adjusted PPV / NPV."),
        subgroup: list[str] = typer.Option(
            [], "--subgroup", help="Extra manifest column for subgroup analysis (repeatable)."),
        ci_method: str = typer.Option("wilson", "--ci-method", help="wilson or clopper-pearson (proportions)."),
        bootstrap: int = typer.Option(2000, "--bootstrap", min=200, help="Patient-clustered bootstrap replicates."),
        seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Scoring batch size."),
        workers: int = typer.Option(0, "--workers", min=0, help="Scoring loader processes."),
        tta: bool = typer.Option(False, "--tta", help="Test-time flip augmentation (adds an uncertainty column)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        keep_identifiers: bool = typer.Option(
            False, "--keep-identifiers", help="Write raw patient identifiers (default: pseudonyms)."),
        lesions: Path | None = typer.Option(
            None, "--lesions", help="Lesion table (study_uid or series_uid, center_x/y/z LPS mm, diameter_mm): a "
                                    "finding-map run gets lesion-level results (hit rate, FROC, voxel-level AP "
                                    "of its maps); default: the run's recipe's data.lesions."),
        acceptance: Path | None = typer.Option(
            None, "--acceptance", help="YAML file of pre-specified acceptance criteria (as a recipe's "
                                       "evaluation.acceptance); default: the run's recipe's."),
    ) -> None:
        """Score the run's locked test split and write report.html, report.pdf, report.json into RUN/evaluation/.

        The test samples are those the run set aside in RUN/splits.csv; the
        threshold is the one chosen on validation when the run was trained. With
        --tta it is the threshold chosen on the validation split scored with TTA
        (flip averaging moves the scores), computed on first use and kept in
        RUN/model.json as threshold_tta. Rerunning resumes an interrupted scoring.

        A run made by 'medrec run' keeps its recipe (RUN/workflow.yaml): its
        evaluation.prevalence (unless --prevalence), evaluation.acceptance (unless
        --acceptance) and context are used, so the report says what the validation
        is about and judges the pre-specified acceptance criteria (PASS / FAIL; the
        exit status does not change). Its data.lesions (or --lesions) gives a
        finding-map run lesion-level results; the finding maps they need are written
        to RUN/evaluation/explain/.

        Examples:

            medrec evaluate runs/ct-lesion

            medrec evaluate runs/ct-lesion --prevalence 0.05 --subgroup manufacturer
        """
        from medrec.commands.report import print_acceptance
        from medrec.config import load_acceptance
        from medrec.console import console, print_summary
        from medrec.errors import ConfigError
        from medrec.evaluate import RECIPE_ACCEPTANCE, RECIPE_PREVALENCE, evaluate_run, recipe_evaluation

        check_run_folder(run_dir)
        if ci_method not in ("wilson", "clopper-pearson"):
            raise ConfigError(f"--ci-method must be wilson or clopper-pearson, got {ci_method!r}")
        recipe = recipe_evaluation(run_dir)
        criteria, criteria_source = recipe.acceptance, RECIPE_ACCEPTANCE
        if acceptance is not None:
            criteria, criteria_source = load_acceptance(acceptance), f"--acceptance {acceptance.name}"
        stated = prevalence if prevalence is not None else recipe.prevalence
        report = evaluate_run(run_dir, prevalence=stated, subgroups=subgroup, ci_method=ci_method,
                              n_boot=bootstrap, seed=seed, batch_size=batch_size, workers=workers, tta=tta,
                              device=device, keep_identifiers=keep_identifiers,
                              lesions=lesions if lesions is not None else recipe.lesions,
                              prevalence_source="--prevalence" if prevalence is not None else RECIPE_PREVALENCE,
                              acceptance=criteria, acceptance_source=criteria_source, context=recipe.context)
        print_summary("medrec evaluate: locked test split", metric_rows(report), ("metric", "value", "95% CI"))
        print_acceptance(report.get("acceptance"))
        console.print(f"report: {Path(run_dir) / 'evaluation' / 'report.html'}")


def check_run_folder(run_dir: Path) -> None:
    """Refuse a RUN that does not exist or is not a folder, naming the path (and a near folder name).

    Raises:
        ModelError: ``run_dir`` is missing or is a file.
    """
    if run_dir.is_dir():
        return
    if run_dir.exists():
        raise ModelError(f"{run_dir}: RUN must be a run directory written by 'medrec train', got a file")
    parent = run_dir.parent
    try:
        siblings = sorted(entry.name for entry in parent.iterdir() if entry.is_dir())
    except OSError:  # a missing or unreadable parent: no suggestion
        siblings = []
    near = difflib.get_close_matches(run_dir.name, siblings, n=1)
    hint = f"did you mean {parent / near[0]}? " if near else ""
    raise ModelError(f"{run_dir}: run directory not found; {hint}train one with "
                     "'medrec train RECIPE -o RUN --manifest MANIFEST' or 'medrec run RECIPE -o RUN'")


def metric_rows(report: dict) -> list[tuple[str, str, str]]:
    """The headline metrics of a report dict as table rows (value and 95% CI)."""
    rows = [("samples / patients", f"{report.get('n_samples')} / {report.get('n_patients')}", "")]
    for name in ("auc", "sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy", "brier", "ece"):
        metric = report.get("metrics", {}).get(name)
        if not metric or metric.get("value") is None:
            continue
        ci = metric.get("ci95") or [None, None]
        ci_text = f"{ci[0]:.3f} - {ci[1]:.3f}" if None not in ci else ""
        rows.append((name, f"{metric['value']:.3f}", ci_text))
    threshold = report.get("threshold")
    if threshold is not None:
        rows.append(("threshold", f"{threshold:.4f}", str(report.get("threshold_source", ""))))
    return rows
