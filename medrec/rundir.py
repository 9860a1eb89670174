"""The run directory: what ``medrec train`` writes and what scoring loads back.

Layout (all files written atomically)::

    RUN/
      config.yaml            resolved recipe (absolute paths, every default filled in)
      plan.json              preprocessing plan (also embedded in model.json)
      splits.csv             sample_id, patient_id, split
      manifest.csv, qc.csv   copies of the inputs, for provenance
      model.safetensors      best weights (never a pickle)
      model.json             architecture, plan, classes, threshold, calibration, versions,
                             data fingerprint; written last: its presence marks a complete run
                             (scoring with --tta later adds threshold_tta, the threshold chosen
                             on validation scored with TTA: medrec.score.operating_point);
                             its typed record, writer and reader: medrec.runinfo (re-exported here)
      checkpoint_last.safetensors / .json   last epoch's full state, for --resume
      metrics.jsonl          one line per epoch
      val_predictions.csv    calibrated validation probabilities of the kept weights
      train.log              plain-text log (counts and sample ids only, no PHI)
      cache/                 preprocessed samples (default cache_dir)

:func:`load_run` accepts only safetensors weights and JSON metadata.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from medrec.atomicio import append_line
from medrec.errors import ModelError, OutputError
from medrec.runinfo import MODEL_JSON as MODEL_JSON
from medrec.runinfo import MODEL_WEIGHTS as MODEL_WEIGHTS
from medrec.runinfo import RUN_FORMAT as RUN_FORMAT
from medrec.runinfo import Calibration
from medrec.runinfo import RunInfo as RunInfo
from medrec.runinfo import read_run_info as read_run_info
from medrec.runinfo import write_run_info as write_run_info
from medrec.thresholds import is_positive

if TYPE_CHECKING:
    from monai.transforms import Compose

CONFIG_YAML = "config.yaml"
PLAN_JSON = "plan.json"
SPLITS_CSV = "splits.csv"
METRICS_JSONL = "metrics.jsonl"
TRAIN_LOG = "train.log"
VAL_PREDICTIONS_CSV = "val_predictions.csv"
ANNOTATIONS_QC_CSV = "annotations_qc.csv"
CHECKPOINT_STEM = "checkpoint_last"
CACHE_DIR = "cache"
# Files whose presence means a run was started in the folder.
RUN_MARKERS: tuple[str, ...] = (MODEL_JSON, MODEL_WEIGHTS, CONFIG_YAML, METRICS_JSONL, f"{CHECKPOINT_STEM}.json")
# Weight formats that unpickle on load: refused wherever they appear instead of safetensors.
REFUSED_WEIGHT_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib", ".tar")


def is_complete(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds a finished run (``model.json`` written, weights present)."""
    folder = Path(run_dir)
    return (folder / MODEL_JSON).is_file() and (folder / MODEL_WEIGHTS).is_file()


def has_started(run_dir: str | Path) -> bool:
    """True when a training run has started writing into ``run_dir``."""
    folder = Path(run_dir)
    return any((folder / name).exists() for name in RUN_MARKERS)


def check_run_dir_for_training(run_dir: Path, resume: bool) -> str:
    """Decide what to do with ``run_dir``: ``"new"``, ``"resume"`` or ``"complete"``.

    Raises:
        OutputError: a run exists there and ``resume`` is False (never overwritten silently), or
            the path is a file.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"{run_dir}: exists and is not a folder; choose another -o")
    if is_complete(run_dir):
        if resume:
            return "complete"
        raise OutputError(
            f"{run_dir}: already holds a complete run (model.json); choose a new -o folder or delete this one"
        )
    if has_started(run_dir):
        if resume:
            return "resume"
        raise OutputError(
            f"{run_dir}: holds an unfinished run; pass --resume to continue it, or choose a new -o folder"
        )
    return "new"


class TrainLog:
    """``train.log``: timestamped plain-text lines, appended crash-safely (rank 0 only).

    Lines carry counts, metrics and at most sample ids: never patient names or ids.
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for line in str(message).splitlines() or [""]:
            append_line(self.path, f"{stamp} {line}")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide a run's numbers."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("medrec", "torch", "monai", "numpy", "pydicom", "nibabel", "safetensors", "scikit-learn", "scipy"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class ScoringRun(Protocol):
    """What scoring needs of a run: :class:`Run` has it, and so does a test's stand-in.

    Optional extras are looked up with ``getattr``: ``positive_class`` / ``positive_index``
    (:func:`positive_index_of`), ``threshold_source``, ``plan``, ``device`` and ``info``.
    """

    @property
    def model(self) -> torch.nn.Module: ...

    @property
    def classes(self) -> Sequence[str]: ...

    @property
    def threshold(self) -> float | None: ...

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities ``(B, n_classes)`` of a preprocessed batch."""
        ...

    def deterministic_transforms(self) -> Compose:
        """The preprocessing chain of training, without augmentation."""
        ...


class LoadedRun(ScoringRun, Protocol):
    """A run read from its directory (:func:`load_run`): what choosing a threshold on its validation split needs."""

    @property
    def run_dir(self) -> Path: ...

    info: RunInfo  # replaced (RunInfo is frozen) when scoring adds a threshold to model.json

    @property
    def positive_class(self) -> str | None: ...

    @property
    def plan(self) -> Any: ...

    @property
    def temperature(self) -> float: ...

    @property
    def device(self) -> torch.device: ...


@dataclass
class Run:
    """A trained model loaded from a run directory, ready to score (a :class:`LoadedRun`).

    Attributes:
        run_dir: the folder.
        model: the network in eval mode, with the best weights.
        info: the content of ``model.json`` (:class:`~medrec.runinfo.RunInfo`).
        plan: the preprocessing plan (``medrec.planning.Plan``).
        classes: class names in model-output order.
        positive_class: the positive class (binary) or None (multi-class: argmax).
        threshold: the operating threshold on the calibrated positive-class probability, or None.
        temperature: the calibration temperature (1.0 when calibration is off).
        device: where the model runs.
    """

    run_dir: Path
    model: torch.nn.Module
    info: RunInfo
    plan: Any
    classes: tuple[str, ...]
    positive_class: str | None
    threshold: float | None
    temperature: float
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def calibration(self) -> Calibration:
        return self.info.calibration or Calibration()

    @property
    def positive_index(self) -> int | None:
        return None if self.positive_class is None else self.classes.index(self.positive_class)

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @torch.no_grad()
    def predict_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw logits ``(B, n_classes)`` of a preprocessed ``(B, C, *spatial)`` batch (on CPU)."""
        inputs = torch.as_tensor(batch).as_subclass(torch.Tensor).float().to(self.device)
        logits: torch.Tensor = self.model(inputs)
        return logits.float().cpu()

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities ``(B, n_classes)`` (softmax of logits / temperature)."""
        return torch.softmax(self.predict_logits(batch).double() / self.temperature, dim=1).float()

    def decide(self, probabilities: torch.Tensor | np.ndarray) -> list[str]:
        """Predicted class names: ``score >= threshold`` (binary) or argmax (multi-class)."""
        probs = np.asarray(probabilities, dtype=np.float64)
        positive, threshold = self.positive_class, self.threshold
        if positive is not None and threshold is not None:
            negative = next(c for c in self.classes if c != positive)
            decided = is_positive(probs[:, self.classes.index(positive)], threshold)
            return [positive if p else negative for p in decided]
        return [self.classes[i] for i in probs.argmax(axis=1)]

    def deterministic_transforms(self, keys: tuple[str, ...] = ("image",)) -> Compose:
        """The plan's deterministic transform chain (starts with ``LoadSampled``), as used in training."""
        from medrec.transforms import build_transforms

        deterministic, _ = build_transforms(self.plan, keys=keys)
        return deterministic


def positive_index_of(run: ScoringRun) -> int | None:
    """Index of the positive class in the run's outputs (binary runs; None for multi-class).

    ``run.positive_index`` / ``run.positive_class`` when the run records them, else the second class.
    """
    classes = [str(name) for name in run.classes]
    if len(classes) != 2:
        return None
    index = getattr(run, "positive_index", None)
    positive = getattr(run, "positive_class", None)
    if index is None and positive is not None:
        index = classes.index(str(positive)) if str(positive) in classes else None
    return 1 if index is None else int(index)


def _require_model_json(folder: Path) -> None:
    """Say why a folder has no ``model.json``: a run still training, or no run at all."""
    if (folder / MODEL_JSON).is_file():
        return
    if has_started(folder):
        raise ModelError(
            f"{folder}: the run is not complete (no model.json); finish it with 'medrec train ... --resume'")
    raise ModelError(f"{folder}: not a medrec run directory (no model.json); train one with "
                     "'medrec train RECIPE -o RUN --manifest MANIFEST' or 'medrec run RECIPE'")


def _check_weight_files(folder: Path) -> Path:
    weights = folder / MODEL_WEIGHTS
    if not weights.is_file():
        refused = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in REFUSED_WEIGHT_SUFFIXES)
        if refused:
            raise ModelError(
                f"{folder / refused[0]}: refused: medrec loads only safetensors weights ({MODEL_WEIGHTS}), "
                "never pickle / torch.save files"
            )
        raise ModelError(f"{weights}: weights file missing; the run directory is incomplete")
    return weights


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a complete run directory for scoring.

    Args:
        run_dir: the folder written by ``medrec train``.
        device: where to put the model.

    Returns:
        The :class:`Run` (model in eval mode with the best weights).

    Raises:
        ModelError: not a complete run, weights that are not safetensors (refused), or weights that
            do not match ``model.json``.
    """
    from medrec.checkpoint import check_safetensors_file, load_safetensors
    from medrec.models import create_model
    from medrec.planning import Plan

    folder = Path(run_dir)
    if not folder.is_dir():
        raise ModelError(f"{folder}: run directory not found")
    _require_model_json(folder)
    weights_path = _check_weight_files(folder)  # pickles are refused before anything else is read
    info = read_run_info(folder)
    data = check_safetensors_file(weights_path)
    expected = info.weights.sha256
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise ModelError(
            f"{weights_path}: does not match model.json (sha256 differs); the weights were replaced after training"
        )
    architecture = info.architecture
    try:
        model = create_model(architecture.name, architecture.spatial_dims, architecture.in_channels,
                             architecture.num_classes, **architecture.options)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{folder / MODEL_JSON}: bad architecture entry ({e})") from e
    state = load_safetensors(weights_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{weights_path}: weights do not fit the architecture in model.json ({e})") from e
    target = torch.device(device)
    model.to(target).eval()
    try:
        plan = Plan.model_validate(info.plan)
    except ValueError as e:
        raise ModelError(f"{folder / MODEL_JSON}: the preprocessing plan does not validate ({e})") from e
    return Run(
        run_dir=folder.resolve(),
        model=model,
        info=info,
        plan=plan,
        classes=info.classes,
        positive_class=info.positive_class,
        threshold=info.threshold_value,
        temperature=info.temperature,
        device=target,
    )
