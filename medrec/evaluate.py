"""``medrec evaluate``: score a run's locked test split and write its report into ``RUN/evaluation/``.

The test split is the one the run recorded in ``RUN/splits.csv`` when it was trained; its samples
come from the run's own copy of the manifest (``RUN/manifest.csv``), so the evaluation always
reads exactly the studies that training set aside and never saw. The threshold is the run's,
chosen on validation and frozen; with ``tta`` it is the one chosen on validation scored with TTA
(``model.json`` ``threshold_tta``, :mod:`medrec.score.operating_point`), since flip averaging moves
the scores away from those the plain threshold was chosen on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from medrec.config import AcceptanceCriteria, StudyContext, format_validation_error, parse_acceptance, read_yaml
from medrec.errors import ConfigError, ManifestError, ModelError
from medrec.hashing import sha256_file, sha256_json
from medrec.manifest import read_manifest

EVALUATION_DIR = "evaluation"
# Where the finding maps of a finding-map run with a lesion table are written (inside EVALUATION_DIR).
EXPLAIN_DIR = "explain"
RUN_RECIPE = "workflow.yaml"  # the resolved recipe 'medrec run' writes into the run directory
RECIPE_PREVALENCE = "recipe evaluation.prevalence"
RECIPE_ACCEPTANCE = "recipe evaluation.acceptance"


@dataclass(frozen=True)
class RecipeEvaluation:
    """What a run's recipe says about its evaluation (all None for a run without a recipe).

    Attributes:
        prevalence: ``evaluation.prevalence``.
        acceptance: ``evaluation.acceptance``.
        context: ``context``.
        lesions: ``data.lesions`` (the lesion table), when the file is there.
    """

    prevalence: float | None = None
    acceptance: AcceptanceCriteria | None = None
    context: StudyContext | None = None
    lesions: Path | None = None


def recipe_evaluation(run_dir: str | Path) -> RecipeEvaluation:
    """The evaluation settings of the recipe a run was made from (``RUN/workflow.yaml``, written by ``medrec run``;
    for a fold ``RUN/folds/fold_i``, the run's).

    Only ``evaluation.prevalence``, ``evaluation.acceptance``, ``context`` and ``data.lesions`` are read; a run
    trained with ``medrec train`` has no such file and gets none.

    Raises:
        ConfigError: the file exists but its acceptance criteria, context or prevalence are invalid.
    """
    folder = Path(run_dir)
    # a cross-validation fold (RUN/folds/fold_i) shares the recipe of the run it belongs to
    candidates = [folder / RUN_RECIPE] + ([folder.parent.parent / RUN_RECIPE] if folder.parent.name == "folds" else [])
    path = next((candidate for candidate in candidates if candidate.is_file()), None)
    if path is None:
        return RecipeEvaluation()
    content = read_yaml(path, "run recipe not found")
    if not isinstance(content, dict):
        return RecipeEvaluation()
    evaluation = content.get("evaluation") if isinstance(content.get("evaluation"), dict) else {}
    prevalence = evaluation.get("prevalence")
    if prevalence is not None and not (isinstance(prevalence, int | float) and 0.0 < float(prevalence) < 1.0):
        raise ConfigError(f"{path}: evaluation.prevalence must lie strictly between 0 and 1, got {prevalence!r}")
    acceptance = parse_acceptance(evaluation.get("acceptance"), source=f"{path} evaluation.acceptance")
    try:
        context = StudyContext.model_validate(content.get("context") or {})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"{path} context", root=StudyContext,
                                                  what="study context")) from e
    data = content.get("data") if isinstance(content.get("data"), dict) else {}
    lesions = Path(str(data["lesions"])) if data.get("lesions") else None
    return RecipeEvaluation(float(prevalence) if prevalence is not None else None,
                            acceptance if acceptance.criteria() else None, context,
                            lesions if lesions is not None and lesions.is_file() else None)


def _sha256_file(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def evaluation_fingerprint(run_dir: str | Path, options: dict[str, Any]) -> str:
    """sha256 of what an evaluation consumes: weights, model.json, splits, manifest and options."""
    folder = Path(run_dir)
    parts = {name: _sha256_file(folder / name)
             for name in ("model.safetensors", "model.json", "splits.csv", "manifest.csv")}
    parts["options"] = options
    return sha256_json(parts)


def test_manifest(run_dir: str | Path) -> pd.DataFrame:
    """The manifest rows of the run's locked test split.

    Raises:
        ModelError: the run is incomplete or has no test split.
        ManifestError: the run's splits name samples its manifest does not have.
    """
    folder = Path(run_dir)
    for name in ("model.json", "model.safetensors", "splits.csv", "manifest.csv"):
        if not (folder / name).is_file():
            raise ModelError(f"{folder}: not a complete run directory ({name} missing); train it with 'medrec train'")
    splits = pd.read_csv(folder / "splits.csv", dtype=str, keep_default_na=False)
    if not {"sample_id", "split"} <= set(splits.columns):
        raise ManifestError(f"{folder / 'splits.csv'}: needs columns sample_id and split")
    test_ids = splits.loc[splits["split"] == "test", "sample_id"]
    if test_ids.empty:
        raise ModelError(
            f"{folder}: the run has no test split (k-fold runs or test: 0); score a held-out set with "
            "'medrec score RUN INPUT' and report it with 'medrec report'"
        )
    manifest = read_manifest(folder / "manifest.csv")
    missing = sorted(set(test_ids) - set(manifest["sample_id"]))
    if missing:
        raise ManifestError(
            f"{folder / 'splits.csv'}: {len(missing)} test sample(s) are not in the run's manifest "
            f"(e.g. {', '.join(missing[:3])}); the run directory is inconsistent"
        )
    return manifest[manifest["sample_id"].isin(set(test_ids))].reset_index(drop=True)


def evaluate_run(
    run_dir: str | Path,
    *,
    prevalence: float | None = None,
    subgroups: Sequence[str] = (),
    ci_method: str = "wilson",
    n_boot: int = 2000,
    seed: int = 0,
    batch_size: int = 8,
    workers: int = 0,
    tta: bool = False,
    device: str = "auto",
    keep_identifiers: bool = False,
    lesions: str | Path | None = None,
    prevalence_source: str | None = None,
    acceptance: AcceptanceCriteria | None = None,
    acceptance_source: str = RECIPE_ACCEPTANCE,
    context: StudyContext | None = None,
) -> dict[str, Any]:
    """Score the run's test split into ``RUN/evaluation/predictions.csv`` and write the report there.

    Scoring resumes: an interrupted evaluation continues where it stopped; earlier predictions
    made with other weights or another ``tta`` setting are replaced.

    Args:
        run_dir: a complete run directory.
        prevalence: clinical prevalence for adjusted PPV / NPV.
        subgroups: extra manifest columns for subgroup analysis.
        ci_method: ``wilson`` or ``clopper-pearson``.
        n_boot: patient-clustered bootstrap replicates.
        seed: bootstrap seed.
        batch_size: scoring batch size.
        workers: scoring loader processes.
        tta: test-time flip augmentation; the threshold is then the one chosen on validation scored
            with TTA (computed on first use and kept in ``model.json``).
        device: ``auto``, ``cpu`` or ``cuda``.
        keep_identifiers: write raw identifiers in the report (pseudonyms by default).
        lesions: a lesion table: finding-map runs get lesion-level results (hit rate, FROC, and the
            voxel-level average precision of their finding maps, written to ``evaluation/explain/``);
            ignored for other runs, which have no findings to compare.
        prevalence_source: where ``prevalence`` came from (default: the recipe's
            ``evaluation.prevalence``), printed beside every PPV / NPV at it.
        acceptance: pre-specified acceptance criteria (the recipe's ``evaluation.acceptance``),
            judged PASS / FAIL in the report.
        acceptance_source: where they came from, for the report.
        context: the recipe's ``context`` (intended use, target condition, ...), on page 1.

    Returns:
        The report dict (as in ``RUN/evaluation/report.json``).
    """
    from medrec.report.build import write_report
    from medrec.score import ScoreOptions, load_scoring_run, read_sidecar, score_manifest
    from medrec.score.operating_point import TTA_SOURCE_MARK

    folder = Path(run_dir)
    manifest = test_manifest(folder)
    if lesions is not None:  # before the test split is scored
        from medrec.report.lesions import require_lesion_table

        require_lesion_table(lesions)
    out_dir = folder / EVALUATION_DIR
    predictions = out_dir / "predictions.csv"
    run, model_hash = load_scoring_run(folder)
    # Resume an interrupted evaluation of the same model; start afresh when the weights or the
    # test-time augmentation changed (old rows would belong to another model or method).
    previous = read_sidecar(predictions)
    stale = previous is not None and (previous.get("model_sha256") != model_hash or bool(previous.get("tta")) != tta
                                      or (tta and TTA_SOURCE_MARK not in str(previous.get("threshold_source"))))
    from medrec.models.findings import is_finding_model

    lesion_table = lesions if lesions is not None and is_finding_model(run.model) else None
    # Finding maps on the scans' grids, for the voxel-level average precision of the lesion-level results.
    explain_dir = out_dir / EXPLAIN_DIR if lesion_table is not None else None
    stale = stale or (explain_dir is not None and not explain_dir.is_dir())  # scored before without the maps
    options = ScoreOptions(batch_size=batch_size, workers=workers, tta=tta, device=device, overwrite=stale,
                           explain_dir=explain_dir)
    score_manifest(run, manifest, predictions, options, model_sha256=model_hash,
                   input_description={"kind": "test split", "run_dir": str(folder.resolve()), "samples": len(manifest)})
    qc = folder / "qc.csv"
    return write_report(predictions, out_dir, run_dir=folder, manifest=folder / "manifest.csv",
                        qc=qc if qc.is_file() else None, subgroups=subgroups, prevalence=prevalence,
                        ci_method=ci_method, n_boot=n_boot, seed=seed, keep_identifiers=keep_identifiers,
                        title="Clinical validation report: locked test split", lesions=lesion_table,
                        prevalence_source=(prevalence_source or RECIPE_PREVALENCE) if prevalence is not None else None,
                        acceptance=acceptance, acceptance_source=acceptance_source, context=context)
