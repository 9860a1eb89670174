"""The recipe: one frozen, validated :class:`WorkflowConfig` (the training sections of
:class:`medrec.config.TrainingSections` plus ``data``, ``index``, ``evaluation`` and ``context``),
the resolved YAML of it that a run keeps (``RUN/workflow.yaml``), and the training step's
:class:`~medrec.config.TrainConfig` derived from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medrec.config import (
    AcceptanceCriteria,
    DataConfig,
    ResolvedPath,
    StudyContext,
    TrainConfig,
    TrainingSections,
    parse_config,
)
from medrec.config.train import check_unlabelled
from medrec.index.selection import SelectionRules

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

    @model_validator(mode="after")
    def _unlabelled_normal_for_anomaly(self) -> WorkflowConfig:
        check_unlabelled(self.task, self.data.unlabelled)
        return self


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
    sections = config.model_dump(mode="json", include={"task", "split", "preprocessing", "model", "training",
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
        "unlabelled": config.data.unlabelled,
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
