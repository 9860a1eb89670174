"""``medrec demo``: synthesise a CT cohort and run the default recipe on it, end to end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer


def on_interrupt(params: Mapping[str, Any], args: Sequence[str]) -> tuple[str, list[str]]:
    """What an interrupted ``medrec demo`` kept (the cohort, the recipe's finished steps) and how to go on.

    Args:
        params: the parsed parameters of the command (``out``).
        args: the command line after ``medrec``.

    Returns:
        The text saying what was kept, and the arguments that resume (the same command line).
    """
    # deferred: medrec.workflow imports torch, which the CLI does not load before a command needs it
    from medrec.workflow import WorkflowState

    out = Path(params["out"])
    kept = ["the cohort"] if (out / "cohort" / "labels.csv").is_file() else []
    finished = list(WorkflowState((out / "run").absolute()).steps)
    kept += [f"the finished steps ({', '.join(finished)})"] if finished else []
    if not kept:
        return f"nothing had finished in {out}", list(args)
    return f"{out} keeps {' and '.join(kept)}; the same command skips them", list(args)


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""
    from medrec.demo import DEMO_PATIENTS, DEMO_SEED

    @app.command("demo")
    def demo_command(
        out: Path = typer.Option(Path("medrec-demo"), "-o", "--out", help="Demo folder (cohort/ and run/)."),
        patients: int = typer.Option(DEMO_PATIENTS, "--patients", min=20, help="Patients in the synthetic cohort."),
        seed: int = typer.Option(DEMO_SEED, "--seed", help="Cohort seed."),
        publish: Path | None = typer.Option(
            None, "--publish",
            help="Also copy the report (HTML, PDF, JSON, figures, report-page1.png of its first page) to this folder."),
    ) -> None:
        """Run medrec end to end: synthesise a CT cohort at the default difficulty (DICOM, with real-export quirks, and
        its lesion table), then index, split, train a finding-map model (recipe ct_lesion_annotated) and evaluate it on
        CPU, and print the key metrics and where the report is.

        Rerunning reuses the cohort and skips every finished step.

        Examples:

            medrec demo

            medrec demo -o /tmp/demo --publish reports/demo
        """
        from medrec.commands.evaluate import metric_rows
        from medrec.console import console, print_summary
        from medrec.demo import run_demo

        result = run_demo(out, patients=patients, seed=seed, publish=publish)
        workflow = result.workflow
        print_summary("medrec demo", [(s.step, s.status, f"{s.seconds:.1f} s" if s.seconds else "", s.detail)
                                      for s in workflow.steps], ("step", "status", "time", "result"))
        print_summary("locked test split (never seen in training)", metric_rows(workflow.report),
                      ("metric", "value", "95% CI"))
        console.print(f"report: {result.report_dir / 'report.html'}")
        if result.published:
            console.print(f"published: {result.published}")
