"""``model.json``: the typed record of what a training run decided, its one writer and its one reader.

Training writes it last (its presence marks a complete run): the architecture, the preprocessing
plan, the classes, the operating threshold and how it was chosen, the calibration, the weights'
sha256, the library versions and the data fingerprint. Scoring (:func:`medrec.rundir.load_run`),
the report and the TTA operating point read it back through :func:`read_run_info`.

This module imports neither torch nor the pipeline's stages, so that ``medrec report`` (which
never loads a model) can read a run without importing torch; :mod:`medrec.rundir` re-exports it.

The format is ``medrec-run-1`` (:data:`RUN_FORMAT`). Runs written before this model existed use
the same format: the keys :func:`medrec.rundir.load_run` always required (``format``,
``architecture``, ``classes``, ``plan``, ``weights``) are required here too; every other key is
optional, and keys this model does not name are kept (``extra="allow"``), so such a run reads
and writes back unchanged. A change that drops or renames a key needs a new format and a
migration in :func:`read_run_info`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medrec.atomicio import write_text
from medrec.errors import ModelError

RUN_FORMAT = "medrec-run-1"
MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
# the keys every medrec-run-1 model.json has held (load_run refused files without them before this model)
REQUIRED_KEYS: tuple[str, ...] = ("architecture", "classes", "plan", "weights")


class _Record(BaseModel):
    """A part of ``model.json``: frozen, and keeps keys it does not name (older or newer runs)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def to_json(self) -> dict[str, Any]:
        """As JSON data: the keys that were set (given to the constructor or read from the file), so
        that a record read and written back keeps its keys and their order."""
        return self.model_dump(mode="python", exclude_unset=True)


class Architecture(_Record):
    """The network, as :func:`medrec.models.create_model` builds it.

    Attributes:
        name: the registry name (``resnet18``, ``cnn_small``, ``finding_fcn``, ...).
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output classes.
        options: the model's own keyword arguments (slice mode, aggregation, context, ...);
            ``kwargs`` in the file (a field of that name would clash with the constructor's
            ``**kwargs`` that keeps unnamed keys).
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, serialize_by_alias=True)

    name: str
    spatial_dims: int
    in_channels: int
    num_classes: int
    options: dict[str, Any] = Field(default_factory=dict, alias="kwargs")


class WeightsRecord(_Record):
    """The weights file and its sha256 (scoring refuses weights that do not match it)."""

    file: str = MODEL_WEIGHTS
    sha256: str | None = None


class ThresholdEntry(_Record):
    """The operating threshold: a sample is positive when its score is >= ``value``.

    Attributes:
        value: the threshold on the calibrated positive-class probability; None for multi-class
            runs (argmax).
        method: the rule it was chosen by (``youden``, ``sensitivity:0.95``, ...) or ``argmax``.
        chosen_on: the data it was chosen on (``validation``), None when not chosen on data.
        val_sensitivity: sensitivity at ``value`` on those data.
        val_specificity: specificity at ``value`` on those data.
        applies_to: the score it applies to, in words.
        rule: the decision rule, in words.
        note: why there is no threshold (multi-class), or when it was chosen.
    """

    value: float | None = Field(None, ge=0.0, le=1.0)
    method: str | None = None
    chosen_on: str | None = None
    val_sensitivity: float | None = None
    val_specificity: float | None = None
    applies_to: str | None = None
    rule: str | None = None
    note: str | None = None


class TtaThresholdEntry(ThresholdEntry):
    """The threshold for test-time-augmented scores (``threshold_tta``, :mod:`medrec.score.operating_point`).

    Attributes:
        tta: the augmentation the validation scores were made with.
        n_val: validation samples it was chosen on.
        weights_sha256: the weights it belongs to (ignored for other weights).
    """

    tta: str | None = None
    n_val: int | None = None
    weights_sha256: str | None = None


class Calibration(_Record):
    """The probability calibration (:class:`medrec.train.calibration.TemperatureFit`).

    Attributes:
        method: ``temperature`` or ``none``.
        temperature: divides the logits before the softmax (1.0: none).
        val_nll_before: validation negative log-likelihood before calibration.
        val_nll_after: ... and after.
        applied: False when the fitted temperature was not used (too few samples per class).
        n_val: validation samples it was fitted on.
        val_class_counts: their count per class.
        min_samples_per_class: the fewest per class for a fit to be applied.
        temperature_ci95: 95% interval of the temperature.
        temperature_ci_method: how that interval was computed.
        reason: why the fit was not applied.
    """

    method: str = "none"
    temperature: float = Field(1.0, gt=0.0)
    val_nll_before: float | None = None
    val_nll_after: float | None = None
    applied: bool | None = None
    n_val: int | None = None
    val_class_counts: tuple[int, ...] | None = None
    min_samples_per_class: int | None = None
    temperature_ci95: tuple[float, float] | None = None
    temperature_ci_method: str | None = None
    reason: str | None = None

    @property
    def applied_temperature(self) -> float:
        """The temperature scoring divides the logits by (1.0 unless the method is ``temperature``)."""
        return self.temperature if self.method == "temperature" else 1.0


class DataFingerprint(_Record):
    """What the run was trained on, by hash (no sample ids, no paths).

    Attributes:
        samples_sha256: sha256 over the sorted ``sample_id<TAB>label<TAB>split`` lines.
        samples_rule: that rule, in words.
        manifest_sha256: the manifest's hash (:func:`medrec.manifest.manifest_sha256`).
        n_train: training samples.
        n_val: validation samples.
        n_test: test samples (never read by training).
        manifest_rule: how the manifest was hashed.
        planning_fingerprint: the cohort summary the preprocessing plan was made from.
    """

    samples_sha256: str | None = None
    samples_rule: str | None = None
    manifest_sha256: str | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    manifest_rule: str | None = None
    planning_fingerprint: dict[str, Any] | None = None


class RunInfo(_Record):
    """The content of ``model.json`` (format ``medrec-run-1``), in the order training writes it.

    Attributes:
        format: :data:`RUN_FORMAT`.
        architecture: the network.
        mode: ``2d``, ``2.5d`` or ``3d``: how the network sees a volume.
        input_shape: one preprocessed sample's shape ``(C, *spatial)``.
        weights: the weights file and its sha256.
        plan: the preprocessing plan as JSON data (:class:`medrec.planning.Plan` validates it;
            kept as data here so that reading a run imports no preprocessing, hence no torch).
        plan_hash: the plan's hash (names the sample cache).
        classes: class names in model-output order.
        positive_class: the binary positive class; None for multi-class runs.
        task: ``binary`` or ``multiclass``.
        threshold: the operating threshold and how it was chosen.
        threshold_tta: the threshold for scores made with test-time augmentation (added by the
            first scoring with ``--tta``).
        calibration: the probability calibration.
        versions: library versions of the training environment.
        data_fingerprint: what the run was trained on.
        seed: the training seed.
        best_epoch: epoch of the kept weights (1-based).
        epochs_completed: epochs trained.
        stopped_early: early stopping ended training.
        val_metrics: validation metrics of the kept weights (calibrated).
        device: the device type training ran on.
        world_size: training processes (DDP).
    """

    format: Literal["medrec-run-1"]
    architecture: Architecture
    mode: str | None = None
    input_shape: tuple[int, ...] | None = None
    weights: WeightsRecord
    plan: dict[str, Any]
    plan_hash: str | None = None
    classes: tuple[str, ...] = Field(min_length=1)
    positive_class: str | None = None
    task: Literal["binary", "multiclass"] | None = None
    threshold: ThresholdEntry | None = None
    threshold_tta: TtaThresholdEntry | None = None
    calibration: Calibration | None = None
    versions: dict[str, str] | None = None
    data_fingerprint: DataFingerprint | None = None
    seed: int | None = None
    best_epoch: int | None = None
    epochs_completed: int | None = None
    stopped_early: bool | None = None
    val_metrics: dict[str, int | float | None] | None = None
    device: str | None = None
    world_size: int | None = None

    @property
    def threshold_value(self) -> float | None:
        """The operating threshold, or None (multi-class, or none recorded)."""
        return None if self.threshold is None else self.threshold.value

    @property
    def temperature(self) -> float:
        """The temperature scoring divides the logits by (1.0 when calibration is off)."""
        return 1.0 if self.calibration is None else self.calibration.applied_temperature


def write_run_info(run_dir: str | Path, info: RunInfo) -> Path:
    """Write ``RUN/model.json`` atomically (a killed process leaves the old file or none, never half of one).

    Args:
        run_dir: the run directory.
        info: what to record.

    Returns:
        The written path.
    """
    path = Path(run_dir) / MODEL_JSON
    # json, not pydantic's serialiser: NaN metrics (an AUC on one class) stay NaN, as runs always wrote them
    write_text(path, json.dumps(info.to_json(), indent=1, default=str) + "\n")
    return path


def _error_text(error: ValidationError) -> str:
    """The first problems of a validation error as ``dotted.key: message``."""
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Read and validate ``RUN/model.json``.

    Args:
        run_dir: the run directory.

    Returns:
        The :class:`RunInfo`.

    Raises:
        ModelError: the file is missing, not JSON, of another format, lacks a required key, or
            holds a value of the wrong kind; the message names the file (and the key).
    """
    path = Path(run_dir) / MODEL_JSON
    if not path.is_file():
        raise ModelError(f"{path}: not found; {Path(run_dir)} is not a complete medrec run directory "
                         "(train one with 'medrec train RECIPE -o RUN')")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e}); the run directory is damaged") from e
    except OSError as e:
        raise ModelError(f"{path}: cannot be read ({e.strerror})") from e
    if not isinstance(content, dict) or content.get("format") != RUN_FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise ModelError(f"{path}: not a {RUN_FORMAT} model description (format {found!r}); the run directory is "
                         "damaged or from another tool")
    for key in REQUIRED_KEYS:
        if key not in content:
            raise ModelError(f"{path}: lacks {key!r}; the run directory is damaged or from another tool")
    try:
        return RunInfo.model_validate(content)
    except ValidationError as e:
        raise ModelError(f"{path}: {_error_text(e)}; the run directory is damaged or from another tool") from e
