"""Recipes: one YAML file runs index -> split -> train -> evaluate into one run directory.

A recipe is the one configuration format of ``medrec run`` and ``medrec train``: the training
sections of :class:`medrec.config.TrainConfig` (``split``, ``preprocessing``, ``model``,
``training``, ``threshold``, ``calibration``), ``data`` (the scan folder and labels file that
``run`` indexes, or the manifest and splits that ``train`` reads), ``index`` (series-selection
rules) and ``evaluation`` (report options). :func:`load_workflow` reads one for ``medrec run``,
:func:`load_train_recipe` for ``medrec train``, which ignores the sections that only ``run`` uses
and says which; both derive the training step's config with :func:`train_config_of`.

Recipes ship inside the package (``medrec/recipes/NAME.yaml``) and are reached by name
(``medrec run ct_lesion_annotated``, ``medrec recipes show NAME > my.yaml``); a path to a recipe
file wins over a name. Relative paths in a recipe file are taken from the file's folder; those of
a packaged recipe run by name from the current folder, as if it had been copied there.

Layout of the run directory::

    RUN/
      workflow.yaml      the resolved recipe that produced the outputs (written when all steps are done)
      workflow.json      per step: fingerprint of its inputs and when it finished
      index/             manifest.csv, qc.csv            (step 1, ``medrec index``)
      split/splits.csv                                   (step 2, ``medrec split``)
      config.yaml, model.safetensors, model.json, ...    (step 3, ``medrec train``)
      evaluation/        predictions.csv, report.html/.pdf/.json, figures/   (step 4, ``medrec evaluate``)

Every step records a fingerprint of what it consumed (file contents, settings). A rerun skips a
step whose outputs exist and whose fingerprint is unchanged, so rerunning a finished recipe
trains nothing and leaves the report as it was; a step whose inputs changed runs again, and so
do the steps after it. A training run whose recipe changed after it finished is never
overwritten: that is an error asking for a new output folder.

Cross-validation (``split.folds: K``, or ``medrec run RECIPE --folds K``) replaces the train and
evaluate steps. The split step makes K patient-level folds, after carving a locked test split
when ``split.test > 0`` (cross-validation never touches it; ``split.test: 0`` is pure
cross-validation). Then, per fold ``i``, as scikit-learn's ``cross_val_predict`` would: a full run
in ``RUN/folds/fold_i/`` trains on the other folds, tunes (early stopping, threshold, calibration)
on a validation split carved from them (``split.val`` of their patients,
:func:`medrec.split.held_out_fold_splits`, written to ``RUN/folds/fold_i.splits.csv``), and scores
fold ``i``, which it never saw, as its ``test`` split into ``fold_i/evaluation/predictions.csv``
(``medrec evaluate RUN/folds/fold_i`` adds that fold's own report). Unlike nnU-Net, whose
validation fold is the held-out fold, no number here was tuned on the data it describes. Then::

    RUN/cv/
      predictions.csv    every labelled sample outside the locked test split exactly once, with its fold
      folds.csv          per fold: samples, threshold, AUC, sensitivity, specificity (at the fold's threshold)
      report/            report.html/.pdf/.json of the pooled predictions, plus folds.csv and folds.json
                         (per fold, mean and SD)

The pooled report's threshold is the median of the folds' thresholds, each chosen on its fold's
validation split; pooled AUC ranks scores of K models together (as ``cross_val_predict`` does),
the per-fold table gives their spread. Each fold is two steps (``fold_i/train``, ``fold_i/score``)
with their own fingerprints: a finished fold is skipped, an interrupted one resumes from its last
epoch, and a fold whose weights were deleted trains again from the start.
"""

from __future__ import annotations

from medrec.workflow.layout import (
    CV_DIR,
    CV_FOLDS_CSV,
    CV_FOLDS_JSON,
    CV_PREDICTIONS_CSV,
    CV_REPORT_DIR,
    FOLDS_DIR,
)
from medrec.workflow.loading import TrainRecipe, load_train_recipe, load_workflow, read_recipe
from medrec.workflow.packaged import (
    RECIPE_SUFFIXES,
    PackagedRecipe,
    find_recipe,
    packaged_recipe,
    packaged_recipes,
    recipes_folder,
)
from medrec.workflow.pooling import CV_ACCEPTANCE_CAVEAT, FOLD_METRICS, fold_spread
from medrec.workflow.recipe import (
    INDEX_DATA_KEYS,
    RECIPE_NAME,
    TRAIN_DATA_KEYS,
    EvaluationStep,
    IndexStep,
    WorkflowConfig,
    WorkflowData,
    dump_workflow,
    train_config_of,
)
from medrec.workflow.runner import STEPS, StepOutcome, WorkflowResult, run_workflow
from medrec.workflow.state import STATE_FILE, WorkflowState, folder_fingerprint

__all__ = [
    "CV_ACCEPTANCE_CAVEAT",
    "CV_DIR",
    "CV_FOLDS_CSV",
    "CV_FOLDS_JSON",
    "CV_PREDICTIONS_CSV",
    "CV_REPORT_DIR",
    "FOLDS_DIR",
    "FOLD_METRICS",
    "INDEX_DATA_KEYS",
    "RECIPE_NAME",
    "RECIPE_SUFFIXES",
    "STATE_FILE",
    "STEPS",
    "TRAIN_DATA_KEYS",
    "EvaluationStep",
    "IndexStep",
    "PackagedRecipe",
    "StepOutcome",
    "TrainRecipe",
    "WorkflowConfig",
    "WorkflowData",
    "WorkflowResult",
    "WorkflowState",
    "dump_workflow",
    "find_recipe",
    "fold_spread",
    "folder_fingerprint",
    "load_train_recipe",
    "load_workflow",
    "packaged_recipe",
    "packaged_recipes",
    "read_recipe",
    "recipes_folder",
    "run_workflow",
    "train_config_of",
]
