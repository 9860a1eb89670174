"""Running a recipe: index -> split -> train -> evaluate (or the cross-validation's fold and pooling
steps) into one run directory, skipping the steps whose inputs are unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrec.atomicio import write_text
from medrec.console import console
from medrec.errors import OutputError
from medrec.hashing import sha256_file
from medrec.workflow.folds import _cross_validate
from medrec.workflow.layout import CV_DIR, CV_REPORT_DIR, FOLDS_DIR
from medrec.workflow.pooling import _read_folds_table
from medrec.workflow.recipe import WorkflowConfig, dump_workflow
from medrec.workflow.state import WorkflowState
from medrec.workflow.steps import _index_step, _split_step, _train_step

STEPS: tuple[str, ...] = ("index", "split", "train", "evaluate")


@dataclass
class StepOutcome:
    """What happened to one step."""

    step: str
    status: str  # "ran" | "skipped (unchanged)" | "resumed"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class WorkflowResult:
    """What ``run_workflow`` did."""

    run_dir: Path
    steps: list[StepOutcome] = field(default_factory=list)
    report: dict[str, Any] | None = None
    report_dir: Path | None = None
    folds: list[dict[str, Any]] | None = None  # cross-validation: the rows of RUN/cv/folds.csv


def run_workflow(config: WorkflowConfig, run_dir: str | Path) -> WorkflowResult:
    """Run (or finish) a recipe into ``run_dir``; steps whose inputs are unchanged are skipped.

    With ``split.folds`` the train and evaluate steps are a cross-validation (:mod:`medrec.workflow` docstring).

    Args:
        config: the validated recipe.
        run_dir: the run directory (created).

    Returns:
        A :class:`WorkflowResult` with what each step did and the evaluation report (cross-validation:
        the pooled report and the per-fold table).

    Raises:
        OutputError: ``run_dir`` holds a finished training run (or fold run) made from a different recipe
            or data, or a cross-validation where one model is asked for (or the reverse).
        MedrecError: whatever a step raises (bad data, leakage, ...), with its one-line reason.
    """
    from medrec.rundir import has_started, is_complete

    folder = Path(run_dir).absolute()
    index_fingerprint, index_action = _index_step(config, folder)  # checks the inputs before anything is written
    cross_validated = config.split.folds is not None
    if cross_validated and has_started(folder):
        raise OutputError(f"{folder}: holds a single training run, not a cross-validation; choose another output "
                          "folder (-o) for the cross-validation")
    if not cross_validated and (folder / FOLDS_DIR).is_dir():
        raise OutputError(f"{folder}: holds a cross-validation ({FOLDS_DIR}/); run the recipe with --folds K (or "
                          "split.folds) to finish it, or choose another output folder (-o) to train one model")
    folder.mkdir(parents=True, exist_ok=True)
    state = WorkflowState(folder)
    result = WorkflowResult(run_dir=folder)

    def step(name: str, fingerprint: str, action: Callable[[], str], outputs_exist: bool) -> None:
        if outputs_exist and state.is_current(name, fingerprint):
            result.steps.append(StepOutcome(name, "skipped (unchanged)"))
            console.print(f"[dim]{name}: unchanged, skipped[/]")
            return
        console.rule(f"[bold]{name}")
        started = time.perf_counter()
        detail = action()
        seconds = time.perf_counter() - started
        state.record(name, fingerprint, seconds)
        result.steps.append(StepOutcome(name, "ran", seconds, detail))

    step("index", index_fingerprint, index_action, (folder / "index" / "manifest.csv").is_file())

    fingerprint, action = _split_step(config, folder)
    step("split", fingerprint, action, (folder / "split" / "splits.csv").is_file())

    if cross_validated:
        _cross_validate(config, folder, state, step)
        write_text(folder / "workflow.yaml", dump_workflow(config))
        result.report_dir = folder / CV_DIR / CV_REPORT_DIR
        result.report = json.loads((result.report_dir / "report.json").read_text(encoding="utf-8"))
        result.folds = _read_folds_table(folder)
        return result

    fingerprint, action, _ = _train_step(config, folder)
    complete = is_complete(folder)
    if complete and not state.is_current("train", fingerprint):
        raise OutputError(
            f"{folder}: holds a finished training run made from a different recipe or data; "
            "choose another output folder (-o) or delete this one"
        )
    # an unfinished run resumes; medrec.train itself refuses to resume it with a changed config
    step("train", fingerprint, action, complete)

    from medrec.evaluate import evaluate_run, evaluation_fingerprint

    options = config.evaluation
    lesions = config.data.lesions
    fingerprint = evaluation_fingerprint(folder, {**options.model_dump(mode="json"),
                                                  "lesions": sha256_file(Path(lesions)) if lesions else None,
                                                  "context": config.context.model_dump(mode="json")})

    def evaluate() -> str:
        report = evaluate_run(folder, prevalence=options.prevalence, subgroups=options.subgroups,
                              ci_method=options.ci_method, n_boot=options.bootstrap, seed=options.seed,
                              batch_size=options.batch_size, workers=options.workers, tta=options.tta,
                              lesions=lesions, prevalence_source="recipe evaluation.prevalence",
                              acceptance=options.acceptance, context=config.context)
        auc = report["metrics"].get("auc", {}).get("value")
        return f"test AUC {auc:.3f}" if auc is not None else "report written"

    step("evaluate", fingerprint, evaluate, (folder / "evaluation" / "report.json").is_file())
    write_text(folder / "workflow.yaml", dump_workflow(config))
    result.report_dir = folder / "evaluation"
    result.report = json.loads((result.report_dir / "report.json").read_text(encoding="utf-8"))
    return result
