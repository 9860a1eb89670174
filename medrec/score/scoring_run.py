"""A run directory as scoring uses it: loading it, and the operating threshold, preprocessing chain,
voxel size and series-selection rules it carries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from medrec.device import resolve_device
from medrec.errors import ModelError
from medrec.hashing import sha256_file
from medrec.rundir import Run, ScoringRun, load_run
from medrec.runinfo import MODEL_JSON, MODEL_WEIGHTS, RunInfo
from medrec.score.operating_point import needs_own_threshold, tta_threshold
from medrec.score.operating_point import source_text as tta_source_text
from medrec.score.options import ScoreOptions

if TYPE_CHECKING:
    import torch
    from monai.transforms import Compose

    from medrec.index import SelectionRules


def _run_threshold(run: ScoringRun, options: ScoreOptions, device: torch.device | None = None,
                   model_sha256: str | None = None) -> tuple[float | None, str]:
    """The operating threshold and where it came from (None for multi-class runs).

    With ``options.tta`` a threshold the run chose on validation is replaced by the one chosen on
    validation scored with TTA (:func:`medrec.score.operating_point.tta_threshold`): a threshold
    belongs to the scores it was chosen on.
    """
    if len(run.classes) != 2:
        return None, "argmax (multi-class)"
    if options.threshold is not None:
        return float(options.threshold), "command line (--threshold)"
    if options.tta and needs_own_threshold(run):
        entry = tta_threshold(run, device if device is not None else resolve_device(options.device),
                              batch_size=options.batch_size, workers=options.workers, amp=options.amp,
                              model_sha256=model_sha256)
        return float(entry.value), tta_source_text(entry)
    value = run.threshold
    if value is None:
        return 0.5, "default 0.5 (the run records no operating threshold)"
    source = getattr(run, "threshold_source", None)
    info = getattr(run, "info", None)
    entry = info.threshold if isinstance(info, RunInfo) else None
    if source is None and entry is not None and entry.method:
        chosen_on = f", chosen on {entry.chosen_on}" if entry.chosen_on else ""
        source = f"{entry.method}{chosen_on}"
    return float(value), f"run: {source or MODEL_JSON}"


def _voxel_mm(run: ScoringRun) -> float | None:
    """The largest voxel edge (mm) of the run's preprocessed grid: one voxel of a finding map's location."""
    spacing = getattr(getattr(run, "plan", None), "spacing", None)
    return round(float(max(spacing)), 4) if spacing else None


def scoring_transforms(run: ScoringRun, keep_geometry: bool = False) -> Compose:
    """The run's deterministic preprocessing chain (training's, without augmentation).

    Args:
        run: the loaded run.
        keep_geometry: end with a MetaTensor that keeps its affine (needed to map Grad-CAM back
            onto the input grid); the voxel values are the same either way.
    """
    if keep_geometry and getattr(run, "plan", None) is not None:
        from medrec.transforms import build_transforms

        return build_transforms(run.plan, keys=("image",), track_meta=True)[0]
    return run.deterministic_transforms()


def selection_rules_of(run_dir: str | Path) -> SelectionRules | None:
    """The series-selection rules the run's scans were indexed with, or None for ``SelectionRules`` defaults.

    ``medrec train`` takes a manifest and records no indexing rules; ``medrec run`` indexes the
    scans itself and keeps its resolved recipe, ``index.rules`` included, in ``RUN/workflow.yaml``
    (a cross-validation fold, ``RUN/folds/fold_i``, in its recipe's folder two levels up).

    Raises:
        ModelError: the recorded rules are not valid :class:`~medrec.index.SelectionRules`.
    """
    folder = Path(run_dir)
    # the file and folder names of medrec.workflow, which lies above scoring in the pipeline
    candidates = [folder / "workflow.yaml"]
    if folder.parent.name == "folds":
        candidates.append(folder.parent.parent / "workflow.yaml")
    recipe = next((path for path in candidates if path.is_file()), None)
    if recipe is None:
        return None
    try:
        content = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ModelError(f"{recipe}: cannot be read ({e}); the series-selection rules of the run are unknown: "
                         "repair or remove the file (without it the default rules apply)") from e
    index = content.get("index") if isinstance(content, dict) else None
    rules = index.get("rules") if isinstance(index, dict) else None
    if rules is None:
        return None
    from medrec.index import SelectionRules

    try:
        return SelectionRules.model_validate(rules)
    except ValueError as e:
        raise ModelError(f"{recipe}: index.rules are not valid series-selection rules ({e})") from e


def load_scoring_run(run_dir: str | Path) -> tuple[Run, str]:
    """Load a run directory for scoring; returns ``(run, sha256 of model.safetensors)``.

    Raises:
        ModelError: RUN is a file (e.g. a pickled ``.pt`` checkpoint) or not a complete run directory.
    """
    folder = Path(run_dir)
    if folder.is_file():
        raise ModelError(
            f"{folder}: RUN must be a run directory (model.safetensors + model.json from 'medrec train'), got a "
            f"file; pickled checkpoints (.pt, .pth, .pkl) are never loaded"
        )
    if not folder.is_dir():
        raise ModelError(
            f"{folder}: run directory not found; train one with 'medrec train RECIPE -o RUN --manifest MANIFEST'")
    run = load_run(folder)
    weights = folder / MODEL_WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{folder}: has no {MODEL_WEIGHTS}; only safetensors run directories are scored")
    return run, sha256_file(weights)
