"""``medrec train``: from a config to a complete run directory.

Order of work (each step logged to ``train.log``):

1. check the run directory (a complete run is never overwritten; ``--resume`` continues one);
2. read the manifest, decide the classes, make or reuse the patient-level splits, audit leakage;
3. plan the preprocessing on the training split only, check the input against the memory budget;
4. preprocess training and validation samples once into the cache (the test split is never read);
5. train: AdamW, linear warm-up + cosine decay per step, class-weighted loss or balanced sampling,
   early stopping on validation AUC, best + last checkpoints every epoch;
6. reload the best weights, fit the temperature on validation logits, choose the operating
   threshold on the calibrated validation probabilities, and write ``model.json`` last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, WeightedRandomSampler

from medrec.atomicio import append_line, read_complete_lines, write_csv, write_text
from medrec.checkpoint import load_checkpoint, load_safetensors, save_checkpoint, save_weights
from medrec.config import TrainConfig, dump_config
from medrec.console import progress
from medrec.data.cache import SampleCache
from medrec.data.dataset import CachedImageDataset, SampleStore, ThreadPrefetcher, die_with_parent, fill_cache
from medrec.determinism import (
    capture_rng_state,
    derive_seed,
    enable_deterministic_mode,
    restore_rng_state,
    seed_everything,
)
from medrec.device import resolve_device
from medrec.errors import (
    AnnotationError,
    ConfigError,
    LeakageError,
    ManifestError,
    MedrecError,
    ModelError,
    OutputError,
    ResourceBudgetError,
)
from medrec.hashing import sha256_file, sha256_json
from medrec.manifest import MANIFEST_HASH_RULE, manifest_sha256, read_manifest
from medrec.models.registry import model_family
from medrec.rundir import (
    ANNOTATIONS_QC_CSV,
    CACHE_DIR,
    CHECKPOINT_STEM,
    CONFIG_YAML,
    METRICS_JSONL,
    MODEL_WEIGHTS,
    PLAN_JSON,
    RUN_FORMAT,
    SPLITS_CSV,
    TRAIN_LOG,
    VAL_PREDICTIONS_CSV,
    TrainLog,
    check_run_dir_for_training,
    library_versions,
)
from medrec.runinfo import (
    Architecture,
    Calibration,
    DataFingerprint,
    RunInfo,
    ThresholdEntry,
    WeightsRecord,
    read_run_info,
    write_run_info,
)
from medrec.thresholds import choose_threshold, sensitivity_specificity
from medrec.train.calibration import TemperatureFit, calibrated_probabilities, fit_temperature, negative_log_likelihood
from medrec.train.ddp import (
    DistributedContext,
    DistributedWeightedSampler,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    setup_distributed,
    teardown_distributed,
)
from medrec.train.evaluation import classification_auc, validation_summary
from medrec.train.findings import finding_loss
from medrec.train.setup import (
    LabelSpace,
    check_partition,
    check_splits_table,
    label_space,
    labelled_rows,
    partition,
)

# Config keys that may differ between a run and its --resume (they do not change the result).
RESUME_FREE_KEYS: frozenset[str] = frozenset({"training.device", "training.num_workers", "training.cache_dir"})

# training.patch_size auto: crops of PATCH_LESIONS times the largest annotated lesion, at least PATCH_MIN voxels.
PATCH_LESIONS = 3
PATCH_MIN = 48


@dataclass(frozen=True)
class RunResult:
    """What a ``train`` call produced.

    Attributes:
        run_dir: the run directory.
        complete: False only when stopped on purpose before the end (``interrupt_after_epoch``).
        best_epoch: epoch of the kept weights (1-based).
        epochs_completed: epochs trained in total.
        stopped_early: early stopping ended training.
        val_metrics: validation metrics of the kept weights (calibrated).
        threshold: the ``model.json`` threshold entry.
        calibration: the ``model.json`` calibration entry.
        classes: class names in model-output order.
        positive_class: binary positive class, or None.
        seconds: wall time of this call.
    """

    run_dir: Path
    complete: bool
    best_epoch: int
    epochs_completed: int
    stopped_early: bool
    val_metrics: dict[str, Any] = field(default_factory=dict)
    threshold: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    classes: tuple[str, ...] = ()
    positive_class: str | None = None
    seconds: float = 0.0


def train(
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    *,
    device: str | None = None,
    interrupt_after_epoch: int | None = None,
    show_progress: bool = True,
) -> RunResult:
    """Train a classifier and write a complete run directory.

    Under ``torchrun`` every rank calls this; rank 0 alone writes the run directory.

    Args:
        config: the validated recipe.
        run_dir: output folder (created; a complete run there is an error unless ``resume``).
        resume: continue an unfinished run from its last completed epoch (a complete run: no-op).
        device: overrides ``training.device`` (``auto``, ``cpu``, ``cuda``).
        interrupt_after_epoch: stop right after this epoch's checkpoint, leaving the run
            unfinished as if the process had been killed (for tests and time-boxed jobs).
        show_progress: show progress bars (rank 0).

    Returns:
        The :class:`RunResult`.

    Raises:
        ConfigError, InputError, LeakageError, OutputError, ResourceBudgetError: bad recipe, data
            or output folder, always before training starts where they can be detected.
    """
    started = time.perf_counter()
    target = resolve_device(device or config.training.device, "--device" if device else "training.device")
    context = setup_distributed(target.type)
    try:
        trainer = _Trainer(config, Path(run_dir).resolve(), resume, context, target, show_progress)
        result = trainer.run(interrupt_after_epoch)
    except BaseException:
        teardown_distributed(context, failed=True)
        raise
    teardown_distributed(context)
    return RunResult(**{**result.__dict__, "seconds": round(time.perf_counter() - started, 2)})


def _json_number(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def plan_hash(plan_data: dict[str, Any]) -> str:
    """sha256 of a plan's canonical JSON (keys sorted)."""
    return sha256_json(plan_data)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


class _NullProgress:
    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Trainer:
    """One training run: holds the pieces the steps share (kept private; use :func:`train`)."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        resume: bool,
        context: DistributedContext,
        target: torch.device,
        show_progress: bool,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.resume = resume
        self.context = context
        self.main = context.is_main
        if target.type == "cuda":  # under torchrun each rank takes the GPU of its local rank
            self.device = torch.device("cuda", context.local_rank) if context.world_size > 1 else target
        else:
            self.device = torch.device("cpu")
        self.show_progress = show_progress and self.main
        self.log = TrainLog(run_dir / TRAIN_LOG, enabled=self.main)

    # ------------------------------------------------------------------ steps before training

    def _on_main(self, action: Any) -> Any:
        """Run ``action`` on rank 0, share its result; an error there is raised on every rank."""
        outcome: Any = None
        if self.main:
            try:
                outcome = ("ok", action())
            except MedrecError as e:
                outcome = ("error", type(e).__name__, str(e))
                if not self.context.enabled:
                    raise
                broadcast_object(self.context, outcome)
                raise
        outcome = broadcast_object(self.context, outcome)
        if outcome[0] == "error":
            import medrec.errors as errors

            raise getattr(errors, outcome[1], MedrecError)(outcome[2])
        return outcome[1]

    def _resolved_config(self) -> TrainConfig:
        config = self.config
        return config.model_copy(
            update={
                "data": config.data.model_copy(update={"splits": self.run_dir / SPLITS_CSV}),
                "training": config.training.model_copy(update={"cache_dir": self.cache_dir}),
            }
        )

    @property
    def cache_dir(self) -> Path:
        return Path(self.config.training.cache_dir) if self.config.training.cache_dir else self.run_dir / CACHE_DIR

    def _create_run_dir(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(
                f"{self.run_dir}: cannot create the run directory ({e.strerror}: {e.filename}); "
                "choose a writable -o folder"
            ) from e

    def _check_config_unchanged(self) -> None:
        import yaml

        saved_path = self.run_dir / CONFIG_YAML
        if not saved_path.is_file():
            return
        saved = _flatten(yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {})
        current = _flatten(self._resolved_config().to_yaml_dict())
        changed = sorted(
            key for key in set(saved) | set(current)
            if key not in RESUME_FREE_KEYS and saved.get(key) != current.get(key)
        )
        if changed:
            raise ConfigError(
                f"{saved_path}: the config changed since this run started ({', '.join(changed)}); "
                "--resume needs the same config, or start a new run in another folder"
            )

    def _read_splits(self, rows: pd.DataFrame) -> pd.DataFrame:
        run_splits = self.run_dir / SPLITS_CSV
        configured = self.config.data.splits
        if self.resume and run_splits.is_file():
            source, frame = run_splits, pd.read_csv(run_splits, dtype=str, keep_default_na=False)
            self.log(f"splits: reusing {run_splits.name} of this run")
        elif configured is not None and Path(configured).is_file():
            source, frame = configured, pd.read_csv(configured, dtype=str, keep_default_na=False)
            self.log(f"splits: reusing {configured}")
        else:
            from medrec.split import make_splits

            split = self.config.split
            frame = make_splits(
                rows,
                val=split.val,
                test=split.test,
                folds=split.folds,
                stratify_by=list(split.stratify_by) if split.stratify_by else None,
                seed=split.seed,
            )
            source = "medrec.split.make_splits"
            self.log(f"splits: made with seed {split.seed} (val {split.val}, test {split.test}, folds {split.folds})")
        frame = check_splits_table(frame, str(source))
        frame = frame[frame["sample_id"].isin(set(rows["sample_id"]))]
        return frame.reset_index(drop=True)

    def _prepare_data(self) -> None:
        config = self.config
        manifest_path = Path(config.data.manifest)
        manifest = read_manifest(manifest_path)
        rows = labelled_rows(manifest, config.data.label_column)
        rows["sample_id"] = rows["sample_id"].astype(str)
        if rows["sample_id"].duplicated().any():
            raise ManifestError(f"{manifest_path}: sample ids are not unique; re-run 'medrec index'")
        self.log(f"manifest: {len(manifest)} samples, {len(rows)} labelled "
                 f"({len(manifest) - len(rows)} unlabelled not used)")
        self.space: LabelSpace = label_space(rows["label"], config.data.classes, config.data.positive_class)
        positive = self.space.positive_class or "(multi-class: argmax)"
        self.log(f"classes: {list(self.space.classes)}; positive class: {positive}")
        splits = self._read_splits(rows)
        self.parts = partition(splits, config.split.fold)
        self.labels = dict(zip(rows["sample_id"], rows["label"], strict=True))
        unassigned = len(rows) - len(splits)
        if unassigned:
            self.log(f"splits: {unassigned} labelled samples are in no split and are not used")
        check_partition(self.parts, self.labels, self.space)
        if set(self.parts["test"]) & (set(self.parts["train"]) | set(self.parts["val"])):
            raise LeakageError("a sample is both in test and in train/val; the splits table is inconsistent")
        self.splits = splits
        self.rows = rows
        self.manifest_path = manifest_path
        for name in ("train", "val", "test"):
            counts = pd.Series([self.labels[s] for s in self.parts[name]], dtype=object).value_counts().to_dict()
            self.log(f"split {name}: {len(self.parts[name])} samples {dict(sorted(counts.items()))}")

    def _write_inputs(self) -> None:
        """Audit leakage, then write splits, manifest copies and the resolved config (rank 0)."""
        from medrec.split import audit_leakage

        if not self.resume or not (self.run_dir / SPLITS_CSV).is_file():
            audit_leakage(self.rows, self.splits, check_pixels=self.config.split.check_pixels)
            self.log(f"leakage audit passed (pixel check: {'on' if self.config.split.check_pixels else 'off'})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_csv(self.run_dir / SPLITS_CSV, self.splits[["sample_id", "patient_id", "split"]])
        for name in ("manifest.csv", "qc.csv"):
            source = self.manifest_path if name == "manifest.csv" else self.manifest_path.parent / name
            if source.is_file() and not (self.run_dir / name).is_file():
                write_text(self.run_dir / name, source.read_text(encoding="utf-8"))
        header = "# resolved by medrec train: absolute paths, defaults filled in; preprocessing plan: plan.json\n"
        write_text(self.run_dir / CONFIG_YAML, header + dump_config(self._resolved_config()))

    def _plan(self) -> dict[str, Any]:
        """The preprocessing plan (made on the training split only) as JSON data (rank 0)."""
        plan_path = self.run_dir / PLAN_JSON
        if self.resume and plan_path.is_file():
            self.log("plan: reusing plan.json of this run")
            return json.loads(plan_path.read_text(encoding="utf-8"))["plan"]
        from medrec.loader import load_sample
        from medrec.planning import fingerprint, make_plan

        train_rows = self.rows[self.rows["sample_id"].isin(set(self.parts["train"]))]
        data_fingerprint = fingerprint(train_rows, sample_loader=load_sample, seed=self.config.training.seed)
        budget = "gpu" if self.device.type == "cuda" else "cpu"
        finding_size, finding_source = self._finding_size() if self.findings else (None, "")
        plan = make_plan(data_fingerprint, self.config.preprocessing, compute_budget=budget,
                         finding_size_mm=finding_size, finding_size_source=finding_source)
        data = plan.model_dump(mode="json")
        write_text(plan_path, json.dumps({"plan": data, "plan_hash": plan_hash(data)}, indent=1, default=str) + "\n")
        for reason in plan.reasons:
            self.log(f"plan: {reason}")
        return data

    def _check_budget(self, input_shape: tuple[int, ...]) -> None:
        budget = self.config.training.memory_budget_gb * 1024**3
        batch_bytes = self.config.training.batch_size * math.prod(input_shape) * 4
        if batch_bytes > budget:
            raise ResourceBudgetError(
                f"one batch of {self.config.training.batch_size} inputs of shape {list(input_shape)} needs "
                f"{batch_bytes / 1024**3:.2f} GiB > training.memory_budget_gb {self.config.training.memory_budget_gb}; "
                "lower training.batch_size or preprocessing.input_size, or raise the budget"
            )

    # ------------------------------------------------------------------ model and optimisation

    def _architecture(self, input_shape: tuple[int, ...]) -> dict[str, Any]:
        model_config, plan = self.config.model, self.plan
        kwargs: dict[str, Any] = dict(model_config.kwargs)
        spatial_dims = len(input_shape) - 1
        if model_config.spatial_dims is not None and model_config.spatial_dims != spatial_dims:
            if not (spatial_dims == 3 and model_config.spatial_dims == 2):
                raise ConfigError(
                    f"model.spatial_dims {model_config.spatial_dims} does not fit the {spatial_dims}D inputs of the "
                    "plan"
                )
        mode = model_config.mode or plan.mode
        if self.findings:
            # A finding-map model slices volumes itself (2.5D); its options are its own kwargs.
            if spatial_dims == 3:
                kwargs.setdefault("context", model_config.context or plan.slice_context or 1)
            mode = "2.5d" if spatial_dims == 3 else "2d"
        elif spatial_dims == 3 and (mode in ("2d", "2.5d") or model_config.spatial_dims == 2):
            mode = mode if mode in ("2d", "2.5d") else "2d"
            kwargs["slice_mode"] = mode
            kwargs["aggregation"] = model_config.aggregation
            kwargs["top_k"] = model_config.top_k
            if mode == "2.5d":
                kwargs["context"] = model_config.context or plan.slice_context or 1
        else:
            mode = "3d" if spatial_dims == 3 else "2d"
        return {
            "name": model_config.name,
            "spatial_dims": spatial_dims,
            "in_channels": int(input_shape[0]),
            "num_classes": len(self.space.classes),
            "mode": mode,
            "kwargs": kwargs,
        }

    def _build_model(self) -> torch.nn.Module:
        from medrec.models import create_model, load_pretrained

        arch = self.architecture
        model = create_model(
            arch["name"], arch["spatial_dims"], arch["in_channels"], arch["num_classes"], **arch["kwargs"])
        if self.config.model.pretrained is not None:
            missing, unexpected = load_pretrained(model, self.config.model.pretrained)
            self.log(f"pretrained weights: {len(missing)} missing and {len(unexpected)} unexpected keys")
        return model.to(self.device)

    def _lr_factor(self, step: int) -> float:
        warmup, total = self.warmup_steps, self.total_steps
        if step < warmup:
            return (step + 1) / warmup
        progress_fraction = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_fraction)))

    def _train_loader(self, epoch: int) -> DataLoader:
        if self.findings:
            return self._finding_loader(epoch)
        dataset, config = self.train_dataset, self.config.training
        dataset.set_epoch(epoch)
        seed = derive_seed(config.seed, epoch, 1)
        generator = torch.Generator().manual_seed(seed)
        labels = np.asarray(dataset.labels)
        if config.imbalance == "balanced_sampler":
            counts = np.bincount(labels, minlength=len(self.space.classes)).astype(np.float64)
            weights = 1.0 / counts[labels]
            if self.context.enabled:
                sampler = DistributedWeightedSampler(
                    weights, len(labels), self.context.rank, self.context.world_size, config.seed)
                sampler.set_epoch(epoch)
            else:
                sampler = WeightedRandomSampler(weights.tolist(), len(labels), replacement=True, generator=generator)
        elif self.context.enabled:
            sampler = DistributedSampler(
                dataset, num_replicas=self.context.world_size, rank=self.context.rank, shuffle=True, seed=config.seed
            )
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(dataset, generator=generator)
        return DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.num_workers,
            worker_init_fn=die_with_parent if config.num_workers else None,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(derive_seed(config.seed, epoch, 2)),
        )

    def _finding_loader(self, epoch: int) -> DataLoader:
        """Slice batches of a finding-map model: ``steps_per_epoch`` batches drawn for ``epoch``."""
        config = self.config.training
        self.finding_dataset.set_epoch(epoch)
        label_only = self.finding_targets.label_only
        store = self.finding_dataset.store
        mil_start = max(2, int(config.mil_start * config.epochs) + 1)
        mil = bool(label_only) and config.mil_fraction > 0 and epoch >= mil_start and epoch != self._top_slices_epoch
        negatives = set(self.finding_targets.negatives)
        refreshed: dict[str, Any] = {}
        if (config.hard_fraction > 0 or mil) and epoch >= 2 and epoch != self._hard_slices_epoch:
            from medrec.train.findings import top_slice_scores

            refresh = self.finding_dataset.hard_refresh(epoch)
            if config.hard_fraction == 0:  # only MIL's gate needs them: the lesion-free studies
                refresh = [s for s in refresh if s in negatives]
            refreshed = top_slice_scores(self.model, store, refresh)
            if config.hard_fraction > 0:
                self.finding_dataset.set_hard_slices(refreshed)
                self.log(f"epoch {epoch}: hard slices of {len(refresh)} studies re-examined")
            self._hard_slices_epoch = epoch
        if mil:
            from medrec.train.findings import gated_top_slices, top_slice_scores

            lesion_free = [top.score for s, top in refreshed.items() if s in negatives]
            chosen = gated_top_slices(top_slice_scores(self.model, store, label_only), lesion_free, config.mil_gate)
            self.finding_dataset.set_top_slices(chosen)
            self._top_slices_epoch = epoch
            self.log(f"epoch {epoch}: MIL on the top slices of {len(chosen)} of {len(label_only)} positives without "
                     f"annotation (those above the {config.mil_gate:g} quantile of {len(lesion_free)} lesion-free "
                     "studies' highest logits)")
        return DataLoader(
            self.finding_dataset,
            batch_size=config.batch_size,
            shuffle=False,
            num_workers=config.num_workers,
            worker_init_fn=die_with_parent if config.num_workers else None,
            pin_memory=self.device.type == "cuda",
        )

    def _read_annotations(self) -> Any:
        """The lesion annotations a finding-map model learns from (every rank reads them)."""
        from medrec.annotations import read_annotations

        data = self.config.data
        if data.lesions is None and data.masks is None:
            raise ConfigError(
                f"model {self.config.model.name} learns where findings are: give lesion annotations "
                "(data.lesions: a lesion table, or data.masks: a CSV with a mask column)"
            )
        annotations = read_annotations(
            self.rows, lesions=data.lesions, masks=data.masks,
            label_positive=lambda label: str(label) == str(self.space.positive_class),
        )
        self.log(annotations.summary())
        return annotations

    def _training_lesion_diameters(self) -> tuple[list[float], int]:
        """Diameters (mm) of the training split's annotated lesions, and how many came from masks.

        Lesion-table rows give their diameters; each connected component of a training mask counts
        as a lesion of its equivalent-sphere diameter. An unreadable mask is skipped here (its
        problem is recorded when the targets are built).
        """
        if self._lesion_diameters is not None:
            return self._lesion_diameters
        from medrec.annotations import mask_lesion_diameters

        train = set(self.parts["train"])
        diameters = [lesion.diameter_mm for sample_id, lesions in self.annotations.lesions.items()
                     if sample_id in train for lesion in lesions]
        from_masks = 0
        for sample_id, path in self.annotations.masks.items():
            if sample_id in train and path is not None and sample_id in self.annotations.positives:
                try:
                    found = mask_lesion_diameters(path)
                except AnnotationError:
                    continue
                diameters.extend(found)
                from_masks += len(found)
        self._lesion_diameters = (diameters, from_masks)
        return self._lesion_diameters

    def _finding_size(self) -> tuple[float | None, str]:
        """The smallest annotated lesion of the training split (5th percentile of diameters), for the plan."""
        diameters, from_masks = self._training_lesion_diameters()
        if not diameters:
            return None, ""
        size = round(float(np.percentile(diameters, 5)), 2)
        masked = f", {from_masks} of them mask components" if from_masks else ""
        return size, f"5th percentile of {len(diameters)} annotated training lesions{masked}"

    def _patch_size(self) -> int | None:
        """The in-plane size of the training crops (``training.patch_size``, ``auto`` resolved)."""
        setting = self.config.training.patch_size
        if setting != "auto":
            if setting is not None:
                self.log(f"training crops: {setting} voxels in-plane (training.patch_size)")
            return setting
        diameters, _ = self._training_lesion_diameters()
        spacing = min(float(value) for value in self.plan.spacing[:2])
        largest = float(np.percentile(diameters, 95)) if diameters else 0.0
        size = max(PATCH_MIN, int(math.ceil(PATCH_LESIONS * largest / spacing / 16.0)) * 16)
        self.log(f"training crops: {size} voxels in-plane (auto: {PATCH_LESIONS} x the largest annotated "
                 f"lesion, 95th percentile {largest:.1f} mm, at {spacing:g} mm; at least {PATCH_MIN})")
        return size

    def _finding_setup(self, store: SampleStore) -> None:
        """Rasterise the training targets and build the slice dataset."""
        from medrec.annotations import write_problems
        from medrec.train.findings import FindingSliceDataset, build_targets, mask_function, positive_checker

        annotations = self.annotations
        is_positive = positive_checker(self.labels, self.space.positive_class)
        targets = build_targets(store, self.parts["train"], is_positive, mask_function(annotations))
        self.log(targets.summary())
        if self.main:
            write_problems(self.run_dir / ANNOTATIONS_QC_CSV, annotations)
        config = self.config.training
        context = int(self.architecture["kwargs"].get("context", 0)) if self.architecture["spatial_dims"] == 3 else 0
        patch_size = self._patch_size()
        self.finding_dataset = FindingSliceDataset(
            store, targets, context, config.steps_per_epoch * config.batch_size, config.foreground_fraction,
            config.seed, rank=self.context.rank, flips=self.plan.augment is not None,
            mil_fraction=config.mil_fraction if targets.label_only else 0.0, hard_fraction=config.hard_fraction,
            patch_size=patch_size, paste_fraction=config.paste_fraction,
        )
        if config.paste_fraction > 0:
            self.log(f"lesion copy-paste: {len(self.finding_dataset.pieces)} annotated lesions cut out, "
                     f"{config.paste_fraction:.0%} of the items are a study with one of them pasted in")
        self.finding_targets = targets
        self.lesion_weight, why = targets.lesion_weight(config.lesion_weight, patch_size)
        self.log(f"lesion voxels weighted {self.lesion_weight:g} in the loss ({why})")
        # A label-only top slice counts as a slice with an annotated lesion of the cohort's size.
        self.mil_weight = round(targets.lesion_fraction(patch_size) * self.lesion_weight, 6)
        if targets.label_only and config.mil_fraction > 0:
            self.log(f"MIL term weighted {self.mil_weight:g} (the share of its slice an annotated lesion takes, "
                     "times the lesion weight)")
        self._top_slices_epoch = 0
        self._hard_slices_epoch = 0

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _train_epoch(self, epoch: int, bar: Any, task: int) -> dict[str, float]:
        started = time.perf_counter()
        loader = self._train_loader(epoch)
        self.ddp_model.train()
        loss_sum, count, waited = 0.0, 0, 0.0
        # Without worker processes, a thread prepares the next batch (augmentation) during this step.
        prefetch = loader.num_workers == 0
        batches: Iterator = ThreadPrefetcher(loader) if prefetch else iter(loader)
        with batches if prefetch else contextlib.nullcontext():
            while True:
                wait_started = time.perf_counter()
                batch = next(batches, None)
                waited += time.perf_counter() - wait_started
                if batch is None:
                    break
                loss_sum, count = self._train_step(batch, loss_sum, count)
                bar.update(task, advance=1, status=f"loss {loss_sum / max(count, 1):.4f}")
        loss_sum, count, waited = all_reduce_sum(self.context, [loss_sum, float(count), waited])
        seconds = time.perf_counter() - started
        return {
            "train_loss": loss_sum / max(count, 1.0),
            "train_seconds": seconds,
            "data_wait_seconds": waited / self.context.world_size,
        }

    def _train_step(self, batch: Any, loss_sum: float, count: int) -> tuple[float, int]:
        """One optimisation step on ``batch``; returns the running loss sum and sample count."""
        images, labels, _ = batch
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.ddp_model(images, dense=True) if self.findings else self.ddp_model(images)
        # Finding-map models: ``labels`` holds the slices' voxel targets.
        loss = (finding_loss(logits.float(), labels, self.lesion_weight, self.mil_weight) if self.findings
                else self.criterion(logits.float(), labels))
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        return loss_sum + float(loss.detach()) * len(labels), count + len(labels)

    @torch.no_grad()
    def _validation_logits(self, sharded: bool) -> np.ndarray:
        """Validation logits in ``val`` order; each rank scores its shard when ``sharded``."""
        model = self.model.eval()
        positions = list(range(len(self.val_dataset)))
        if sharded and self.context.enabled:
            positions = positions[self.context.rank :: self.context.world_size]
        outputs: list[tuple[int, list[float]]] = []
        for start in range(0, len(positions), self.config.training.batch_size):
            chunk = positions[start : start + self.config.training.batch_size]
            images = torch.stack([self.val_dataset[i][0] for i in chunk]).to(self.device)
            with self._autocast():
                logits = model(images).float().cpu().numpy()
            outputs.extend(zip(chunk, logits.astype(np.float64).tolist(), strict=True))
        if sharded and self.context.enabled:
            outputs = [item for part in all_gather_objects(self.context, outputs) for item in part]
        ordered = sorted(outputs, key=lambda item: item[0])
        return np.asarray([logits for _, logits in ordered], dtype=np.float64)

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint_state(self, epoch: int, record: dict[str, Any]) -> dict[str, Any]:
        rng_tensors, rng_scalars = capture_rng_state()
        scheduler_state = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler_state,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_tensors,
            "rng_scalars": rng_scalars,
            "loop": dict(self.loop),
            "metrics": record,
            "world_size": self.context.world_size,
            "plan_hash": self.plan_hash,
            "sampler": {"seed": self.config.training.seed, "rule": "generator seeded per epoch from (seed, epoch)"},
        }

    def _restore(self) -> int:
        state = load_checkpoint(self.run_dir / CHECKPOINT_STEM)
        if state.get("plan_hash") != self.plan_hash:
            raise ModelError(f"{self.run_dir}: the checkpoint was made with another preprocessing plan; cannot resume")
        if state.get("world_size") != self.context.world_size:
            raise ConfigError(
                f"{self.run_dir}: the run was started with {state.get('world_size')} process(es), now "
                f"{self.context.world_size}; resume with the same number to get the same result"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None]})
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"], state["rng_scalars"])
        self.loop = dict(state["loop"])
        epoch = int(state["epoch"])
        if self.main:
            metrics_path = self.run_dir / METRICS_JSONL
            kept = [line for line in read_complete_lines(metrics_path) if json.loads(line)["epoch"] <= epoch]
            if not any(json.loads(line)["epoch"] == epoch for line in kept):
                kept.append(json.dumps(state["metrics"]))
            write_text(metrics_path, "".join(line + "\n" for line in kept))
        self.log(f"resumed after epoch {epoch} (best epoch so far {self.loop['best_epoch']})")
        return epoch

    # ------------------------------------------------------------------ the run

    def run(self, interrupt_after_epoch: int | None) -> RunResult:
        config = self.config
        state = check_run_dir_for_training(self.run_dir, self.resume)
        if state == "complete":
            return _result_from_run(self.run_dir)
        self.resume = state == "resume"
        if self.resume:
            self._check_config_unchanged()
        self._on_main(self._create_run_dir)
        barrier(self.context)
        self.log(
            f"medrec train: {'resuming' if self.resume else 'starting'} on {self.device.type}"
            + (f" with {self.context.world_size} processes" if self.context.enabled else "")
        )
        if config.training.deterministic:
            enable_deterministic_mode()
        self._prepare_data()
        self.findings = model_family(config.model.name) == "finding-map"
        self.annotations = self._read_annotations() if self.findings else None
        self._lesion_diameters: tuple[list[float], int] | None = None
        self._on_main(self._write_inputs)
        from medrec.planning import Plan
        from medrec.transforms import build_transforms

        plan_data = self._on_main(self._plan)
        self.plan = Plan.model_validate(plan_data)
        self.plan_hash = plan_hash(plan_data)
        self._check_budget((1, *self.plan.input_size))
        # Finding-map targets are placed through each cached image's affine.
        deterministic, augment = build_transforms(self.plan, track_meta=self.findings)

        # Preprocess train + val once (never test); rank 0 fills the cache, the others read it.
        needed = self.parts["train"] + self.parts["val"]
        if set(needed) & set(self.parts["test"]):
            raise LeakageError("internal: a test sample was about to be preprocessed for training")
        cache = SampleCache(self.cache_dir, self.plan_hash)
        rows_by_id = {row["sample_id"]: row for row in self.rows.to_dict("records")}

        def fill() -> int:
            with self._progress() as bar:
                task = bar.add_task("Preprocessing", total=len(needed), status="")
                self._computed = fill_cache(
                    [rows_by_id[s] for s in needed], deterministic, cache, config.training.num_workers,
                    on_sample=lambda _: bar.advance(task),
                )
            return len(self._computed)

        self._computed: dict = {}
        fresh = self._on_main(fill)
        self.log(f"cache: {len(needed) - fresh} samples cached, {fresh} preprocessed into {self.cache_dir}")
        store = SampleStore(cache, needed, config.training.memory_budget_gb * 1024**3, preloaded=self._computed)
        del self._computed
        shapes = {tuple(store.get(s).array.shape) for s in needed}
        if len(shapes) != 1:
            raise ModelError(
                f"preprocessed samples differ in shape ({sorted(shapes)[:3]}); the plan must fix input_size")
        input_shape = shapes.pop()
        self._check_budget(input_shape)

        index_of = self.space.index_of
        self.train_dataset = CachedImageDataset(
            store, self.parts["train"], [index_of(self.labels[s]) for s in self.parts["train"]], augment,
            config.training.seed,
        )
        self.val_dataset = CachedImageDataset(
            store, self.parts["val"], [index_of(self.labels[s]) for s in self.parts["val"]])
        val_labels = np.asarray(self.val_dataset.labels)

        # Model, optimiser, schedule.
        seed_everything(config.training.seed)
        self.architecture = self._architecture(input_shape)
        self.model = self._build_model()
        if self.findings:
            self._finding_setup(store)
        self.ddp_model = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.context.enabled
            else self.model
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.training.lr, weight_decay=config.training.weight_decay
        )
        steps_per_epoch = len(self._train_loader(1))
        self.total_steps = steps_per_epoch * config.training.epochs
        self.warmup_steps = steps_per_epoch * config.training.warmup_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.amp_dtype = None
        self.scaler = None
        if self.device.type == "cuda" and config.training.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            if self.amp_dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")
        weight = None
        if config.training.imbalance == "weighted_loss" and not self.findings:  # finding maps: voxel targets
            counts = np.bincount(self.train_dataset.labels, minlength=len(self.space.classes)).astype(np.float64)
            weight = torch.tensor(
                len(self.train_dataset) / (len(counts) * counts), dtype=torch.float32, device=self.device)
            self.log("class weights: " + ", ".join(
                f"{c} {w:.3f}" for c, w in zip(self.space.classes, weight.tolist(), strict=True)))
        self.criterion = torch.nn.CrossEntropyLoss(weight=weight)
        self.loop: dict[str, Any] = {
            "best_auc": None, "best_loss": None, "best_epoch": 0, "epochs_without_improvement": 0,
            "stopped_early": False,
        }

        start_epoch = 1
        if self.resume and (self.run_dir / f"{CHECKPOINT_STEM}.json").is_file():
            start_epoch = self._restore() + 1
        elif self.resume:
            self.log("--resume: no completed epoch yet; starting from epoch 1")
        self.log(
            f"model {self.architecture['name']} ({self.architecture['mode']}, input {list(input_shape)}), "
            f"{sum(p.numel() for p in self.model.parameters())} parameters; {steps_per_epoch} steps per epoch"
        )

        with self._progress() as bar:
            epochs_completed = start_epoch - 1
            for epoch in range(start_epoch, config.training.epochs + 1):
                if self.loop["stopped_early"]:  # a resumed run that had already stopped
                    break
                task = bar.add_task(f"Epoch {epoch}/{config.training.epochs}", total=steps_per_epoch, status="")
                epoch_started = time.perf_counter()
                train_stats = self._train_epoch(epoch, bar, task)
                summary = validation_summary(
                    self._validation_logits(sharded=True), val_labels, self.space.positive_index)
                improved = self._update_best(summary, epoch)
                if improved and self.main:
                    save_weights(self.run_dir / MODEL_WEIGHTS, self.model.state_dict())
                seconds = time.perf_counter() - epoch_started
                record = {
                    "epoch": epoch,
                    "train_loss": round(train_stats["train_loss"], 6),
                    "val_loss": round(summary["loss"], 6),
                    "val_auc": _json_number(round(summary["auc"], 6)),
                    "val_accuracy": round(summary["accuracy"], 6),
                    **({"val_auc_mean": _json_number(round(summary["selection_auc"], 6))}
                       if config.training.selection_window > 1 else {}),
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "seconds": round(seconds, 3),
                    "train_seconds": round(train_stats["train_seconds"], 3),
                    "data_wait_seconds": round(train_stats["data_wait_seconds"], 3),
                    # Time the loop waited for the next batch / the training pass (validation excluded):
                    # above ~0.1 the model is starved by data loading or augmentation.
                    "data_wait_fraction": round(
                        train_stats["data_wait_seconds"] / max(train_stats["train_seconds"], 1e-9), 4
                    ),
                    "best": improved,
                }
                if self.main:
                    save_checkpoint(self.run_dir / CHECKPOINT_STEM, self._checkpoint_state(epoch, record))
                    append_line(self.run_dir / METRICS_JSONL, json.dumps(record))
                self.log(
                    f"epoch {epoch}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
                    f"val AUC {summary['auc']:.4f}"
                    + (f" (mean of the last {config.training.selection_window} {summary['selection_auc']:.4f})"
                       if config.training.selection_window > 1 else "")
                    + f"{' (best)' if improved else ''}, {seconds:.1f} s "
                    f"(training pass {record['train_seconds']:.1f} s, "
                    f"waiting for data {record['data_wait_fraction']:.0%})"
                )
                bar.update(task, status=f"loss {record['train_loss']:.4f} | val AUC {summary['auc']:.3f}")
                barrier(self.context)
                epochs_completed = epoch
                if self.loop["stopped_early"]:
                    self.log(f"early stop: no better validation AUC for {config.training.patience} epochs")
                    break
                if interrupt_after_epoch is not None and interrupt_after_epoch <= epoch < config.training.epochs:
                    self.log(f"stopped after epoch {epoch} on request; continue with --resume")
                    return RunResult(self.run_dir, False, self.loop["best_epoch"], epoch, False,
                                     classes=self.space.classes, positive_class=self.space.positive_class)
        result = self._on_main(lambda: self._finalise(val_labels, epochs_completed))
        barrier(self.context)
        return result

    def _update_best(self, summary: dict[str, float], epoch: int) -> bool:
        """Whether this epoch's weights are the best so far (by the validation AUC, or its trailing
        mean over ``training.selection_window`` epochs); updates the early-stopping state."""
        loop, patience = self.loop, self.config.training.patience
        auc, loss = summary["auc"], summary["loss"]
        window = self.config.training.selection_window
        if window > 1:
            recent = [*loop.get("recent_aucs", []), auc][-window:]
            loop["recent_aucs"] = recent
            auc = float(np.mean(recent)) if all(math.isfinite(v) for v in recent) else math.nan
        summary["selection_auc"] = auc
        best_auc = -math.inf if loop["best_auc"] is None else loop["best_auc"]
        best_loss = math.inf if loop["best_loss"] is None else loop["best_loss"]
        auc_value = -math.inf if not math.isfinite(auc) else auc
        # Higher AUC wins; an equal AUC (common on small validation sets) is broken by lower loss.
        improved = loop["best_epoch"] == 0 or auc_value > best_auc or (auc_value == best_auc and loss < best_loss)
        if improved:
            loop.update(best_auc=auc_value if math.isfinite(auc_value) else None, best_loss=loss,
                        epochs_without_improvement=0)
            loop["best_epoch"] = epoch
        else:
            loop["epochs_without_improvement"] += 1
            if patience is not None and loop["epochs_without_improvement"] >= patience:
                loop["stopped_early"] = True
        return improved

    def _progress(self) -> contextlib.AbstractContextManager:
        if self.show_progress:
            return progress()
        return contextlib.nullcontext(_NullProgress())

    # ------------------------------------------------------------------ after training

    def _finalise(self, val_labels: np.ndarray, epochs_completed: int) -> RunResult:
        config, space = self.config, self.space
        self.model.load_state_dict(load_safetensors(self.run_dir / MODEL_WEIGHTS))
        logits = self._validation_logits(sharded=False)
        if config.calibration.method == "temperature":
            fit = fit_temperature(logits, val_labels)
        else:
            nll = negative_log_likelihood(logits, val_labels)
            fit = TemperatureFit(1.0, nll, nll, method="none")
        probabilities = calibrated_probabilities(logits, fit.temperature)
        predicted = probabilities.argmax(axis=1)
        val_metrics: dict[str, Any] = {
            "n": int(len(val_labels)),
            "auc": _json_number(classification_auc(val_labels, probabilities, space.positive_index)),
            "nll_uncalibrated": fit.nll_before,
            "nll_calibrated": fit.nll_after,
            "accuracy_argmax": float((predicted == val_labels).mean()),
        }
        if space.binary:
            positive = val_labels == space.positive_index
            scores = probabilities[:, space.positive_index]
            choice = choose_threshold(positive, scores, config.threshold.rule)
            sensitivity, specificity = sensitivity_specificity(positive, scores, choice.value)
            threshold = {
                "value": choice.value,
                "method": choice.method,
                "chosen_on": "validation",
                "val_sensitivity": sensitivity,
                "val_specificity": specificity,
                "applies_to": f"calibrated probability of {space.positive_class!r}",
                "rule": "positive if score >= value",
            }
            val_metrics.update(
                sensitivity=sensitivity, specificity=specificity,
                accuracy=float(((scores >= choice.value) == positive).mean()),
            )
            self.log(
                f"threshold {choice.value:.4f} ({choice.method}, chosen on validation, calibrated probabilities): "
                f"sensitivity {sensitivity:.3f}, specificity {specificity:.3f}"
            )
        else:
            threshold = {
                "value": None,
                "method": "argmax",
                "chosen_on": None,
                "note": "multi-class: the predicted class is the argmax of the calibrated probabilities; no threshold",
            }
            self.log("multi-class task: predictions are the argmax of the calibrated probabilities (no threshold)")
        self.log(fit.summary())
        self._write_val_predictions(probabilities, val_labels)
        weights_sha = sha256_file(self.run_dir / MODEL_WEIGHTS)
        architecture = {k: v for k, v in self.architecture.items() if k != "mode"}
        info = RunInfo(
            format=RUN_FORMAT,
            architecture=Architecture.model_validate(architecture),
            mode=self.architecture["mode"],
            input_shape=tuple(self.val_dataset.store.get(self.parts["val"][0]).array.shape),
            weights=WeightsRecord(file=MODEL_WEIGHTS, sha256=weights_sha),
            plan=self.plan.model_dump(mode="json"),
            plan_hash=self.plan_hash,
            classes=tuple(space.classes),
            positive_class=space.positive_class,
            task="binary" if space.binary else "multiclass",
            threshold=ThresholdEntry.model_validate(threshold),
            calibration=Calibration.model_validate(fit.to_dict()),
            versions=library_versions(),
            data_fingerprint=self._data_fingerprint(),
            seed=config.training.seed,
            best_epoch=self.loop["best_epoch"],
            epochs_completed=epochs_completed,
            stopped_early=bool(self.loop["stopped_early"]),
            val_metrics=val_metrics,
            device=self.device.type,
            world_size=self.context.world_size,
        )
        write_run_info(self.run_dir, info)
        self.log(f"done: best epoch {self.loop['best_epoch']} of {epochs_completed}; run written to {self.run_dir}")
        return RunResult(
            self.run_dir, True, self.loop["best_epoch"], epochs_completed, bool(self.loop["stopped_early"]),
            val_metrics, threshold, fit.to_dict(), space.classes, space.positive_class,
        )

    def _write_val_predictions(self, probabilities: np.ndarray, val_labels: np.ndarray) -> None:
        """Calibrated validation probabilities of the kept weights (what threshold and T were fitted on)."""
        space = self.space
        frame = pd.DataFrame({"sample_id": self.parts["val"], "label": [space.classes[i] for i in val_labels]})
        if space.binary:
            frame["score"] = probabilities[:, space.positive_index]
        else:
            for index, name in enumerate(space.classes):
                frame[f"score_{name}"] = probabilities[:, index]
        write_csv(self.run_dir / VAL_PREDICTIONS_CSV, frame)

    def _data_fingerprint(self) -> DataFingerprint:
        digest = hashlib.sha256()
        split_of = dict(zip(self.splits["sample_id"], self.splits["split"], strict=True))
        for sample_id in sorted(split_of):
            digest.update(f"{sample_id}\t{self.labels[sample_id]}\t{split_of[sample_id]}\n".encode())
        return DataFingerprint(
            samples_sha256=digest.hexdigest(),
            samples_rule="sha256 over sorted 'sample_id<TAB>label<TAB>split' lines",
            manifest_sha256=manifest_sha256(self.manifest_path),
            n_train=len(self.parts["train"]),
            n_val=len(self.parts["val"]),
            n_test=len(self.parts["test"]),
            manifest_rule=MANIFEST_HASH_RULE,
            planning_fingerprint=self.plan.fingerprint,
        )


def _result_from_run(run_dir: Path) -> RunResult:
    info = read_run_info(run_dir)
    return RunResult(
        run_dir=run_dir,
        complete=True,
        best_epoch=info.best_epoch or 0,
        epochs_completed=info.epochs_completed or 0,
        stopped_early=bool(info.stopped_early),
        val_metrics=dict(info.val_metrics or {}),
        threshold=None if info.threshold is None else info.threshold.to_json(),
        calibration=None if info.calibration is None else info.calibration.to_json(),
        classes=info.classes,
        positive_class=info.positive_class,
    )
