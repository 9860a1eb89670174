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

import difflib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medrec.atomicio import write_csv, write_text
from medrec.config import (
    AcceptanceCriteria,
    DataConfig,
    ResolvedPath,
    StudyContext,
    TrainConfig,
    TrainingSections,
    format_validation_error,
    parse_config,
    read_yaml,
)
from medrec.console import console
from medrec.errors import ConfigError, OutputError
from medrec.hashing import sha256_file, sha256_json
from medrec.index.selection import SelectionRules

STEPS: tuple[str, ...] = ("index", "split", "train", "evaluate")
STATE_FILE = "workflow.json"
FOLDS_DIR = "folds"  # RUN/folds/fold_i/: one full run per cross-validation fold
CV_DIR = "cv"  # RUN/cv/: pooled out-of-fold predictions, per-fold table, report
CV_ACCEPTANCE_CAVEAT = ("judged on the pooled out-of-fold predictions of {folds} models (cross-validation, a "
                        "development estimate); criteria written for a locked test split are judged there")
CV_REPORT_DIR = "report"
CV_PREDICTIONS_CSV = "predictions.csv"
CV_FOLDS_CSV = "folds.csv"
CV_FOLDS_JSON = "folds.json"
FOLD_METRICS: tuple[str, ...] = ("auc", "sensitivity", "specificity")
RECIPE_SUFFIXES: tuple[str, ...] = (".yaml", ".yml")
RECIPE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# The data keys of the scans that 'medrec run' indexes, and of the files that 'medrec train' reads.
INDEX_DATA_KEYS: tuple[str, ...] = ("scans", "labels", "match_on")
TRAIN_DATA_KEYS: tuple[str, ...] = ("manifest", "splits")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkflowData(DataConfig):
    """Where the data are: the scans that ``medrec run`` indexes, or the manifest that ``medrec train`` reads.

    The keys of :class:`~medrec.config.DataConfig` (``manifest`` optional here) plus the scan
    folder and labels file of the index step.

    Attributes:
        scans: ``medrec run``: the scan folder (any nesting of DICOM and NIfTI files).
        labels: ``medrec run``: CSV/TSV with a label column and a patient_id / study_uid / accession /
            path column.
        match_on: ``medrec run``: the labels key column (default: the one that matches most samples).
        manifest: ``medrec train``: ``manifest.csv`` from ``medrec index`` (or ``--manifest``).
        splits: ``medrec train``: ``splits.csv`` from ``medrec split`` (or ``--splits``); without
            it ``train`` splits by the ``split`` section.
        label_column: the label column of the labels file (``run``), of the manifest (``train``;
            ``medrec index`` writes labels to ``label``).
        classes: class names in model-output order (default: sorted unique labels).
        positive_class: binary only: the class whose probability is the score.
        lesions: lesion table for finding-map models.
        masks: CSV with a ``mask`` column (NIfTI lesion masks); default: the labels file when it
            has a ``mask`` column.
    """

    scans: ResolvedPath | None = None
    labels: ResolvedPath | None = None
    match_on: Literal["patient_id", "study_uid", "accession", "path"] | None = None
    manifest: ResolvedPath | None = None  # type: ignore[assignment]  # required by medrec train only


class IndexStep(_Section):
    """How the scan folder is indexed.

    Attributes:
        rules: geometry checks and series selection (see ``medrec index --help``).
        workers: header-reading processes (default: automatic).
    """

    rules: SelectionRules = Field(default_factory=SelectionRules)
    workers: int | None = Field(None, ge=1)


class EvaluationStep(_Section):
    """How the locked test split is scored and reported.

    Attributes:
        prevalence: clinical prevalence for adjusted PPV / NPV (test sets are often enriched).
        subgroups: extra manifest columns to break the metrics down by (manufacturer, sex and
            age band are always included).
        ci_method: ``wilson`` or ``clopper-pearson`` for proportions.
        bootstrap: patient-clustered bootstrap replicates.
        seed: bootstrap seed.
        batch_size: scoring batch size.
        workers: scoring loader processes.
        tta: test-time flip augmentation (adds an ``uncertainty`` column).
        acceptance: pre-specified acceptance criteria, judged PASS / FAIL in the report, e.g.
            ``auc: {lower_ci: 0.8}`` (:class:`~medrec.config.AcceptanceCriteria`).
    """

    prevalence: float | None = Field(None, gt=0.0, lt=1.0)
    subgroups: tuple[str, ...] = ()
    ci_method: Literal["wilson", "clopper-pearson"] = "wilson"
    bootstrap: int = Field(2000, ge=200)
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    workers: int = Field(0, ge=0)
    tta: bool = False
    acceptance: AcceptanceCriteria = Field(default_factory=AcceptanceCriteria)


class WorkflowConfig(TrainingSections):
    """A complete recipe: index -> split -> train -> evaluate.

    Attributes:
        name: a short name (the default output folder is ``runs/<name>``; default: the file's name).
        description: one line for people.
        data: the scans and labels.
        index: indexing rules.
        evaluation: the test-split report.
        context: what the validation is about (intended use, target condition, reference standard,
            data source, sites, dates), printed on the report's first page.
        split, preprocessing, model, training, threshold, calibration: as in ``medrec train``
            (:class:`~medrec.config.TrainingSections`).
    """

    name: Annotated[str, Field(min_length=1, pattern=RECIPE_NAME)] | None = None
    description: str = ""
    data: WorkflowData
    index: IndexStep = Field(default_factory=IndexStep)
    evaluation: EvaluationStep = Field(default_factory=EvaluationStep)
    context: StudyContext = Field(default_factory=StudyContext)


@dataclass(frozen=True)
class PackagedRecipe:
    """A recipe that ships inside the package.

    Attributes:
        name: what ``medrec run NAME`` and ``medrec recipes show NAME`` take (the file name without ``.yaml``).
        description: the recipe's ``description`` line.
        path: the file, ``medrec/recipes/NAME.yaml``.
    """

    name: str
    description: str
    path: Path


def recipes_folder() -> Path:
    """The folder of the packaged recipes (``medrec/recipes/``, package data of the installed medrec)."""
    return Path(str(resources.files("medrec") / "recipes"))


def packaged_recipes() -> list[PackagedRecipe]:
    """Every packaged recipe, sorted by name."""
    recipes = []
    for path in sorted(recipes_folder().glob("*.yaml")):
        content = read_yaml(path, "packaged recipe not found")
        description = content.get("description", "") if isinstance(content, dict) else ""
        recipes.append(PackagedRecipe(path.stem, " ".join(str(description or "").split()), path))
    return recipes


def _recipe_stem(name: str) -> str:
    for suffix in RECIPE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _nearest_hint(stem: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(stem, list(names), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def packaged_recipe(name: str) -> PackagedRecipe:
    """The packaged recipe called ``name`` (``ct_lesion_3d`` or ``ct_lesion_3d.yaml``).

    Raises:
        ConfigError: no packaged recipe has that name; the message suggests the nearest and lists them all.
    """
    recipes = {recipe.name: recipe for recipe in packaged_recipes()}
    stem = _recipe_stem(name.strip())
    if stem in recipes:
        return recipes[stem]
    raise ConfigError(f"{name}: no packaged recipe of that name{_nearest_hint(stem, list(recipes))}; "
                      f"packaged recipes: {', '.join(recipes)} (see 'medrec recipes')")


def find_recipe(recipe: str | Path) -> tuple[Path, Path]:
    """The recipe file that ``recipe`` names and the folder its relative paths are taken from.

    An existing file wins: its paths are relative to its own folder. Otherwise a bare name
    (``ct_lesion_annotated``, with or without ``.yaml``) is a packaged recipe, whose paths are
    relative to the current folder: a packaged recipe run by name reads ``data/ct`` from where the
    user is, as does the copy that ``medrec recipes show NAME > my.yaml`` puts there.

    Raises:
        ConfigError: neither a file nor a packaged recipe; the message names the nearest packaged recipe.
    """
    path = Path(recipe)
    if path.is_file():
        return path, path.absolute().parent
    recipes = {packaged.name: packaged for packaged in packaged_recipes()}
    stem = _recipe_stem(path.name)
    bare_name = path.parent == Path(".")
    if bare_name and stem in recipes:
        return recipes[stem].path, Path.cwd()
    if stem in recipes:
        # a path to a copy that is not there, such as workflows/NAME.yaml of older documentation
        hint = (f"; the packaged recipe {stem!r} has this name: 'medrec run {stem}', or "
                f"'medrec recipes show {stem} > {path.name}' for a copy to edit")
    else:
        hint = _nearest_hint(stem, list(recipes))
    what = "no such recipe file or packaged recipe" if bare_name else "recipe not found"
    raise ConfigError(f"{recipe}: {what}{hint}; packaged recipes: {', '.join(recipes)} (see 'medrec recipes')")


def read_recipe(recipe: str | Path, overrides: dict[str, Any] | None = None) -> tuple[WorkflowConfig, Path]:
    """Read and validate a recipe, given as a file or as the name of a packaged recipe.

    What each command needs of it (``data.scans`` for ``run``, ``data.manifest`` for ``train``)
    is checked by :func:`load_workflow` and :func:`load_train_recipe`.

    Args:
        recipe: a recipe file, or a packaged recipe's name (see :func:`find_recipe`; a file wins).
            Relative paths are taken from the file's folder, or from the current folder for a
            packaged recipe named by name.
        overrides: dotted keys to set before validation, e.g. ``{"data.scans": "/x"}``
            (relative override paths are taken from the current folder).

    Returns:
        The recipe and the file it was read from.

    Raises:
        ConfigError: unknown recipe, bad YAML, unknown keys or bad values (each named by dotted key).
    """
    path, base = find_recipe(recipe)
    source = str(recipe)
    data = read_yaml(path, "recipe not found (see 'medrec recipes')")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe is a mapping of sections (name, data, model, training, ...)")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(value.absolute())
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: '{part}' must be a mapping to set {dotted}")
        node[last] = value
    try:
        return WorkflowConfig.model_validate(data, context={"base_dir": str(base)}), path
    except ValidationError as e:
        message = format_validation_error(e, source, root=WorkflowConfig)
        raise ConfigError(message.replace("training config", "recipe")) from e


def load_workflow(recipe: str | Path, overrides: dict[str, Any] | None = None) -> WorkflowConfig:
    """A recipe for ``medrec run``: :func:`read_recipe`, which must name the scans and no manifest.

    A recipe without ``name`` takes its file's name.

    Raises:
        ConfigError: as :func:`read_recipe`; no ``data.scans``; ``data.manifest`` / ``data.splits``
            (``medrec train``'s keys: ``run`` indexes and splits the scans itself).
    """
    config, path = read_recipe(recipe, overrides)
    given = [f"data.{key}" for key in TRAIN_DATA_KEYS if getattr(config.data, key) is not None]
    if given:
        raise ConfigError(
            f"{recipe}: {' and '.join(given)} {'are' if len(given) > 1 else 'is'} for 'medrec train': 'medrec run' "
            f"indexes data.scans and splits by the split section itself; remove {' / '.join(given)}, or train on "
            f"{'them' if len(given) > 1 else 'it'} with 'medrec train {recipe} -o RUN'")
    if config.data.scans is None:
        raise ConfigError(f"{recipe}: invalid recipe: 'data.scans' is required: the scan folder that 'medrec run' "
                          "indexes (or --scans DIR)")
    if config.name is None:
        stem = _recipe_stem(path.name)
        if not re.match(RECIPE_NAME, stem):
            raise ConfigError(f"{recipe}: invalid recipe: 'name' is required (the file's name {stem!r} cannot be one: "
                              "letters, digits, '_', '.', '-')")
        config = config.model_copy(update={"name": stem})
    return config


@dataclass(frozen=True)
class TrainRecipe:
    """What ``medrec train`` takes from a recipe.

    Attributes:
        config: the training step's config.
        used: the recipe's keys and sections that training uses.
        ignored: those it leaves to ``medrec run`` (only those the file sets).
    """

    config: TrainConfig
    used: tuple[str, ...]
    ignored: tuple[str, ...]

    def describe(self) -> str:
        """One line: which keys and sections of the recipe training uses and which it ignores."""
        text = f"uses {', '.join(self.used)}"
        if self.ignored:
            text += f"; ignores {', '.join(self.ignored)} (used by 'medrec run' only)"
        return text


def load_train_recipe(recipe: str | Path, manifest: Path | None = None, splits: Path | None = None) -> TrainRecipe:
    """A recipe (or a training config: the same format) for ``medrec train``.

    Training reads ``data.manifest`` (``manifest``, from the current folder, wins) and
    ``data.splits`` (likewise ``splits``; without one the ``split`` section makes the splits), the
    label keys of ``data``, and the ``split`` (its ``fold`` and ``check_pixels`` also with a splits
    file), ``preprocessing``, ``model``, ``training``, ``threshold`` and ``calibration`` sections.
    ``name``, ``description``, ``data.scans`` / ``labels`` / ``match_on``, ``index`` and
    ``evaluation`` are validated but not used (the labels file still gives the lesion masks when it
    has a ``mask`` column and ``data.masks`` is not set, as in ``medrec run``).

    Raises:
        ConfigError: as :func:`read_recipe`; no manifest (neither ``data.manifest`` nor ``manifest``).
    """
    config, _ = read_recipe(recipe, {"data.manifest": manifest, "data.splits": splits})
    data = config.data
    if data.manifest is None:
        raise ConfigError(
            f"{recipe}: no manifest to train on: pass --manifest INDEX/manifest.csv (from 'medrec index') or set "
            f"data.manifest in the recipe; 'medrec train' does not index data.scans: to index, split, train and "
            f"evaluate in one go run 'medrec run {recipe}'")
    train_config = train_config_of(config, Path(data.manifest), Path(data.splits) if data.splits else None,
                                   source=f"{recipe} (medrec train)")
    masks_from_labels = data.masks is None and train_config.data.masks is not None
    used = ["data.manifest", "data.splits" if data.splits else "split (to make the splits)"]
    used += [f"data.{key}" for key in ("lesions", "masks", "classes", "positive_class")
             if getattr(data, key) is not None]
    if masks_from_labels:
        used.append("data.labels (its mask column)")
    if data.splits is not None and "split" in config.model_fields_set:
        used.append("split (fold, check_pixels)")
    used += ["preprocessing", "model", "training", "threshold", "calibration"]
    ignored = [name for name in ("name", "description") if name in config.model_fields_set]
    ignored += [f"data.{key}" for key in INDEX_DATA_KEYS
                if key in data.model_fields_set and not (key == "labels" and masks_from_labels)]
    ignored += [name for name in ("index", "evaluation") if name in config.model_fields_set]
    return TrainRecipe(train_config, tuple(used), tuple(ignored))


def dump_workflow(config: WorkflowConfig) -> str:
    """The resolved recipe as YAML (absolute paths, every default filled in)."""
    dumped = config.model_dump(mode="json", exclude={"data": set(TRAIN_DATA_KEYS)})
    dumped["data"] = {**{key: dumped["data"].pop(key) for key in INDEX_DATA_KEYS}, **dumped["data"]}
    leading = {key: dumped.pop(key) for key in ("name", "description", "data", "index")}
    return yaml.safe_dump({**leading, **dumped}, sort_keys=False, default_flow_style=False)


def train_config_of(config: WorkflowConfig, manifest: Path, splits: Path | None, source: str) -> TrainConfig:
    """The :class:`~medrec.config.TrainConfig` that training runs: the recipe's training sections on a manifest.

    Args:
        config: the recipe.
        manifest: the manifest to train on (``medrec run``: its index step's).
        splits: the splits to reuse, or None to make them by ``config.split``.
        source: what error messages call the config.

    Raises:
        ConfigError: the derived config is invalid.
    """
    sections = config.model_dump(mode="json", include={"split", "preprocessing", "model", "training",
                                                       "threshold", "calibration"})
    sections["data"] = {
        "manifest": str(manifest),
        "splits": str(splits) if splits is not None else None,
        # the index step writes the labels file's label column into the manifest's 'label'
        "label_column": config.data.label_column if config.data.manifest is not None else "label",
        "classes": list(config.data.classes) if config.data.classes else None,
        "positive_class": config.data.positive_class,
        "lesions": str(config.data.lesions) if config.data.lesions else None,
        "masks": str(masks) if (masks := _masks_file(config)) else None,
    }
    return parse_config(sections, base_dir=Path(manifest).parent, source=source)


def _masks_file(config: WorkflowConfig) -> Path | None:
    """The masks CSV: ``data.masks``, else the labels file when it has a ``mask`` column."""
    if config.data.masks is not None:
        return Path(config.data.masks)
    labels = config.data.labels
    if labels is None or not Path(labels).is_file():
        return None
    import pandas as pd

    try:
        columns = pd.read_csv(labels, sep=None, engine="python", nrows=0).columns
    except (OSError, ValueError, pd.errors.ParserError):
        return None  # the index step reports an unreadable labels file
    return Path(labels) if "mask" in {str(c).strip().lower() for c in columns} else None


def folder_fingerprint(folder: Path, skip: Sequence[Path] = ()) -> str:
    """sha256 over the relative path, size and modification time of every file under ``folder``.

    Cheap (no file is read), and changes when a file is added, removed, replaced or edited.
    """
    skipped = [p.resolve() for p in skip]
    entries = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not any((root_path / d).resolve() == s for s in skipped))
        for name in sorted(files):
            path = root_path / name
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return sha256_json(entries)


class WorkflowState:
    """``RUN/workflow.json``: the fingerprint each finished step consumed."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATE_FILE
        self.steps: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                loaded = {}  # a damaged state file only costs a rerun of the steps
            self.steps = dict(loaded.get("steps", {})) if isinstance(loaded, dict) else {}

    def is_current(self, step: str, fingerprint: str) -> bool:
        return self.steps.get(step, {}).get("fingerprint") == fingerprint

    def record(self, step: str, fingerprint: str, seconds: float) -> None:
        self.steps[step] = {"fingerprint": fingerprint, "seconds": round(seconds, 2),
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_text(self.path, json.dumps({"steps": self.steps}, indent=2) + "\n")


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


def _index_step(config: WorkflowConfig, run_dir: Path) -> tuple[str, Callable[[], str]]:
    from medrec.index import index_folder

    scans = config.data.scans
    if not scans.exists():
        raise ConfigError(f"data.scans: {scans} does not exist")
    fingerprint = sha256_json({
        "scans": folder_fingerprint(scans, skip=[run_dir]) if scans.is_dir() else sha256_file(scans),
        "labels": sha256_file(config.data.labels) if config.data.labels and config.data.labels.is_file() else None,
        "lesions": sha256_file(config.data.lesions) if config.data.lesions and config.data.lesions.is_file() else None,
        "settings": config.model_dump(mode="json", include={"data", "index"},
                                      exclude={"data": set(TRAIN_DATA_KEYS)}),
    })

    def run() -> str:
        from medrec.index import print_index_summary

        result = index_folder(scans, run_dir / "index", labels=config.data.labels, match_on=config.data.match_on,
                              rules=config.index.rules, workers=config.index.workers,
                              label_column=config.data.label_column, lesions=config.data.lesions)
        print_index_summary(result.summary)
        return f"{len(result.manifest)} samples, {len(result.qc)} excluded"

    return fingerprint, run


def _split_step(config: WorkflowConfig, run_dir: Path) -> tuple[str, Callable[[], str]]:
    manifest_path = run_dir / "index" / "manifest.csv"
    fingerprint = sha256_json({"manifest": sha256_file(manifest_path) if manifest_path.is_file() else None,
                                "split": config.split.model_dump(mode="json")})

    def run() -> str:
        from medrec.console import print_summary
        from medrec.manifest import read_manifest
        from medrec.split import audit_leakage, make_splits, split_summary

        manifest = read_manifest(manifest_path)
        split = config.split
        splits = make_splits(manifest, val=split.val, test=split.test, folds=split.folds,
                             stratify_by=split.stratify_by, seed=split.seed)
        audit_leakage(manifest, splits, check_pixels=split.check_pixels)
        write_csv(run_dir / "split" / "splits.csv", splits)
        table = split_summary(manifest, splits, positive_class=config.data.positive_class)
        print_summary("patient-level split", table.itertuples(index=False), tuple(table.columns))
        counts = splits["split"].value_counts()
        return ", ".join(f"{name} {counts[name]}" for name in sorted(counts.index))

    return fingerprint, run


def _train_step(config: WorkflowConfig, run_dir: Path, fold: int | None = None) -> tuple[str, Callable[[], str], Any]:
    """The train step into ``run_dir``, or with ``fold`` into ``RUN/folds/fold_i`` on that fold's splits."""
    from medrec.rundir import has_started, is_complete

    train_dir, splits, source = run_dir, run_dir / "split" / "splits.csv", f"{run_dir / 'workflow.yaml'} (train step)"
    if fold is not None:
        train_dir, splits = _fold_dir(run_dir, fold), _fold_splits_path(run_dir, fold)
        source = f"{run_dir / 'workflow.yaml'} (fold {fold})"
    train_config = train_config_of(config, run_dir / "index" / "manifest.csv", splits, source=source)
    if fold is not None:  # recorded in the fold's config.yaml; its splits file already holds fold i out
        train_config = train_config.model_copy(update={"split": train_config.split.model_copy(update={"fold": fold})})
    inputs = [run_dir / "index" / "manifest.csv", splits,
              *(Path(p) for p in (train_config.data.lesions, train_config.data.masks) if p is not None)]
    fingerprint = sha256_json({
        "inputs": [sha256_file(p) if p.is_file() else None for p in inputs],
        "config": train_config.to_yaml_dict(),
    })

    def run() -> str:
        from medrec.train import train

        if fold is not None and _lost_weights(train_dir):
            console.print(f"[yellow]{train_dir.name}: its weights are gone but its checkpoint remains, so it cannot "
                          "resume; training the fold again from the start[/]")
            shutil.rmtree(train_dir)
        resume = has_started(train_dir) and not is_complete(train_dir)
        result = train(train_config, train_dir, resume=resume)
        auc = result.val_metrics.get("auc")
        if auc is None:
            return f"best epoch {result.best_epoch}"
        return f"best epoch {result.best_epoch}, val AUC {auc:.3f}"

    return fingerprint, run, train_config


def _fold_dir(run_dir: Path, fold: int) -> Path:
    from medrec.split import fold_name

    return run_dir / FOLDS_DIR / fold_name(fold)


def _fold_splits_path(run_dir: Path, fold: int) -> Path:
    from medrec.split import fold_name

    return run_dir / FOLDS_DIR / f"{fold_name(fold)}.splits.csv"


def _fold_predictions_path(run_dir: Path, fold: int) -> Path:
    from medrec.evaluate import EVALUATION_DIR

    return _fold_dir(run_dir, fold) / EVALUATION_DIR / CV_PREDICTIONS_CSV


def _lost_weights(train_dir: Path) -> bool:
    """A run with a checkpoint but no weights: finished, then its model was deleted (it cannot resume)."""
    from medrec.rundir import CHECKPOINT_STEM, MODEL_WEIGHTS

    return (train_dir / f"{CHECKPOINT_STEM}.json").is_file() and not (train_dir / MODEL_WEIGHTS).is_file()


def _write_fold_splits(config: WorkflowConfig, run_dir: Path) -> None:
    """``RUN/folds/fold_i.splits.csv`` for every fold (:func:`medrec.split.held_out_fold_splits`).

    Rewritten only when the content changed, so a rerun leaves them untouched.
    """
    from medrec.manifest import read_manifest
    from medrec.split import held_out_fold_splits, read_splits

    manifest = read_manifest(run_dir / "index" / "manifest.csv")
    splits = read_splits(run_dir / "split" / "splits.csv")
    split = config.split
    for fold in range(int(split.folds or 0)):
        plan = held_out_fold_splits(splits, manifest, fold, val=split.val, stratify_by=split.stratify_by,
                                    seed=split.seed)
        text = plan.to_csv(index=False, lineterminator="\n")
        path = _fold_splits_path(run_dir, fold)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text(path, text)


def _scored_completely(predictions: Path) -> bool:
    from medrec.score import read_sidecar

    try:
        record = read_sidecar(predictions)
    except OutputError:
        return False
    return predictions.is_file() and record is not None and record.get("status") == "complete"


def _fold_score_step(config: WorkflowConfig, run_dir: Path, fold: int) -> tuple[str, Callable[[], str]]:
    """Score fold ``fold``'s held-out samples (its run's ``test`` split) with its model; resumable."""
    from medrec.evaluate import evaluation_fingerprint

    fold_dir = _fold_dir(run_dir, fold)
    predictions = _fold_predictions_path(run_dir, fold)
    options = config.evaluation
    fingerprint = evaluation_fingerprint(fold_dir, options.model_dump(mode="json",
                                                                      include={"batch_size", "workers", "tta"}))

    def run() -> str:
        from medrec.evaluate import test_manifest
        from medrec.score import ScoreOptions, load_scoring_run, read_sidecar, score_manifest
        from medrec.score.operating_point import TTA_SOURCE_MARK

        held_out = test_manifest(fold_dir)
        run, model_hash = load_scoring_run(fold_dir)
        # as medrec.evaluate: rows of other weights or another TTA setting are replaced, not mixed in
        previous = read_sidecar(predictions)
        stale = previous is not None and (
            previous.get("model_sha256") != model_hash or bool(previous.get("tta")) != options.tta
            or (options.tta and TTA_SOURCE_MARK not in str(previous.get("threshold_source"))))
        score_options = ScoreOptions(batch_size=options.batch_size, workers=options.workers, tta=options.tta,
                                     overwrite=stale)
        # the same description as 'medrec evaluate', which can add the fold's own report later
        score_manifest(run, held_out, predictions, score_options, model_sha256=model_hash,
                       input_description={"kind": "test split", "run_dir": str(fold_dir.resolve()),
                                          "samples": len(held_out)})
        return f"{len(held_out)} held-out samples scored"

    return fingerprint, run


def _fold_metrics(frame: Any, record: dict[str, Any], fold: int) -> dict[str, Any]:
    """AUC, sensitivity and specificity of one fold's held-out predictions at the fold's own threshold.

    Multi-class folds: macro one-vs-rest AUC and the mean over classes of sensitivity and
    specificity of the argmax decision.
    """
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    usable = frame[(frame["error"].str.strip() == "") & (frame["label"].str.strip() != "")]
    labels = usable["label"].str.strip().to_numpy()
    row: dict[str, Any] = {"fold": fold, "n_samples": len(usable), "n_patients": int(usable["patient_id"].nunique()),
                           "threshold": record.get("threshold")}
    classes = [str(name) for name in record.get("classes") or sorted(set(labels))]
    positive, threshold = record.get("positive_class"), record.get("threshold")
    nan = float("nan")
    if positive is not None and threshold is not None:
        truth = labels == str(positive)
        scores = pd.to_numeric(usable["score"]).to_numpy(dtype=float)
        called = scores >= float(threshold)
        n_positive, n_negative = int(truth.sum()), int((~truth).sum())
        row.update(
            n_positive=n_positive,
            auc=float(roc_auc_score(truth, scores)) if n_positive and n_negative else nan,
            sensitivity=float((called & truth).sum() / n_positive) if n_positive else nan,
            specificity=float((~called & ~truth).sum() / n_negative) if n_negative else nan,
        )
        return row
    probabilities = usable[[f"score_{name}" for name in classes]].apply(pd.to_numeric).to_numpy(dtype=float)
    called = np.asarray(classes)[probabilities.argmax(axis=1)]
    present = [name for name in classes if (labels == name).any()]
    sensitivity = [float(((called == name) & (labels == name)).sum() / (labels == name).sum()) for name in present]
    specificity = [float(((called != name) & (labels != name)).sum() / (labels != name).sum())
                   for name in present if (labels != name).any()]
    try:
        auc = float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro", labels=classes))
    except ValueError:  # a class absent from the fold
        auc = nan
    row.update(n_positive=None, auc=auc, sensitivity=float(np.mean(sensitivity)) if sensitivity else nan,
               specificity=float(np.mean(specificity)) if specificity else nan)
    return row


def fold_spread(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean and sample SD (ddof 1) over folds of each of :data:`FOLD_METRICS` (folds without a value skipped)."""
    import numpy as np

    spread: dict[str, dict[str, float | None]] = {}
    for name in FOLD_METRICS:
        values = np.asarray([row.get(name) for row in rows], dtype=float)
        values = values[np.isfinite(values)]
        spread[name] = {"mean": float(values.mean()) if len(values) else None,
                        "sd": float(values.std(ddof=1)) if len(values) > 1 else None, "n_folds": int(len(values))}
    return spread


def _pooled_record(records: Sequence[dict[str, Any]], predictions: Sequence[Path], columns: Sequence[str]) -> dict:
    """The sidecar of the pooled predictions: the folds' label space and the median of their thresholds."""
    import statistics

    from medrec.score.operating_point import TTA_SOURCE_MARK

    first = records[0]
    thresholds = [record.get("threshold") for record in records]
    if all(value is not None for value in thresholds):
        threshold = float(statistics.median(float(value) for value in thresholds))
        listed = " / ".join(f"{float(value):.4g}" for value in thresholds)
        # 'run: ... chosen on validation' is how medrec.report reads a threshold frozen before scoring
        source = (f"run: median of the {len(records)} folds' thresholds ({listed}) each chosen on validation in its "
                  f"fold{' ' + TTA_SOURCE_MARK if first.get('tta') else ''}")
    else:
        threshold, source = None, "argmax (multi-class)"
    return {
        "medrec_version": first.get("medrec_version"),
        "classes": first.get("classes"),
        "positive_class": first.get("positive_class"),
        "threshold": threshold,
        "threshold_source": source,
        "fold_thresholds": thresholds,
        "fold_model_sha256": [record.get("model_sha256") for record in records],
        "level": first.get("level"),
        "aggregate": first.get("aggregate"),
        "tta": first.get("tta"),
        "input": {"kind": "cross-validation", "folds": len(records), "fold_predictions": [str(p) for p in predictions]},
        "columns": list(columns),
        "status": "complete",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _cv_step(config: WorkflowConfig, run_dir: Path) -> tuple[str, Callable[[], str]]:
    """Pool the folds' held-out predictions, tabulate each fold, and report the pooled predictions."""
    folds = int(config.split.folds or 0)
    paths = [_fold_predictions_path(run_dir, fold) for fold in range(folds)]
    manifest = run_dir / "index" / "manifest.csv"

    def threshold_of(path: Path) -> Any:
        from medrec.score import read_sidecar

        return (read_sidecar(path) or {}).get("threshold") if path.is_file() else None

    fingerprint = sha256_json({
        "predictions": [sha256_file(p) if p.is_file() else None for p in paths],
        "thresholds": [threshold_of(p) for p in paths],
        "manifest": sha256_file(manifest) if manifest.is_file() else None,
        "evaluation": config.evaluation.model_dump(mode="json"),
    })

    def run() -> str:
        import pandas as pd

        from medrec.evaluate import RECIPE_ACCEPTANCE
        from medrec.report.build import write_report
        from medrec.score import read_sidecar
        from medrec.score.writer import write_sidecar

        cv_dir = run_dir / CV_DIR
        frames, records, rows = [], [], []
        for fold, path in enumerate(paths):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            record = read_sidecar(path) or {}
            frames.append(frame.assign(fold=str(fold)))
            records.append(record)
            rows.append(_fold_metrics(frame, record, fold))
        pooled = pd.concat(frames, ignore_index=True)
        twice = pooled["sample_id"][pooled["sample_id"].duplicated()]
        if len(twice):
            raise OutputError(f"{run_dir / FOLDS_DIR}: sample {twice.iloc[0]} was held out by two folds; the fold "
                              f"splits are inconsistent: delete {run_dir / FOLDS_DIR} and run again")
        predictions = cv_dir / CV_PREDICTIONS_CSV
        write_csv(predictions, pooled)
        write_sidecar(predictions, _pooled_record(records, paths, pooled.columns))
        options = config.evaluation
        qc = run_dir / "index" / "qc.csv"
        report = write_report(predictions, cv_dir / CV_REPORT_DIR, manifest=manifest, qc=qc if qc.is_file() else None,
                              subgroups=options.subgroups, prevalence=options.prevalence, ci_method=options.ci_method,
                              n_boot=options.bootstrap, seed=options.seed,
                              title=f"Cross-validation report: pooled out-of-fold predictions of {folds} folds",
                              prevalence_source="recipe evaluation.prevalence", context=config.context,
                              acceptance=options.acceptance, acceptance_source=RECIPE_ACCEPTANCE,
                              acceptance_caveat=CV_ACCEPTANCE_CAVEAT.format(folds=folds))
        table = pd.DataFrame(rows, columns=["fold", "n_samples", "n_patients", "n_positive", "threshold",
                                            *FOLD_METRICS])
        spread = fold_spread(rows)
        write_csv(cv_dir / CV_FOLDS_CSV, table)
        write_csv(cv_dir / CV_REPORT_DIR / CV_FOLDS_CSV, table)
        write_text(cv_dir / CV_REPORT_DIR / CV_FOLDS_JSON, json.dumps({
            "folds": json.loads(table.to_json(orient="records", double_precision=15)),
            "spread": spread,
            "pooled_threshold": report.get("threshold"),
            "note": "each fold's metrics are at its own threshold, chosen on validation data carved from the other "
                    "folds; the pooled report uses the median of those thresholds",
        }, indent=2) + "\n")
        auc = report.get("metrics", {}).get("auc", {}).get("value")
        mean, sd = spread["auc"]["mean"], spread["auc"]["sd"]
        per_fold = f"; per fold {mean:.3f} ± {sd:.3f}" if mean is not None and sd is not None else ""
        return f"pooled AUC {auc:.3f}{per_fold}" if auc is not None else "report written"

    return fingerprint, run


def _read_folds_table(run_dir: Path) -> list[dict[str, Any]]:
    import pandas as pd

    table = pd.read_csv(run_dir / CV_DIR / CV_FOLDS_CSV)
    return json.loads(table.to_json(orient="records", double_precision=15))


def _cross_validate(config: WorkflowConfig, folder: Path, state: WorkflowState,
                    step: Callable[[str, str, Callable[[], str], bool], None]) -> None:
    """The fold steps and the pooling step of a cross-validated recipe (see the module docstring)."""
    from medrec.rundir import is_complete
    from medrec.split import read_splits

    locked = int((read_splits(folder / "split" / "splits.csv")["split"] == "test").sum())
    if locked:
        console.print(f"cross-validation over {config.split.folds} folds; the locked test split ({locked} samples, "
                      "split.test) is held out and never used by it")
    else:
        console.print(f"cross-validation over {config.split.folds} folds of every labelled sample (split.test: 0, "
                      "no locked test split)")
    _write_fold_splits(config, folder)
    for fold in range(int(config.split.folds or 0)):
        fold_dir = _fold_dir(folder, fold)
        fingerprint, action, _ = _train_step(config, folder, fold=fold)
        name = f"{fold_dir.name}/train"
        complete = is_complete(fold_dir)
        if complete and not state.is_current(name, fingerprint):
            raise OutputError(
                f"{fold_dir}: holds a finished training run of fold {fold} made from a different recipe or data; "
                "choose another output folder (-o) or delete this one"
            )
        step(name, fingerprint, action, complete)
        fingerprint, action = _fold_score_step(config, folder, fold)
        step(f"{fold_dir.name}/score", fingerprint, action, _scored_completely(_fold_predictions_path(folder, fold)))
    fingerprint, action = _cv_step(config, folder)
    outputs = [folder / CV_DIR / CV_PREDICTIONS_CSV, folder / CV_DIR / CV_FOLDS_CSV,
               folder / CV_DIR / CV_REPORT_DIR / "report.json"]
    step("cv", fingerprint, action, all(path.is_file() for path in outputs))


def run_workflow(config: WorkflowConfig, run_dir: str | Path) -> WorkflowResult:
    """Run (or finish) a recipe into ``run_dir``; steps whose inputs are unchanged are skipped.

    With ``split.folds`` the train and evaluate steps are a cross-validation (module docstring).

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
