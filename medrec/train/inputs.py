"""The data a training run learns from: labelled manifest rows, classes, patient-level splits.

Read on every rank; written into the run directory by rank 0 only (:func:`write_inputs`): the
splits, copies of the manifest and its QC file, and the resolved config that ``--resume`` checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medrec.atomicio import write_csv, write_text
from medrec.config import TrainConfig, dump_config
from medrec.errors import ConfigError, LabelsError, LeakageError, ManifestError
from medrec.manifest import read_manifest
from medrec.rundir import CACHE_DIR, CONFIG_YAML, SPLITS_CSV
from medrec.train.setup import (
    LabelSpace,
    check_partition,
    check_splits_table,
    label_space,
    label_text,
    labelled_rows,
    partition,
)

# The classes of an anomaly run whose rows carry fewer than two labels (data.unlabelled: normal).
ANOMALY_CLASSES: tuple[str, str] = ("anomaly", "normal")
# The run's manifest copy marks the rows assumed normal in this column.
ASSUMED_COLUMN = "label_assumed"

# Config keys that may differ between a run and its --resume (they do not change the result).
RESUME_FREE_KEYS: frozenset[str] = frozenset({"training.device", "training.num_workers", "training.cache_dir"})

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainingData:
    """The labelled samples of a run and where each one goes.

    Attributes:
        manifest_path: the manifest the rows come from.
        rows: the labelled manifest rows (``label`` column), sample ids as strings.
        splits: ``sample_id``, ``patient_id``, ``split`` (and fold columns) of the labelled samples.
        parts: ``train`` / ``val`` / ``test`` -> sample ids (the fold's view for cross-validation).
        labels: sample id -> label.
        space: the classes and the positive class.
        assumed_normal: rows that had no label and were taken as normal (``data.unlabelled: normal``).
    """

    manifest_path: Path
    rows: pd.DataFrame
    splits: pd.DataFrame
    parts: dict[str, list[str]]
    labels: dict[str, str]
    space: LabelSpace
    assumed_normal: frozenset[str] = frozenset()


def cache_dir(config: TrainConfig, run_dir: Path) -> Path:
    """Where preprocessed samples are cached (``training.cache_dir``, else the run's ``cache/``)."""
    return Path(config.training.cache_dir) if config.training.cache_dir else run_dir / CACHE_DIR


def resolved_config(config: TrainConfig, run_dir: Path) -> TrainConfig:
    """The config as the run records it: the run's splits file and cache folder filled in."""
    return config.model_copy(
        update={
            "data": config.data.model_copy(update={"splits": run_dir / SPLITS_CSV}),
            "training": config.training.model_copy(update={"cache_dir": cache_dir(config, run_dir)}),
        }
    )


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def check_config_unchanged(config: TrainConfig, run_dir: Path) -> None:
    """A resumed run must use the config it started with (but for :data:`RESUME_FREE_KEYS`).

    Raises:
        ConfigError: naming the keys that changed.
    """
    import yaml

    saved_path = run_dir / CONFIG_YAML
    if not saved_path.is_file():
        return
    saved = _flatten(yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {})
    current = _flatten(resolved_config(config, run_dir).to_yaml_dict())
    changed = sorted(
        key for key in set(saved) | set(current)
        if key not in RESUME_FREE_KEYS and saved.get(key) != current.get(key)
    )
    if changed:
        raise ConfigError(
            f"{saved_path}: the config changed since this run started ({', '.join(changed)}); "
            "--resume needs the same config, or start a new run in another folder"
        )


def _read_splits(config: TrainConfig, run_dir: Path, resume: bool, rows: pd.DataFrame, log: Log) -> pd.DataFrame:
    """The run's own splits on resume, else the configured splits file, else new patient-level splits."""
    run_splits = run_dir / SPLITS_CSV
    configured = config.data.splits
    if resume and run_splits.is_file():
        source, frame = run_splits, pd.read_csv(run_splits, dtype=str, keep_default_na=False)
        log(f"splits: reusing {run_splits.name} of this run")
    elif configured is not None and Path(configured).is_file():
        source, frame = configured, pd.read_csv(configured, dtype=str, keep_default_na=False)
        log(f"splits: reusing {configured}")
    else:
        from medrec.split import make_splits

        split = config.split
        frame = make_splits(
            rows,
            val=split.val,
            test=split.test,
            folds=split.folds,
            stratify_by=list(split.stratify_by) if split.stratify_by else None,
            seed=split.seed,
        )
        source = "medrec.split.make_splits"
        log(f"splits: made with seed {split.seed} (val {split.val}, test {split.test}, folds {split.folds})")
    frame = check_splits_table(frame, str(source))
    frame = frame[frame["sample_id"].isin(set(rows["sample_id"]))]
    return frame.reset_index(drop=True)


def prepare_training_data(config: TrainConfig, run_dir: Path, resume: bool, log: Log) -> TrainingData:
    """Read the manifest, decide the classes and the splits, check that no sample crosses them.

    Raises:
        ManifestError: duplicate sample ids.
        ConfigError, LeakageError: classes or splits that do not fit the task.
    """
    manifest_path = Path(config.data.manifest)
    manifest = read_manifest(manifest_path)
    manifest["sample_id"] = manifest["sample_id"].astype(str)
    if config.data.unlabelled == "normal":
        rows, assumed, classes = _with_assumed_normals(manifest, config, log)
    else:
        rows, assumed, classes = labelled_rows(manifest, config.data.label_column), frozenset(), config.data.classes
        log(f"manifest: {len(manifest)} samples, {len(rows)} labelled "
            f"({len(manifest) - len(rows)} unlabelled not used)")
    if rows["sample_id"].duplicated().any():
        raise ManifestError(f"{manifest_path}: sample ids are not unique; re-run 'medrec index'")
    space = label_space(rows["label"], classes, config.data.positive_class)
    log(f"classes: {list(space.classes)}; positive class: {space.positive_class or '(multi-class: argmax)'}")
    splits = _read_splits(config, run_dir, resume, rows, log)
    parts = partition(splits, config.split.fold)
    labels = dict(zip(rows["sample_id"], rows["label"], strict=True))
    unassigned = len(rows) - len(splits)
    if unassigned:
        log(f"splits: {unassigned} labelled samples are in no split and are not used")
    if config.task == "anomaly":
        parts["train"] = _normal_only(parts["train"], labels, space, log)
    if config.task == "anomaly":
        _check_anomaly_validation(parts["val"], labels, space, log)
    else:
        check_partition(parts, labels, space)
    if set(parts["test"]) & (set(parts["train"]) | set(parts["val"])):
        raise LeakageError("a sample is both in test and in train/val; the splits table is inconsistent")
    for name in ("train", "val", "test"):
        counts = pd.Series([labels[s] for s in parts[name]], dtype=object).value_counts().to_dict()
        log(f"split {name}: {len(parts[name])} samples {dict(sorted(counts.items()))}")
    return TrainingData(manifest_path, rows, splits, parts, labels, space, assumed)


def _with_assumed_normals(manifest: pd.DataFrame, config: TrainConfig,
                          log: Log) -> tuple[pd.DataFrame, frozenset[str], tuple[str, ...]]:
    """``data.unlabelled: normal``: every row, those without a label given the normal class.

    The classes are ``data.classes``, else the labelled rows' two classes, else
    :data:`ANOMALY_CLASSES` (rows with no label at all, or one class only).

    Raises:
        LabelsError: labels outside those classes.
        ConfigError: more than two classes.
    """
    text = label_text(manifest, config.data.label_column)
    given = text[text != ""]
    classes = config.data.classes or (tuple(sorted(set(given))) if given.nunique() >= 2 else ANOMALY_CLASSES)
    space = label_space(given, classes, config.data.positive_class)
    if space.positive_class is None:
        raise ConfigError(f"task: anomaly needs a binary task (normal vs finding); the labels have classes "
                          f"{list(space.classes)}")
    normal = next(c for c in space.classes if c != space.positive_class)
    rows = manifest.copy()
    rows["label"] = text.where(text != "", normal)
    assumed = frozenset(rows.loc[text == "", "sample_id"])
    log(f"manifest: {len(manifest)} samples, {len(given)} labelled; the {len(assumed)} without a label are assumed "
        f"normal ({normal!r}, data.unlabelled: normal)")
    return rows.reset_index(drop=True), assumed, space.classes


def _normal_only(train: list[str], labels: dict[str, str], space: LabelSpace, log: Log) -> list[str]:
    """``task: anomaly``: the training split's negatives; its positives are never read (not even cached).

    Raises:
        ConfigError: a multi-class task, or no negative in the training split.
    """
    if space.positive_class is None:
        raise ConfigError(f"task: anomaly needs a binary task (normal vs finding); the labels have classes "
                          f"{list(space.classes)}")
    normal = [s for s in train if str(labels[s]) != str(space.positive_class)]
    if not normal:
        raise ConfigError("task: anomaly: the training split holds no normal study to learn from")
    log(f"task anomaly: training on the {len(normal)} normal studies of the training split"
        + (f"; its {len(train) - len(normal)} positives are not read" if len(normal) < len(train) else ""))
    return normal


def _check_anomaly_validation(val: list[str], labels: dict[str, str], space: LabelSpace, log: Log) -> None:
    """An anomaly run's validation split needs normal studies; positives are optional.

    Raises:
        LabelsError: no normal study in validation.
    """
    positives = sum(str(labels[s]) == str(space.positive_class) for s in val)
    if positives == len(val):
        raise LabelsError(f"the val split has no normal study ({len(val)} samples); an anomaly detector's threshold "
                          "is set on normal validation studies: use more patients, a larger split.val, or another "
                          "split.seed")
    if not positives:
        log("validation holds no labelled positive: each epoch is judged on the validation studies against copies "
            "of them with a synthetic anomaly, the threshold is set at the threshold.method specificity on the "
            "normal validation studies (specificity:0.95 unless a specificity rule is given), and no calibration "
            "is fitted")


def write_inputs(config: TrainConfig, run_dir: Path, resume: bool, data: TrainingData, log: Log) -> None:
    """Audit leakage, then write splits, manifest copies and the resolved config (rank 0)."""
    from medrec.split import audit_leakage

    if not resume or not (run_dir / SPLITS_CSV).is_file():
        audit_leakage(data.rows, data.splits, check_pixels=config.split.check_pixels)
        log(f"leakage audit passed (pixel check: {'on' if config.split.check_pixels else 'off'})")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_csv(run_dir / SPLITS_CSV, data.splits[["sample_id", "patient_id", "split"]])
    for name in ("manifest.csv", "qc.csv"):
        source = data.manifest_path if name == "manifest.csv" else data.manifest_path.parent / name
        if not source.is_file() or (run_dir / name).is_file():
            continue
        if name == "manifest.csv" and data.assumed_normal:
            write_csv(run_dir / name, _manifest_with_assumed(source, config.data.label_column, data))
        else:
            write_text(run_dir / name, source.read_text(encoding="utf-8"))
    header = "# resolved by medrec train: absolute paths, defaults filled in; preprocessing plan: plan.json\n"
    write_text(run_dir / CONFIG_YAML, header + dump_config(resolved_config(config, run_dir)))


def _manifest_with_assumed(source: Path, label_column: str, data: TrainingData) -> pd.DataFrame:
    """The manifest as the run saw it: rows assumed normal carry the normal class in the label column
    and ``1`` in :data:`ASSUMED_COLUMN`, so evaluation and the report read the same labels."""
    manifest = read_manifest(source)
    ids = manifest["sample_id"].astype(str)
    manifest[label_column] = [data.labels.get(i, "") for i in ids]
    manifest[ASSUMED_COLUMN] = ["1" if i in data.assumed_normal else "" for i in ids]
    return manifest
