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
    from medrec.workflow import WorkflowState, load_workflow

    run_dir = Path(params["out"]) if params.get("out") else Path("runs") / load_workflow(params["recipe"]).name
    finished = list(WorkflowState(run_dir.absolute()).steps)
    kept = [f"the finished steps ({', '.join(finished)})"] if finished else []
    if "train" not in finished and (run_dir / f"{CHECKPOINT_STEM}.json").is_file():
        kept.append("the last completed training epoch")
    if not kept:
        return f"no step had finished in {run_dir}", list(args)
    return f"{run_dir} keeps {' and '.join(kept)}; the same command skips what is finished", list(args)


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""

    @app.command("run")
    def run_command(
        recipe: str = typer.Argument(
            ..., metavar="RECIPE",
            help="A packaged recipe's name (see 'medrec recipes') or a recipe file; a file of that name wins."),
        out: Path | None = typer.Option(None, "-o", "--out", help="Run directory (default: runs/<recipe name>)."),
        scans: Path | None = typer.Option(None, "--scans", help="Override data.scans (the scan folder)."),
        labels: Path | None = typer.Option(None, "--labels", help="Override data.labels (the labels file; a 'mask' column gives lesion masks)."),
        lesions: Path | None = typer.Option(None, "--lesions", help="Override data.lesions (lesion table: study_uid, center_x/y/z LPS mm, diameter_mm)."),
    ) -> None:
        """Run a recipe: index the scans, split by patient, train, and report on the locked test split.

        Every step writes into one run directory and records a fingerprint of its inputs; rerunning skips the steps whose inputs did not change, so a finished recipe reruns in seconds and trains nothing. An interrupted training resumes from its last completed epoch. Relative paths in a recipe file are taken from the file's folder; those of a packaged recipe run by name (such as data/ct) from the current folder; --scans / --labels / --lesions from the current folder. 'medrec recipes show NAME > my.yaml' gives a copy to edit.

        Examples:

            medrec synth data/ct-lesion --kind ct-lesion --patients 120 --format dicom --quirks

            medrec run ct_lesion_3d -o runs/ct-lesion   (reads data/ct-lesion from the current folder)

            medrec run brats_mgmt_nifti --scans /data/BraTS2021 --labels /data/labels.csv

            medrec run ct_lesion_annotated --scans data/ct --labels data/ct/labels.csv --lesions data/ct/ground_truth.csv

            medrec run my_recipe.yaml -o runs/mine
        """
        from medrec.commands.evaluate import metric_rows
        from medrec.console import console, print_summary
        from medrec.workflow import load_workflow, run_workflow

        config = load_workflow(recipe, {"data.scans": scans, "data.labels": labels, "data.lesions": lesions})
        run_dir = out or Path("runs") / config.name
        result = run_workflow(config, run_dir)
        print_summary(f"medrec run {config.name}",
                      [(s.step, s.status, f"{s.seconds:.1f} s" if s.seconds else "", s.detail) for s in result.steps],
                      ("step", "status", "time", "result"))
        if result.report:
            print_summary("locked test split", metric_rows(result.report), ("metric", "value", "95% CI"))
        console.print(f"report: {result.run_dir / 'evaluation' / 'report.html'}")
