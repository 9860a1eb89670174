"""``medrec demo``: synthesise a CT cohort and run the default recipe on it, end to end."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""
    from medrec.demo import DEMO_PATIENTS, DEMO_SEED

    @app.command("demo")
    def demo_command(
        out: Path = typer.Option(Path("medrec-demo"), "-o", "--out", help="Demo folder (cohort/ and run/)."),
        patients: int = typer.Option(DEMO_PATIENTS, "--patients", min=20, help="Patients in the synthetic cohort."),
        seed: int = typer.Option(DEMO_SEED, "--seed", help="Cohort seed."),
        publish: Path | None = typer.Option(
            None, "--publish", help="Also copy the report (HTML, PDF, JSON, figures) to this folder."),
    ) -> None:
        """Run medrec end to end: synthesise a CT cohort at the default difficulty (DICOM, with real-export quirks, and its lesion table), then index, split, train a finding-map model (recipe ct_lesion_annotated) and evaluate it on CPU, and print the key metrics and where the report is.

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
