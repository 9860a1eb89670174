"""``medrec demo``: the embedded default, end to end on a synthetic CT cohort.

It writes a synthetic abdominal CT cohort at the generator's default difficulty (18-40 mm liver
lesions of 10-60 HU; DICOM with the quirks of real exports: localizers, opaque folder names,
shuffled slices, two series in one folder), runs the packaged default recipe
``ct_lesion_annotated.yaml`` on it with the cohort's lesion table (index -> split -> train ->
evaluate, CPU) and can publish the resulting report (HTML, PDF, JSON, figures, and a picture of
its first page) to a folder such as ``reports/demo`` (``make publish-demo``; ``make demo`` writes
only into its own folder).
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from medrec.atomicio import write_bytes
from medrec.console import console

DEFAULT_RECIPE = "ct_lesion_annotated.yaml"
DEMO_PATIENTS = 200
DEMO_SEED = 7
# The generator's default difficulty: a whole-volume CNN stays at chance on it, a finding-map
# network trained on the lesion table learns it (datasets/synthetic_phantoms.md). The demo trains
# for fewer steps than the recipe so that it ends within minutes on 2 CPU cores.
DEMO_COHORT: dict[str, object] = {}
DEMO_OVERRIDES: dict[str, object] = {"training.epochs": 12}
# The picture of the report's first page that the README shows, and its width in pixels.
PAGE1_PNG = "report-page1.png"
PAGE1_WIDTH_PX = 538


@dataclass
class DemoResult:
    """Where the demo wrote its outputs."""

    cohort_dir: Path
    run_dir: Path
    report_dir: Path
    published: Path | None
    workflow: object


def recipe_path(name: str = DEFAULT_RECIPE) -> Path:
    """Path of a recipe that ships inside the package (``medrec/recipes/``)."""
    return Path(str(resources.files("medrec") / "recipes" / name))


def render_first_page(pdf: Path, destination: Path, width_px: int = PAGE1_WIDTH_PX) -> bool:
    """Write the first page of ``pdf`` as a PNG ``width_px`` wide to ``destination`` (atomically).

    Returns:
        False when pypdfium2 (an optional dependency, in the ``test`` extra) is not installed.
    """
    try:
        import pypdfium2 as pdfium  # optional: only publishing the demo report needs it
    except ImportError:
        return False
    document = pdfium.PdfDocument(str(pdf))
    try:
        page = document[0]
        image = page.render(scale=width_px / page.get_width()).to_pil().convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    finally:
        document.close()
    write_bytes(destination, buffer.getvalue())
    return True


def publish_report(report_dir: Path, destination: Path) -> Path:
    """Copy report.html, report.pdf, report.json and figures/*.png to ``destination`` (atomic per file),
    and draw the first page of the PDF into ``report-page1.png``."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("report.html", "report.pdf", "report.json"):
        write_bytes(destination / name, (report_dir / name).read_bytes())
    figures = destination / "figures"
    if figures.is_dir():
        shutil.rmtree(figures)
    for png in sorted((report_dir / "figures").glob("*.png")):
        write_bytes(figures / png.name, png.read_bytes())
    if not render_first_page(report_dir / "report.pdf", destination / PAGE1_PNG):
        console.print(f"[yellow]warning:[/] {destination / PAGE1_PNG} not refreshed: it needs pypdfium2 "
                      "(pip install pypdfium2, or make install)")
    return destination


def run_demo(out_dir: str | Path, patients: int = DEMO_PATIENTS, seed: int = DEMO_SEED,
             publish: str | Path | None = None) -> DemoResult:
    """Synthesise the demo cohort (once), run the default recipe on it, optionally publish the report.

    Args:
        out_dir: the demo folder: ``cohort/`` (scans) and ``run/`` (the run directory).
        patients: patients in the synthetic cohort.
        seed: cohort seed.
        publish: copy the report there as well (``make publish-demo`` uses ``reports/demo``).

    Returns:
        A :class:`DemoResult`.
    """
    from medrec.synth import generate_cohort
    from medrec.workflow import load_workflow, run_workflow

    folder = Path(out_dir).absolute()
    cohort_dir = folder / "cohort"
    if not (cohort_dir / "labels.csv").is_file():
        console.rule("[bold]synth")
        generate_cohort(cohort_dir, kind="ct-lesion", patients=patients, fmt="dicom", seed=seed, quirks=True,
                        **DEMO_COHORT)
    else:
        console.print(f"[dim]synth: {cohort_dir} already holds the cohort, skipped[/]")
    config = load_workflow(recipe_path(), {"data.scans": cohort_dir, "data.labels": cohort_dir / "labels.csv",
                                           "data.lesions": cohort_dir / "ground_truth.csv", **DEMO_OVERRIDES})
    run_dir = folder / "run"
    workflow = run_workflow(config, run_dir)
    report_dir = run_dir / "evaluation"
    published = publish_report(report_dir, Path(publish).absolute()) if publish else None
    return DemoResult(cohort_dir=cohort_dir, run_dir=run_dir, report_dir=report_dir, published=published,
                      workflow=workflow)
