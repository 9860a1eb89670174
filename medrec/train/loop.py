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
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from medrec.annotations import write_problems
from medrec.atomicio import append_line
from medrec.checkpoint import load_safetensors, save_checkpoint, save_weights
from medrec.config import TrainConfig
from medrec.console import progress_bars
from medrec.data.dataset import CachedImageDataset
from medrec.determinism import enable_deterministic_mode, seed_everything
from medrec.device import resolve_device
from medrec.errors import ConfigError, OutputError
from medrec.models.registry import model_family
from medrec.planning import Plan
from medrec.rundir import (
    ANNOTATIONS_QC_CSV,
    CHECKPOINT_STEM,
    METRICS_JSONL,
    MODEL_WEIGHTS,
    TRAIN_LOG,
    TrainLog,
    check_run_dir_for_training,
)
from medrec.train.anomaly import AnomalyTraining, SyntheticValidation
from medrec.train.checkpointing import checkpoint_state, restore_checkpoint
from medrec.train.ddp import (
    DistributedContext,
    barrier,
    on_main,
    setup_distributed,
    teardown_distributed,
)
from medrec.train.early_stopping import EarlyStopping
from medrec.train.evaluation import validation_logits, validation_summary
from medrec.train.finalise import TrainedModel, finalise, json_number
from medrec.train.finding_setup import (
    FindingTraining,
    finding_size,
    read_training_annotations,
    training_lesion_diameters,
)
from medrec.train.inputs import (
    TrainingData,
    cache_dir,
    check_config_unchanged,
    prepare_training_data,
    write_inputs,
)
from medrec.train.loaders import classifier_loader, epoch_pass, finding_loader
from medrec.train.model_setup import architecture, build_model
from medrec.train.optimisation import Optimisation, build_optimisation, class_weights
from medrec.train.preprocess import cache_samples, check_budget, make_run_plan, plan_hash
from medrec.train.result import RunResult, result_from_run
from medrec.transforms import build_transforms


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
        device: overrides ``training.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
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


@dataclass
class _Session:
    """What the epochs work on, built once by :meth:`_Trainer._setup`."""

    data: TrainingData
    plan: Plan
    plan_hash: str
    input_shape: tuple[int, ...]
    architecture: dict[str, Any]
    model: torch.nn.Module
    ddp_model: torch.nn.Module
    optimisation: Optimisation
    stopping: EarlyStopping
    train_dataset: CachedImageDataset
    val_dataset: CachedImageDataset | SyntheticValidation
    findings: FindingTraining | AnomalyTraining | None

    @property
    def val_labels(self) -> np.ndarray:
        return np.asarray(self.val_dataset.labels)


class _Trainer:
    """One training run: the steps of :func:`train` (kept private; use :func:`train`)."""

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

    def run(self, interrupt_after_epoch: int | None) -> RunResult:
        """Check the run directory, set up, train the epochs, then calibrate and write the run."""
        state = check_run_dir_for_training(self.run_dir, self.resume)
        if state == "complete":
            return result_from_run(self.run_dir)
        self.resume = state == "resume"
        if self.resume:
            check_config_unchanged(self.config, self.run_dir)
        self._on_main(self._create_run_dir)
        barrier(self.context)
        self.log(
            f"medrec train: {'resuming' if self.resume else 'starting'} on {self.device.type}"
            + (f" with {self.context.world_size} processes" if self.context.enabled else "")
        )
        if self.config.training.deterministic:
            enable_deterministic_mode()
        session = self._setup()
        start_epoch = self._start_epoch(session)
        epochs_completed, finished = self._fit(session, start_epoch, interrupt_after_epoch)
        if not finished:
            return RunResult(self.run_dir, False, session.stopping.best_epoch, epochs_completed, False,
                             classes=session.data.space.classes, positive_class=session.data.space.positive_class)
        result = self._on_main(lambda: self._finalise(session, epochs_completed))
        barrier(self.context)
        return result

    # ------------------------------------------------------------------ before the epochs

    def _on_main(self, action: Callable[[], Any]) -> Any:
        return on_main(self.context, action)

    def _create_run_dir(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(
                f"{self.run_dir}: cannot create the run directory ({e.strerror}: {e.filename}); "
                "choose a writable -o folder"
            ) from e

    def _setup(self) -> _Session:
        """Data and splits, plan, cached samples, datasets, model and optimisation."""
        config, log = self.config, self.log
        data = prepare_training_data(config, self.run_dir, self.resume, log)
        findings = model_family(config.model.name) == "finding-map"
        anomaly = config.task == "anomaly"
        if anomaly and not findings:
            raise ConfigError(f"task: anomaly learns a voxel map of what departs from normal: model.name must be a "
                              f"finding-map model (finding_fcn), not {config.model.name}")
        annotated = findings and not anomaly
        annotations = read_training_annotations(config, data, log) if annotated else None
        diameters, from_masks = training_lesion_diameters(annotations, data.parts["train"]) if annotated else ([], 0)
        self._on_main(lambda: write_inputs(config, self.run_dir, self.resume, data, log))
        size = finding_size(diameters, from_masks) if annotated else (None, "")
        if anomaly:
            size = (config.training.anomaly_diameter_mm[0], "the smallest synthetic anomaly (anomaly_diameter_mm)")
        plan_data = self._on_main(
            lambda: make_run_plan(config, self.run_dir, self.resume, data, self.device, size, log))
        plan = Plan.model_validate(plan_data)
        check_budget(config, (1, *plan.input_size))
        # Finding-map targets are placed through each cached image's affine.
        deterministic, augment = build_transforms(plan, track_meta=findings)
        store, input_shape = cache_samples(config, data, plan, deterministic, cache_dir(config, self.run_dir),
                                           self._on_main, self._progress, log)
        index_of = data.space.index_of
        train_dataset, val_dataset = (
            CachedImageDataset(store, data.parts[name], [index_of(data.labels[s]) for s in data.parts[name]],
                               augment if name == "train" else None, config.training.seed)
            for name in ("train", "val"))

        seed_everything(config.training.seed)
        arch = architecture(config, plan, input_shape, len(data.space.classes), findings, data.space.positive_index)
        model = build_model(arch, config, self.device, log)
        finding_training: FindingTraining | AnomalyTraining | None = None
        if findings:
            context = int(arch["kwargs"].get("context", 0)) if arch["spatial_dims"] == 3 else 0
            if anomaly:
                finding_training = AnomalyTraining(config, data, plan, store, context, self.context.rank, log)
                positive = data.space.positive_index
                if positive is not None and positive not in val_dataset.labels:
                    val_dataset = finding_training.validation(val_dataset, positive)
            else:
                finding_training = FindingTraining(config, data, plan, store, annotations, diameters, context,
                                                   self.context.rank, log)
                if self.main:
                    write_problems(self.run_dir / ANNOTATIONS_QC_CSV, annotations)
        ddp_model = (
            DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.context.enabled else model
        )
        weight = None
        if config.training.imbalance == "weighted_loss" and not findings:  # finding maps: voxel targets
            weight = class_weights(np.asarray(train_dataset.labels), len(data.space.classes), self.device)
            log("class weights: " + ", ".join(
                f"{c} {w:.3f}" for c, w in zip(data.space.classes, weight.tolist(), strict=True)))
        steps_per_epoch = len(self._loader(train_dataset, finding_training, model, len(data.space.classes), 1))
        optimisation = build_optimisation(model, config, self.device, steps_per_epoch, weight)
        log(f"model {arch['name']} ({arch['mode']}, input {list(input_shape)}), "
            f"{sum(p.numel() for p in model.parameters())} parameters; {steps_per_epoch} steps per epoch")
        stopping = EarlyStopping(config.training.patience, config.training.selection_window)
        return _Session(data, plan, plan_hash(plan_data), input_shape, arch, model, ddp_model, optimisation, stopping,
                        train_dataset, val_dataset, finding_training)

    def _start_epoch(self, session: _Session) -> int:
        """1, or the epoch after the checkpoint's with ``--resume``."""
        if not self.resume:
            return 1
        if not (self.run_dir / f"{CHECKPOINT_STEM}.json").is_file():
            self.log("--resume: no completed epoch yet; starting from epoch 1")
            return 1
        epoch = restore_checkpoint(self.run_dir, session.model, session.optimisation, session.stopping,
                                   self.context.world_size, session.plan_hash, rewrite_metrics=self.main)
        self.log(f"resumed after epoch {epoch} (best epoch so far {session.stopping.best_epoch})")
        return epoch + 1

    def _progress(self) -> contextlib.AbstractContextManager:
        return progress_bars(self.show_progress)

    # ------------------------------------------------------------------ the epochs

    def _fit(self, session: _Session, start_epoch: int, interrupt_after_epoch: int | None) -> tuple[int, bool]:
        """Train from ``start_epoch``; returns the epochs completed and whether training finished
        (False: stopped on request after ``interrupt_after_epoch``)."""
        training, stopping = self.config.training, session.stopping
        with self._progress() as bar:
            epochs_completed = start_epoch - 1
            for epoch in range(start_epoch, training.epochs + 1):
                if stopping.stopped_early:  # a resumed run that had already stopped
                    break
                task = bar.add_task(f"Epoch {epoch}/{training.epochs}",
                                    total=session.optimisation.steps_per_epoch, status="")
                record = self._epoch(session, epoch, bar, task)
                bar.update(task, status=f"loss {record['train_loss']:.4f} | val AUC {record['val_auc'] or 0:.3f}")
                barrier(self.context)
                epochs_completed = epoch
                if stopping.stopped_early:
                    self.log(f"early stop: no better validation AUC for {training.patience} epochs")
                    break
                if interrupt_after_epoch is not None and interrupt_after_epoch <= epoch < training.epochs:
                    self.log(f"stopped after epoch {epoch} on request; continue with --resume")
                    return epoch, False
        return epochs_completed, True

    def _epoch(self, session: _Session, epoch: int, bar: Any, task: int) -> dict[str, Any]:
        """Train one epoch, validate, keep the weights when best, checkpoint; returns its metrics record."""
        training = self.config.training
        started = time.perf_counter()
        train_stats = self._train_epoch(session, epoch, bar, task)
        summary = validation_summary(
            self._validation_logits(session, sharded=True), session.val_labels, session.data.space.positive_index)
        improved, selection_auc = session.stopping.update(summary["auc"], summary["loss"], epoch)
        if improved and self.main:
            save_weights(self.run_dir / MODEL_WEIGHTS, session.model.state_dict())
        seconds = time.perf_counter() - started
        windowed = training.selection_window > 1
        record = {
            "epoch": epoch,
            "train_loss": round(train_stats["train_loss"], 6),
            "val_loss": round(summary["loss"], 6),
            "val_auc": json_number(round(summary["auc"], 6)),
            "val_accuracy": round(summary["accuracy"], 6),
            **({"val_auc_mean": json_number(round(selection_auc, 6))} if windowed else {}),
            "lr": session.optimisation.optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 3),
            "train_seconds": round(train_stats["train_seconds"], 3),
            "data_wait_seconds": round(train_stats["data_wait_seconds"], 3),
            # Time the loop waited for the next batch / the training pass (validation excluded):
            # above ~0.1 the model is starved by data loading or augmentation.
            "data_wait_fraction": round(train_stats["data_wait_seconds"] / max(train_stats["train_seconds"], 1e-9), 4),
            "best": improved,
        }
        if self.main:
            save_checkpoint(self.run_dir / CHECKPOINT_STEM, checkpoint_state(
                epoch, session.model, session.optimisation, session.stopping, record, self.context.world_size,
                session.plan_hash, training.seed))
            append_line(self.run_dir / METRICS_JSONL, json.dumps(record))
        self.log(
            f"epoch {epoch}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
            f"val AUC {summary['auc']:.4f}"
            + (f" (mean of the last {training.selection_window} {selection_auc:.4f})" if windowed else "")
            + f"{' (best)' if improved else ''}, {seconds:.1f} s "
            f"(training pass {record['train_seconds']:.1f} s, waiting for data {record['data_wait_fraction']:.0%})"
        )
        return record

    def _loader(self, train_dataset: CachedImageDataset, findings: FindingTraining | AnomalyTraining | None,
                model: torch.nn.Module, num_classes: int, epoch: int) -> DataLoader:
        if findings is not None:
            return finding_loader(findings.epoch_items(epoch, model), self.config, self.device)
        return classifier_loader(train_dataset, self.config, num_classes, self.context, self.device, epoch)

    def _train_epoch(self, session: _Session, epoch: int, bar: Any, task: int) -> dict[str, float]:
        loader = self._loader(session.train_dataset, session.findings, session.model,
                              len(session.data.space.classes), epoch)
        session.ddp_model.train()
        return epoch_pass(loader, lambda batch: self._train_step(session, batch), self.context,
                          lambda loss: bar.update(task, advance=1, status=f"loss {loss:.4f}"))

    def _train_step(self, session: _Session, batch: Any) -> float:
        """One optimisation step on ``batch``; returns its loss."""
        images, targets = (tensor.to(self.device, non_blocking=True) for tensor in batch[:2])
        model, optimisation, findings = session.ddp_model, session.optimisation, session.findings
        if findings is None:
            return optimisation.step(lambda: model(images), lambda logits: optimisation.criterion(logits, targets))
        # A finding-map model's targets are its slices' voxel targets (an autoencoder's, its slices).
        return optimisation.step(lambda: model(images, dense=True), lambda out: findings.loss(out, images, targets))

    def _validation_logits(self, session: _Session, sharded: bool) -> np.ndarray:
        return validation_logits(session.model, session.val_dataset, self.config.training.batch_size, self.device,
                                 session.optimisation.autocast, self.context, sharded)

    # ------------------------------------------------------------------ after the epochs

    def _finalise(self, session: _Session, epochs_completed: int) -> RunResult:
        """Reload the best weights, then calibrate, choose the threshold and write ``model.json`` (rank 0)."""
        session.model.load_state_dict(load_safetensors(self.run_dir / MODEL_WEIGHTS))
        if session.findings is not None and session.findings.finish(session.model, self.log):
            save_weights(self.run_dir / MODEL_WEIGHTS, session.model.state_dict())  # with the fitted reference
        logits = self._validation_logits(session, sharded=False)
        trained = TrainedModel(
            architecture=session.architecture, plan=session.plan, plan_hash=session.plan_hash,
            input_shape=tuple(session.val_dataset.store.get(session.data.parts["val"][0]).array.shape),
            stopping=session.stopping, epochs_completed=epochs_completed, device=self.device.type,
            world_size=self.context.world_size,
        )
        # Synthetic validation copies (an anomaly run without labelled validation positives) only judge epochs.
        count = len(session.data.parts["val"])
        return finalise(self.config, session.data, self.run_dir, logits[:count], session.val_labels[:count], trained,
                        self.log)
