"""The training step's config: one frozen, validated ``TrainConfig`` (the sections of a recipe that train).

Users write recipes (:mod:`medrec.workflow`, the one format of ``medrec run`` and ``medrec
train``); ``medrec train`` derives a ``TrainConfig`` from one (:func:`medrec.workflow.load_train_recipe`)
and writes it, resolved, as ``RUN/config.yaml``. :func:`load_config` reads such a file (or a recipe
that holds only these sections).

Paths in the YAML are relative to the YAML file's folder and are resolved to absolute paths
when loaded. Unknown keys and bad values raise one :class:`~medrec.errors.ConfigError` that
names every offending key by its dotted path and lists the allowed keys or values.

Example (``train.yaml``)::

    data:
      manifest: index/manifest.csv
    preprocessing: {}
    model:
      name: cnn_small
    training:
      epochs: 20
      batch_size: 4
      lr: 0.001
    threshold:
      method: sensitivity:0.95
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from yaml.reader import ReaderError

from medrec.device import DEVICE_PATTERN
from medrec.errors import ConfigError, ModelError
from medrec.thresholds import ThresholdRule, parse_rule
from medrec.transforms import PreprocessConfig


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir") if info.context else None
    path = Path(os.path.expanduser(str(value)))
    if not path.is_absolute():
        path = Path(base or Path.cwd()) / path
    return Path(os.path.normpath(path))


ResolvedPath = Annotated[Path, AfterValidator(_resolve_path)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Section):
    """Where the samples and labels come from.

    Attributes:
        manifest: ``manifest.csv`` written by ``medrec index``.
        splits: ``splits.csv`` to reuse; when absent the splits are made with ``medrec.split`` and
            written into the run directory.
        label_column: manifest column holding the labels (rows with an empty label are not used).
        classes: class names in model-output order; default: the sorted unique labels.
        positive_class: binary only: the class whose probability is the score; default: the class
            that :func:`medrec.labels.resolve_positive` recognises (``1`` of ``0`` / ``1``, ``tumor``
            of ``normal`` / ``tumor``, ``lesion`` of ``lesion`` / ``none``); two labels it cannot
            tell apart (``cat`` / ``dog``) need it.
        lesions: a lesion table (CSV: ``study_uid`` or ``series_uid``, ``center_x/y/z`` in LPS mm,
            ``diameter_mm``; the columns of ``medrec synth``'s ``ground_truth.csv``) that
            finding-map models learn from; lesions are rasterised as spheres.
        masks: a labels-style CSV with a ``mask`` column: NIfTI lesion masks (paths relative to
            the CSV, on any voxel grid of the scan's world geometry; empty = no lesion).
    """

    manifest: ResolvedPath
    splits: ResolvedPath | None = None
    lesions: ResolvedPath | None = None
    masks: ResolvedPath | None = None
    label_column: str = "label"
    classes: tuple[str, ...] | None = None
    positive_class: str | None = None

    @model_validator(mode="after")
    def _check_classes(self) -> DataConfig:
        if self.classes is not None:
            if len(self.classes) < 2:
                raise ValueError(f"classes needs at least 2 names, got {list(self.classes)}")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"classes lists a name twice: {list(self.classes)}")
            if self.positive_class is not None and self.positive_class not in self.classes:
                raise ValueError(f"positive_class {self.positive_class!r} is not one of classes {list(self.classes)}")
        return self


class SplitConfig(_Section):
    """Patient-level split settings (used only when ``data.splits`` is not given).

    Attributes:
        val: fraction of patients for validation (threshold, calibration, early stopping).
        test: fraction of patients held out, never touched by training.
        folds: k-fold cross-validation instead of a single train/val split.
        fold: with ``folds``: which fold is the validation fold of this run.
        stratify_by: extra manifest columns to stratify on besides the label.
        seed: split seed.
        check_pixels: the leakage audit also compares pixel content across partitions.
    """

    val: float = Field(0.15, gt=0.0, lt=1.0)
    test: float = Field(0.2, ge=0.0, lt=1.0)
    folds: int | None = Field(None, ge=2)
    fold: int = Field(0, ge=0)
    stratify_by: tuple[str, ...] | None = None
    seed: int = 0
    check_pixels: bool = True

    @field_validator("stratify_by", mode="before")
    @classmethod
    def _one_column(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_fractions(self) -> SplitConfig:
        if self.val + self.test >= 1.0:
            raise ValueError(
                f"val + test must be < 1 so that patients remain for training; got {self.val} + {self.test}")
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} does not exist with folds={self.folds}; use 0..{self.folds - 1}")
        return self


MODEL_MODES: tuple[str, ...] = ("3d", "2d", "2.5d")
# The validation error type of ``model.kwargs`` keys that the named network does not take.
UNKNOWN_MODEL_ARGUMENT = "unknown_model_argument"


class ModelConfig(_Section):
    """The network, by registry name (see ``medrec models``).

    Attributes:
        name: registry name, e.g. ``cnn_small``, ``resnet18``.
        spatial_dims: 2 or 3; default from the preprocessing plan.
        mode: ``3d`` (a 3D network), ``2d`` / ``2.5d`` (a 2D network per slice of a volume,
            pooled per study); default from the plan.
        aggregation: slice modes: ``max``, ``mean`` or ``topk_mean``.
        top_k: slice modes with ``topk_mean``.
        context: ``2.5d``: neighbouring slices on each side stacked as channels (0 means 1).
        pretrained: local safetensors weights to start from (never downloaded).
        kwargs: extra arguments for the network factory (e.g. ``dropout: 0.2``).
    """

    name: str = "cnn_small"
    spatial_dims: Literal[2, 3] | None = None
    mode: Literal["3d", "2d", "2.5d"] | None = None
    aggregation: Literal["max", "mean", "topk_mean"] = "max"
    top_k: int = Field(3, ge=1)
    context: int = Field(0, ge=0)
    pretrained: ResolvedPath | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from medrec.models import resolve_model_name

        try:
            return resolve_model_name(value)
        except ModelError as e:
            raise ValueError(str(e)) from e

    @field_validator("kwargs")
    @classmethod
    def _network_arguments(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if not value or name is None:
            return value  # an unknown model name is reported on its own
        from medrec.models.registry import model_kwargs

        accepted = model_kwargs(name)
        if accepted is not None:
            accepted = (*accepted, "slice_chunk")  # create_model's own: slices per chunk in slice modes
        unknown = [str(key) for key in value if accepted is not None and key not in accepted]
        if unknown:
            raise PydanticCustomError(
                UNKNOWN_MODEL_ARGUMENT,
                "{model} takes no argument(s) {keys}; it accepts: {accepted}",
                {"model": name, "keys": unknown, "accepted": list(accepted or ())},
            )
        return value

    @field_validator("pretrained")
    @classmethod
    def _safetensors_only(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix != ".safetensors":
            raise ValueError(f"{value}: only .safetensors weights are accepted (never a pickle / .pt)")
        return value


IMBALANCE_METHODS: tuple[str, ...] = ("weighted_loss", "balanced_sampler", "none")


class TrainingConfig(_Section):
    """The optimisation loop.

    Attributes:
        epochs: maximum number of epochs.
        batch_size: samples per step (per process under torchrun).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length before the cosine decay (per step).
        patience: stop after this many epochs without a better validation AUC (None: never).
        selection_window: the kept weights are those of the epoch with the best trailing mean of
            the validation AUC over this many epochs (1: the best single epoch). On a small
            validation split the single best epoch is partly luck; a window prefers an epoch
            where the model has been good for a while (early stopping follows the same mean).
        imbalance: ``weighted_loss`` (class-weighted cross-entropy), ``balanced_sampler``
            (class-balanced sampling with replacement) or ``none``.
        seed: seed of initialisation, sampling and augmentation.
        num_workers: DataLoader worker processes.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision (CUDA only; bf16 where supported, else fp16 with a GradScaler).
        cache_dir: folder of the preprocessed-sample cache (default: ``RUN/cache``).
        memory_budget_gb: largest allowed size of one input batch in memory; also the most
            the preprocessed training set may take to be kept in memory between epochs.
        deterministic: ask torch for deterministic kernels.
        steps_per_epoch: finding-map models: optimiser steps per epoch (each on ``batch_size``
            slices; validation and checkpointing follow each epoch).
        foreground_fraction: finding-map models: share of the slices of a batch drawn from lesion
            slices of annotated studies (the rest from anywhere in studies whose target is known).
        mil_fraction: finding-map models: share of the slices of a batch drawn from positives
            without annotation (each at the slice holding its highest logit), trained so that
            the slice's maximum says "finding" (weighted as one annotated lesion). Off by default:
            on partly annotated CT it gave no gain over leaving those positives out (0.870 vs 0.873
            test AUC, datasets/synthetic_phantoms.md).
        lesion_weight: finding-map models: weight of lesion voxels in the voxel cross-entropy, or
            ``auto``: 1 where lesions fill as much of their slices as on the default CT phantoms
            (0.75 %), proportionally more (at most 20) where they fill less.
        mil_start: share of the epochs trained on the annotated studies alone before MIL begins.
        mil_gate: MIL draws only the positives whose highest logit exceeds this quantile of the
            highest logits of lesion-free studies (re-examined with the hard slices); 0 draws all.
        hard_fraction: finding-map models: share of the slices of a batch that are the slice
            holding the highest logit of a study with a known target (hard examples, from the
            second epoch; a third of those studies is re-examined each epoch).
        patch_size: finding-map models: train on square in-plane crops of this many voxels
            instead of whole slices (lesion draws centred near a lesion voxel, hard draws near the
            peak), or ``auto``: three times the largest annotated lesion (95th percentile) at the
            plan's spacing, at least 48 voxels, a multiple of 16. None: whole slices.
        paste_fraction: finding-map models: share of the slices of a batch that are a study with
            known target with one of the annotated training lesions pasted into tissue like its
            own surroundings (lesion copy-paste, :mod:`medrec.train.paste`).
    """

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: int = Field(1, ge=0)
    patience: int | None = Field(10, ge=1)
    selection_window: int = Field(1, ge=1)
    imbalance: Literal["weighted_loss", "balanced_sampler", "none"] = "weighted_loss"
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    device: str = Field("auto", pattern=DEVICE_PATTERN.pattern)
    amp: bool = True
    cache_dir: ResolvedPath | None = None
    memory_budget_gb: float = Field(4.0, gt=0.0)
    deterministic: bool = True
    steps_per_epoch: int = Field(100, ge=1)
    foreground_fraction: float = Field(0.33, ge=0.0, le=1.0)
    mil_fraction: float = Field(0.0, ge=0.0, le=1.0)
    lesion_weight: float | Literal["auto"] = 1.0
    mil_start: float = Field(0.5, ge=0.0, lt=1.0)
    mil_gate: float = Field(0.9, ge=0.0, le=1.0)
    hard_fraction: float = Field(0.0, ge=0.0, le=1.0)
    patch_size: int | Literal["auto"] | None = None
    paste_fraction: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _fractions(self) -> TrainingConfig:
        if self.patch_size is not None and self.patch_size != "auto" and self.patch_size < 16:
            raise ValueError(f"patch_size must be at least 16 voxels, auto or null, got {self.patch_size}")
        if self.lesion_weight != "auto" and not self.lesion_weight > 0:
            raise ValueError(f"lesion_weight must be a positive number or auto, got {self.lesion_weight}")
        if self.foreground_fraction + self.mil_fraction + self.hard_fraction + self.paste_fraction > 1.0:
            raise ValueError(
                "foreground_fraction + mil_fraction + hard_fraction + paste_fraction must be <= 1, got "
                f"{self.foreground_fraction} + {self.mil_fraction} + {self.hard_fraction} + {self.paste_fraction}"
            )
        return self


class ThresholdConfig(_Section):
    """How the binary operating threshold is chosen on the validation split.

    Attributes:
        method: a rule of :mod:`medrec.thresholds` (``youden``, ``sensitivity:0.95``,
            ``specificity:0.9``: the grammar of ``medrec report --exploratory-threshold`` too), or
            ``target_sensitivity`` with the target in ``target_sensitivity`` (the older spelling of
            ``sensitivity:<target>``).
        target_sensitivity: the target of ``method: target_sensitivity``, in (0, 1].
    """

    method: str = "youden"
    target_sensitivity: float = Field(0.95, gt=0.0, le=1.0)

    @field_validator("method")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        if str(value).strip().lower() != "target_sensitivity":
            try:
                parse_rule(value, "threshold.method")
            except ConfigError as e:
                raise ValueError(str(e)) from e
        return str(value).strip().lower()

    @property
    def rule(self) -> ThresholdRule:
        """The parsed rule (``target_sensitivity`` becomes ``sensitivity:<target_sensitivity>``)."""
        if self.method == "target_sensitivity":
            return ThresholdRule("sensitivity", self.target_sensitivity)
        return parse_rule(self.method, "threshold.method")


class CalibrationConfig(_Section):
    """Probability calibration fitted on validation logits: ``temperature`` scaling or ``none``."""

    method: Literal["temperature", "none"] = "temperature"


# The report metrics an acceptance criterion may name: those where higher is better.
ACCEPTANCE_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy",
                                       "f1", "mcc", "auc", "pr_auc")


class AcceptanceCriterion(_Section):
    """One pre-specified criterion on a report metric (higher is better).

    Attributes:
        value: the point estimate must be at least this.
        lower_ci: the lower bound of the metric's 95% CI must be at least this (the criterion a
            study is powered for: the report gives the sample size that shows it with 80% power).
    """

    value: float | None = Field(None, ge=-1.0, le=1.0)
    lower_ci: float | None = Field(None, ge=-1.0, le=1.0)

    @model_validator(mode="after")
    def _has_a_bound(self) -> AcceptanceCriterion:
        if self.value is None and self.lower_ci is None:
            raise ValueError("give 'value' (point estimate at least) and / or 'lower_ci' (lower 95% CI bound at "
                             "least), e.g. {lower_ci: 0.8}")
        return self


class AcceptanceCriteria(_Section):
    """Pre-specified acceptance criteria, judged on the report's sample-level metrics (PASS / FAIL each).

    Each key is a report metric (:data:`ACCEPTANCE_METRICS`) with an :class:`AcceptanceCriterion`,
    e.g. ``sensitivity: {lower_ci: 0.80}``, ``auc: {lower_ci: 0.85}``, ``specificity: {value: 0.85}``.
    """

    sensitivity: AcceptanceCriterion | None = None
    specificity: AcceptanceCriterion | None = None
    ppv: AcceptanceCriterion | None = None
    npv: AcceptanceCriterion | None = None
    accuracy: AcceptanceCriterion | None = None
    balanced_accuracy: AcceptanceCriterion | None = None
    f1: AcceptanceCriterion | None = None
    mcc: AcceptanceCriterion | None = None
    auc: AcceptanceCriterion | None = None
    pr_auc: AcceptanceCriterion | None = None

    def criteria(self) -> list[tuple[str, AcceptanceCriterion]]:
        """``(metric, criterion)`` for every metric that has one, in :data:`ACCEPTANCE_METRICS` order."""
        return [(name, getattr(self, name)) for name in ACCEPTANCE_METRICS if getattr(self, name) is not None]


class StudyContext(_Section):
    """What the validation is about, printed on the report's first page (every field optional; the
    report's wording is :data:`medrec.report.document.CONTEXT_LABELS`).

    Attributes:
        intended_use: who uses the model, on whom, for what decision.
        target_condition: the condition the model detects.
        reference_standard: how the reference labels were established, and by whom.
        data_source: where the scans come from (archive, trial, public data set).
        sites: the sites that contributed scans (a list is joined with commas).
        dates: the acquisition period.
    """

    intended_use: str | None = None
    target_condition: str | None = None
    reference_standard: str | None = None
    data_source: str | None = None
    sites: str | None = None
    dates: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # YAML reads "2019-2021" as text but 2020-01-01 as a date and 3 as a number; a list of sites is joined
        if isinstance(value, list | tuple):
            return ", ".join(str(item) for item in value)
        if value is not None and not isinstance(value, str | dict):
            return str(value)
        return (value.strip() or None) if isinstance(value, str) else value


def parse_acceptance(data: Any, source: str = "acceptance criteria") -> AcceptanceCriteria:
    """Validate acceptance criteria: a mapping of metric -> criterion (also under ``acceptance:`` or
    ``evaluation: {acceptance: ...}``, so a recipe file works too).

    Raises:
        ConfigError: not a mapping, an unknown metric (with the nearest name) or a bad bound.
    """
    if isinstance(data, dict) and isinstance(data.get("evaluation"), dict) and "acceptance" in data["evaluation"]:
        data = data["evaluation"]["acceptance"]
    elif isinstance(data, dict) and set(data) == {"acceptance"}:
        data = data["acceptance"]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: acceptance criteria are a mapping of metric -> criterion, e.g. "
                          "'sensitivity: {lower_ci: 0.8}'; got " + type(data).__name__)
    try:
        return AcceptanceCriteria.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, root=AcceptanceCriteria,
                                                  what="acceptance criteria")) from e


def load_acceptance(path: str | Path) -> AcceptanceCriteria:
    """Read acceptance criteria from a YAML file (``medrec report --acceptance FILE``).

    Raises:
        ConfigError: missing file, bad YAML or invalid criteria (:func:`parse_acceptance`).
    """
    source = Path(path)
    return parse_acceptance(read_yaml(source, "acceptance criteria file not found; write a YAML mapping such as "
                                              "'auc: {lower_ci: 0.8}'"), source=str(source))


class TrainingSections(_Section):
    """The sections a training recipe and a workflow recipe share (everything but the data).

    Attributes:
        split: how to split when no splits file is given.
        preprocessing: the preprocessing recipe (planned against the training data).
        model: the network.
        training: the loop.
        threshold: operating threshold choice (binary).
        calibration: probability calibration.
    """

    split: SplitConfig = Field(default_factory=SplitConfig)
    preprocessing: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)

    @field_validator("threshold", "calibration", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        # ``calibration: none`` and ``threshold: youden`` are accepted as short forms.
        return {"method": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _input_fits_budget(self) -> TrainingSections:
        size = self.preprocessing.input_size
        if size != "auto":
            batch_bytes = self.training.batch_size * math.prod(size) * 4
            if batch_bytes > self.training.memory_budget_gb * 1024**3:
                raise ValueError(
                    f"training.batch_size {self.training.batch_size} x preprocessing.input_size {list(size)} needs "
                    f"{batch_bytes / 1024**3:.2f} GiB per batch > training.memory_budget_gb "
                    f"{self.training.memory_budget_gb}; lower them or raise the budget"
                )
        return self


class TrainConfig(TrainingSections):
    """The whole training recipe: the data plus the shared sections of :class:`TrainingSections`.

    Attributes:
        data: manifest, splits and labels.
    """

    data: DataConfig

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (absolute paths, every default filled in), data first."""
        dumped = self.model_dump(mode="json")
        return {"data": dumped.pop("data"), **dumped}


def _section_model(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model that holds the key at ``loc`` (for listing its allowed keys)."""
    current: type[BaseModel] | None = root
    for part in loc[:-1]:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return None
        annotation = current.model_fields[part].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return current


def format_validation_error(error: ValidationError, source: str, root: type[BaseModel] | None = None,
                            what: str = "training config") -> str:
    """One readable message naming each bad key by dotted path and what is allowed there (``what``: the
    kind of file, for the message)."""
    problems = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        dotted = ".".join(str(part) for part in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            section = _section_model(loc, root or TrainConfig)
            allowed = sorted(section.model_fields) if section is not None else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key '{dotted}'{hint}; allowed keys here: {', '.join(allowed)}")
        elif item["type"] == UNKNOWN_MODEL_ARGUMENT:
            context = item["ctx"]
            for key in context["keys"]:
                close = difflib.get_close_matches(key, context["accepted"], n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"unknown key '{dotted}.{key}'{hint}; {context['model']} accepts: "
                                f"{', '.join(context['accepted']) or 'no arguments'}")
        elif item["type"] == "missing":
            problems.append(f"'{dotted}' is required")
        else:
            message = item["msg"].removeprefix("Value error, ")
            shown = item.get("input")
            got = "" if isinstance(shown, dict) else f" (got {shown!r})"
            problems.append(f"'{dotted}': {message}{got}" if loc else message)
    return f"{source}: invalid {what}: " + "; ".join(problems)


def parse_config(data: Any, base_dir: str | Path | None = None, source: str = "config") -> TrainConfig:
    """Validate a config mapping; relative paths are resolved against ``base_dir`` (default: cwd).

    Raises:
        ConfigError: the mapping does not describe a valid config (every problem named by key).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a training config must be a mapping of sections (data, model, training, ...)")
    try:
        return TrainConfig.model_validate(data, context={"base_dir": str(base_dir) if base_dir else None})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from e


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training YAML; relative paths are taken from the YAML file's folder.

    Raises:
        ConfigError: missing file, bad YAML, unknown keys or bad values.
    """
    source = Path(path)
    data = read_yaml(source, "config file not found")
    return parse_config(data if data is not None else {}, base_dir=source.resolve().parent, source=str(source))


def read_yaml(source: Path, not_found: str) -> Any:
    """The parsed content of a YAML file (None when empty).

    Raises:
        ConfigError: the file is missing (``not_found`` says what to do), not UTF-8 or not valid YAML.
    """
    if not source.is_file():
        raise ConfigError(f"{source}: {not_found}")
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not a UTF-8 text file") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {describe_yaml_error(e, text)}") from e


def describe_yaml_error(error: yaml.YAMLError, text: str) -> str:
    """One line saying where a YAML text is broken and why (PyYAML's own message spans several lines).

    Args:
        error: what :func:`yaml.safe_load` raised.
        text: the text it was parsing (to place errors that carry only a character offset).

    Returns:
        ``not valid YAML at line L, column C: <problem> (<context> at line L', column C')`` with
        1-based positions, or as much of it as the error tells.
    """
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        message = f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {error.problem or 'syntax error'}"
        if error.context:
            context_mark = error.context_mark
            where = (f" at line {context_mark.line + 1}, column {context_mark.column + 1}"
                     if context_mark is not None else "")
            message += f" ({error.context}{where})"
        return message
    if isinstance(error, ReaderError):
        before = text[: error.position]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        character = f"#x{error.character:04x}" if isinstance(error.character, int) else repr(error.character)
        return f"not valid YAML at line {line}, column {column}: unacceptable character {character}: {error.reason}"
    return "not valid YAML: " + " ".join(str(error).split())


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML text (loadable again with :func:`load_config`)."""
    text: str = yaml.safe_dump(config.to_yaml_dict(), sort_keys=False, default_flow_style=False)
    return text
