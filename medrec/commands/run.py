"""``medrec run``: run a whole recipe (index -> split -> train -> evaluate) into one run directory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer


def on_interrupt(params: Mapping[str, Any], args: Sequence[str]) -> tuple[str, list[str]]:
    """What an interrupted ``medrec run`` kept (the finished steps), and the command line that resumes it.

    Args:
        params: the parsed parameters of the command (``recipe``, ``out``).
        args: the command line after ``medrec``.

    Returns:
        The text saying what was kept, and the arguments that resume (the same command line).
    """
    # deferred: medrec.workflow imports torch, which the CLI does not load before a command needs it
    from medrec.rundir import CHECKPOINT_STEM
    from medrec.workflow import FOLDS_DIR, WorkflowState, load_workflow

    run_dir = Path(params["out"]) if params.get("out") else Path("runs") / load_workflow(params["recipe"]).name
    finished = list(WorkflowState(run_dir.absolute()).steps)
    kept = [f"the finished steps ({', '.join(finished)})"] if finished else []
    if "train" not in finished and (run_dir / f"{CHECKPOINT_STEM}.json").is_file():
        kept.append("the last completed training epoch")
    started_folds = [fold.name for fold in sorted((run_dir / FOLDS_DIR).glob("fold_*"))
                     if fold.is_dir() and f"{fold.name}/train" not in finished
                     and (fold / f"{CHECKPOINT_STEM}.json").is_file()]
    if started_folds:
        kept.append(f"the last completed training epoch of {', '.join(started_folds)}")
    if not kept:
        return f"no step had finished in {run_dir}", list(args)
    return f"{run_dir} keeps {' and '.join(kept)}; the same command skips what is finished", list(args)


def fold_rows(folds: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """The per-fold table of a cross-validation (``RUN/cv/folds.csv`` rows), then mean ± SD over the folds."""
    from medrec.workflow import FOLD_METRICS, fold_spread

    def number(value: Any) -> str:
        return "" if value is None or value != value else f"{float(value):.3f}"

    rows = [(str(row["fold"]), str(row["n_samples"]), "" if row.get("threshold") is None else f"{row['threshold']:.4f}",
             *(number(row.get(name)) for name in FOLD_METRICS)) for row in folds]
    spread = fold_spread(folds)
    rows.append(("mean ± SD", "", "", *(
        f"{spread[name]['mean']:.3f} ± {spread[name]['sd']:.3f}" if spread[name]["sd"] is not None
        else number(spread[name]["mean"]) for name in FOLD_METRICS)))
    return rows


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""

    @app.command("run")
    def run_command(
        recipe: str = typer.Argument(
            ..., metavar="RECIPE",
            help="A packaged recipe's name (see 'medrec recipes') or a recipe file; a file of that name wins."),
        out: Path | None = typer.Option(None, "-o", "--out", help="Run directory (default: runs/<recipe name>)."),
        scans: Path | None = typer.Option(None, "--scans", help="Override data.scans (the scan folder)."),
        labels: Path | None = typer.Option(
            None, "--labels", help="Override data.labels (the labels file; a 'mask' column gives lesion masks)."),
        lesions: Path | None = typer.Option(
            None, "--lesions",
            help="Override data.lesions (lesion table: study_uid, center_x/y/z LPS mm, diameter_mm)."),
        folds: int | None = typer.Option(
            None, "--folds", min=2,
            help="Cross-validate over K patient-level folds (sets split.folds): each fold trains a run in "
                 "RUN/folds/fold_i and scores its held-out fold; RUN/cv/ gets the pooled out-of-fold predictions, "
                 "folds.csv and one report."),
    ) -> None:
        """Run a recipe: index the scans, split by patient, train, and report on the locked test split.

        Every step writes into one run directory and records a fingerprint of its
        inputs; rerunning skips the steps whose inputs did not change, so a finished
        recipe reruns in seconds and trains nothing. An interrupted training resumes
        from its last completed epoch. Relative paths in a recipe file are taken
        from the file's folder; those of a packaged recipe run by name (such as
        data/ct) from the current folder; --scans / --labels / --lesions from the
        current folder. 'medrec recipes show NAME > my.yaml' gives a copy to edit.

        With --folds K (or split.folds in the recipe) training is a K-fold
        cross-validation by patient: each fold trains in RUN/folds/fold_i on the
        other folds (validation carved from them) and scores its held-out fold;
        RUN/cv/ gets the pooled out-of-fold predictions with a fold column,
        folds.csv (AUC, sensitivity, specificity per fold) and one report. A locked
        test split (split.test > 0) is made first and left untouched; split.test: 0
        cross-validates every labelled sample. Finished folds are skipped on rerun,
        an interrupted fold resumes.

        Examples:

            medrec synth data/ct-lesion --kind ct-lesion --patients 120 --format dicom --quirks

            medrec run ct_lesion_3d -o runs/ct-lesion   (reads data/ct-lesion from the current folder)

            medrec run brats_mgmt_nifti --scans /data/BraTS2021 --labels /data/labels.csv

            medrec run ct_lesion_annotated --scans data/ct --labels data/ct/labels.csv \\
                --lesions data/ct/ground_truth.csv

            medrec run my_recipe.yaml -o runs/mine

            medrec run my_recipe.yaml --folds 5 -o runs/mine-cv   (5-fold cross-validation, one pooled report)
        """
        from medrec.commands.evaluate import metric_rows
        from medrec.console import console, print_summary
        from medrec.workflow import load_workflow, run_workflow

        config = load_workflow(recipe, {"data.scans": scans, "data.labels": labels, "data.lesions": lesions,
                                        "split.folds": folds})
        run_dir = out or Path("runs") / config.name
        result = run_workflow(config, run_dir)
        print_summary(f"medrec run {config.name}",
                      [(s.step, s.status, f"{s.seconds:.1f} s" if s.seconds else "", s.detail) for s in result.steps],
                      ("step", "status", "time", "result"))
        if result.folds:
            print_summary("cross-validation: each held-out fold at its own threshold", fold_rows(result.folds),
                          ("fold", "samples", "threshold", "AUC", "sensitivity", "specificity"))
        if result.report:
            title = "pooled out-of-fold predictions" if result.folds else "locked test split"
            print_summary(title, metric_rows(result.report), ("metric", "value", "95% CI"))
            from medrec.commands.report import print_acceptance

            print_acceptance(result.report.get("acceptance"))
        console.print(f"report: {result.report_dir / 'report.html'}")
