"""Patient-level splits (hold-out or k-fold) and the leakage audit run before they are written.

Rules:

* Grouping: all samples of one patient land in one partition. Patients that share a
  ``study_uid`` (one study filed under two patient ids) are merged into one group first, so a
  split made here never separates them.
* Stratification: by label, and optionally by further manifest columns; the label and those
  columns are joined into one stratum key per sample. scikit-learn's ``StratifiedGroupKFold``
  (shuffled, seeded) does the assignment.
* Hold-out: ``test`` is carved first, then ``val`` from the remaining patients. A fraction ``f``
  is realised as ``m`` of ``k`` stratified group folds (``k <= 10``, ``m / k`` closest to ``f``;
  0.2 -> 1 of 5, 0.15 -> 1 of 7), so the fractions are met approximately, in patients.
* Unlabelled samples (empty label) are left out of the splits: they cannot be trained on or
  evaluated. They are counted in :attr:`SplitResult.unlabelled` and reported by the command.
* ``splits.csv`` (``sample_id, patient_id, split``) is written atomically, once; an existing file
  is reused after checking it against the manifest and is replaced only with ``overwrite``.

Leakage audit (:func:`audit_leakage`): a patient in two partitions, one study under patient ids
in different partitions, or identical decoded pixel content (:func:`medrec.loader.content_hash`)
in two partitions raises :class:`~medrec.errors.LeakageError` listing the offending samples.
Patients are named by a pseudonym (``patient#`` + 8 hex digits of an HMAC-SHA-256 of the id keyed
with the manifest's sample ids, :func:`patient_pseudonym`), never by their raw id.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from medrec.atomicio import write_csv
from medrec.errors import ConfigError, LabelsError, LeakageError, ManifestError, OutputError
from medrec.labels import distinct_labels, positive_labels

SPLIT_COLUMNS: tuple[str, ...] = ("sample_id", "patient_id", "split")
HOLDOUT_NAMES: tuple[str, ...] = ("train", "val", "test")
MAX_FOLDS_FOR_FRACTION = 10
MAX_LISTED = 10  # offenders listed per kind of leak in an error message


def pseudonym_key(manifest: pd.DataFrame) -> bytes:
    """Key for :func:`patient_pseudonym`: SHA-256 of the manifest's sorted sample ids.

    Keying the pseudonyms with the manifest keeps a log line from being reversed by hashing a
    list of candidate patient ids; whoever holds the manifest can map them back.
    """
    ids = "\n".join(sorted(manifest["sample_id"].astype(str)))
    return hashlib.sha256(b"medrec split pseudonym\0" + ids.encode("utf-8")).digest()


def patient_pseudonym(patient_id: str, key: bytes = b"") -> str:
    """A stable pseudonym for messages (raw patient ids never appear in logs): ``patient#`` + 8 hex."""
    return "patient#" + hmac.new(key, str(patient_id).encode("utf-8"), hashlib.sha256).hexdigest()[:8]


def fold_name(index: int) -> str:
    """Name of fold ``index`` in ``splits.csv`` (``fold_0``, ``fold_1``, ...)."""
    return f"fold_{index}"


# ---------------------------------------------------------------------------------------------
# making splits


def _labelled(manifest: pd.DataFrame, label_column: str) -> pd.DataFrame:
    for column in ("sample_id", "patient_id", label_column):
        if column not in manifest.columns:
            raise ManifestError(f"manifest lacks column {column!r}; build it with 'medrec index'")
    frame = manifest.copy()
    frame[label_column] = frame[label_column].fillna("").astype(str).str.strip()
    frame["sample_id"] = frame["sample_id"].astype(str)
    frame["patient_id"] = frame["patient_id"].fillna("").astype(str)
    duplicated = frame["sample_id"][frame["sample_id"].duplicated()]
    if len(duplicated):
        raise ManifestError(f"manifest lists sample_id {duplicated.iloc[0]!r} twice; sample ids must be unique")
    labelled = frame[frame[label_column] != ""]
    missing_patient = labelled[labelled["patient_id"].str.strip() == ""]
    if len(missing_patient):
        raise ManifestError(
            f"sample {missing_patient['sample_id'].iloc[0]} (and {len(missing_patient) - 1} more) has no "
            f"patient_id; patient-level splitting needs one per sample (fill the column in the manifest)"
        )
    return labelled.reset_index(drop=True)


def _check_columns(manifest: pd.DataFrame, columns: Sequence[str]) -> None:
    for column in columns:
        if column not in manifest.columns:
            close = difflib.get_close_matches(column, list(manifest.columns), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; available: {', '.join(manifest.columns)}"
            raise ConfigError(f"--stratify-by {column!r} is not a manifest column{hint}")


def patient_groups(manifest: pd.DataFrame) -> pd.Series:
    """Group key per row: the patient id, with patients that share a study_uid merged into one group."""
    parent: dict[str, str] = {}

    def find(item: str) -> str:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for patient in manifest["patient_id"]:
        find(patient)
    if "study_uid" in manifest.columns:
        studies = manifest[manifest["study_uid"].fillna("").astype(str) != ""]
        for _, patients in studies.groupby(studies["study_uid"].astype(str))["patient_id"]:
            first, *others = list(dict.fromkeys(patients))
            for other in others:
                parent[find(other)] = find(first)
    return manifest["patient_id"].map(find)


def _strata(manifest: pd.DataFrame, label_column: str, stratify_by: Sequence[str]) -> np.ndarray:
    key = manifest[label_column].astype(str)
    for column in stratify_by:
        key = key + "|" + manifest[column].fillna("").astype(str)
    return key.to_numpy()


def fraction_as_folds(fraction: float, n_groups: int) -> tuple[int, int]:
    """``(m, k)``: take ``m`` of ``k`` group folds to realise ``fraction`` (``k <= min(10, n_groups)``)."""
    best: tuple[float, int, int] | None = None
    for k in range(2, min(MAX_FOLDS_FOR_FRACTION, n_groups) + 1):
        for m in range(1, k):
            error = abs(m / k - fraction)
            if best is None or error < best[0] - 1e-12:
                best = (error, m, k)
    if best is None:
        raise ConfigError(f"need at least 2 patients to carve a partition, got {n_groups}")
    return best[1], best[2]


def _group_folds(strata: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_folds`` stratified group folds (shuffled, seeded).

    scikit-learn refuses more folds than the largest stratum has members; such tiny cohorts are
    split by group alone (stratification cannot help them anyway).
    """
    _, counts = np.unique(strata, return_counts=True)
    labels = strata if counts.max() >= n_folds else np.zeros(len(strata), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        return [rows for _, rows in splitter.split(np.zeros(len(groups)), labels, groups)]


def _carve(strata: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows carved out (about ``fraction`` of the groups, stratified)."""
    m, k = fraction_as_folds(fraction, len(np.unique(groups)))
    mask = np.zeros(len(groups), dtype=bool)
    for fold_rows in _group_folds(strata, groups, k, seed)[:m]:
        mask[fold_rows] = True
    return mask


def make_splits(
    manifest: pd.DataFrame,
    val: float = 0.15,
    test: float = 0.2,
    folds: int | None = None,
    stratify_by: str | Sequence[str] | None = None,
    seed: int = 0,
    label_column: str = "label",
) -> pd.DataFrame:
    """Split labelled samples by patient into train/val/test or k folds, stratified by label.

    Args:
        manifest: the manifest (needs ``sample_id``, ``patient_id``, the label column; ``study_uid``
            is used to merge patients that share a study).
        val: fraction of patients for validation (hold-out only; ignored with ``folds``).
        test: fraction of patients held out for testing (0 for none); with ``folds`` the test
            patients are carved first and the folds are made from the rest.
        folds: k-fold cross-validation (``fold_0`` .. ``fold_{k-1}``) instead of train/val.
        stratify_by: further manifest column(s) to stratify on (e.g. ``manufacturer``).
        seed: seeds the shuffling; the same seed gives the same splits.
        label_column: the manifest column holding labels; rows with an empty label are left out.

    Returns:
        DataFrame ``sample_id, patient_id, split`` in manifest order, with split in
        ``train|val|test``, or ``fold_0..fold_{k-1}`` (plus ``test`` when ``test > 0``).

    Raises:
        ConfigError: invalid fractions / fold count, too few patients, unknown stratify column.
        ManifestError: missing columns, duplicate sample ids, samples without patient_id.
    """
    columns = [stratify_by] if isinstance(stratify_by, str) else list(stratify_by or [])
    _check_columns(manifest, columns)
    labelled = _labelled(manifest, label_column)
    if labelled.empty:
        raise ManifestError(
            f"no sample has a label in column {label_column!r}; pass labels to 'medrec index --labels FILE'"
        )
    groups = patient_groups(labelled).to_numpy()
    strata = _strata(labelled, label_column, columns)
    n_groups = len(np.unique(groups))
    for name, value in (("val", val), ("test", test)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"--{name} must be in [0, 1), got {value}")
    split = np.full(len(labelled), "train", dtype=object)
    remaining = np.ones(len(labelled), dtype=bool)
    if folds is not None:
        if int(folds) != folds or folds < 2:
            raise ConfigError(f"--folds must be an integer >= 2, got {folds}")
        folds = int(folds)
        if n_groups < folds + (test > 0):
            raise ConfigError(
                f"--folds {folds}{f' with --test {test}' if test > 0 else ''} needs at least {folds + (test > 0)} "
                f"patients, the manifest has {n_groups}"
            )
    else:
        if val + test >= 1.0:
            raise ConfigError(f"--val {val} + --test {test} leaves no patients for training; keep the sum below 1")
        needed = 1 + (val > 0) + (test > 0)
        if n_groups < needed:
            raise ConfigError(f"a train/val/test split needs at least {needed} patients, the manifest has {n_groups}")
    if test > 0:
        carved = _carve(strata, groups, test, seed)
        split[carved] = "test"
        remaining &= ~carved
    rest = np.flatnonzero(remaining)
    if folds is not None:
        if len(np.unique(groups[rest])) < folds:
            raise ConfigError(f"too few patients left after the test split for {folds} folds; lower --test or --folds")
        for index, fold_rows in enumerate(_group_folds(strata[rest], groups[rest], folds, seed + 1)):
            split[rest[fold_rows]] = fold_name(index)
    elif val > 0:
        if len(np.unique(groups[rest])) < 2:
            raise ConfigError("too few patients left after the test split to carve a validation split")
        carved = _carve(strata[rest], groups[rest], val / (1.0 - test), seed + 1)
        split[rest[carved]] = "val"
    return pd.DataFrame({
        "sample_id": labelled["sample_id"].to_numpy(),
        "patient_id": labelled["patient_id"].to_numpy(),
        "split": split.astype(str),
    })


def held_out_fold_splits(
    splits: pd.DataFrame,
    manifest: pd.DataFrame,
    fold: int,
    val: float = 0.15,
    stratify_by: str | Sequence[str] | None = None,
    seed: int = 0,
    label_column: str = "label",
) -> pd.DataFrame:
    """The train / val / test splits of one cross-validation fold, with fold ``fold`` held out as ``test``.

    Out-of-fold predictions must come from a model that was neither fitted nor tuned on them, as in
    scikit-learn's ``cross_val_predict``. Training here tunes on its validation split (early stopping,
    operating threshold, calibration), so the held-out fold cannot be that split: it becomes the
    run's ``test``, and ``val`` (a fraction of the patients, stratified) is carved from the other
    folds, which train. A locked ``test`` split of ``splits`` is left out of every partition:
    cross-validation never touches it.

    Args:
        splits: k-fold splits (``fold_0 .. fold_{k-1}``, optionally ``test``) from :func:`make_splits`.
        manifest: the manifest the splits were made from.
        fold: the fold to hold out.
        val: fraction of the training folds' patients for validation.
        stratify_by: further manifest column(s) to stratify the validation carve on.
        seed: seeds the validation carve.
        label_column: the manifest's label column.

    Returns:
        DataFrame ``sample_id, patient_id, split`` (``train|val|test``) without the locked test rows.

    Raises:
        ConfigError: ``splits`` are not k-fold splits or lack ``fold``; too few patients in the
            training folds to carve a validation split.
        LabelsError: a class is missing from the training or the validation split of the fold.
    """
    kind = splits_kind(splits)
    if not kind.startswith("kfold:"):
        raise ConfigError(f"cross-validation needs k-fold splits (fold_0, fold_1, ...), got {kind} splits; "
                          "split with split.folds K")
    held_out = fold_name(fold)
    names = splits["split"].astype(str)
    if held_out not in set(names):
        raise ConfigError(f"fold {fold}: the splits have no {held_out} (they have {kind[len('kfold:'):]} folds)")
    training_ids = set(splits.loc[names.str.startswith("fold_") & (names != held_out), "sample_id"].astype(str))
    training_rows = manifest[manifest["sample_id"].astype(str).isin(training_ids)]
    try:
        inner = make_splits(training_rows, val=val, test=0.0, stratify_by=stratify_by, seed=seed,
                            label_column=label_column)
    except ConfigError as e:
        raise ConfigError(f"fold {fold}: cannot carve a validation split from the other folds ({e}); "
                          "use fewer folds or more patients") from e
    # training needs every class in train and in val; say so now, not after the earlier folds trained
    labels = inner["sample_id"].map(_labelled(training_rows, label_column).set_index("sample_id")[label_column])
    for name in ("train", "val"):
        missing = sorted(set(labels) - set(labels[inner["split"] == name]))
        if missing:
            raise LabelsError(
                f"fold {fold}: the {name} split carved from the other folds has no sample of class(es) {missing} "
                f"({int((inner['split'] == name).sum())} samples); use more patients, fewer folds, a larger split.val "
                "or another split.seed")
    held = splits.loc[names == held_out, ["sample_id", "patient_id"]].assign(split="test")
    return pd.concat([inner, held], ignore_index=True).astype(str)


# ---------------------------------------------------------------------------------------------
# reading, checking, writing


def read_splits(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``splits.csv`` with identifiers kept as strings.

    Raises:
        ManifestError: missing file, unreadable CSV or missing columns.
    """
    source = Path(path)
    if not source.is_file():
        raise ManifestError(f"{source}: splits file not found; create it with 'medrec split MANIFEST -o {source}'")
    try:
        frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ManifestError(f"{source}: not a readable splits CSV ({e})") from e
    missing = [c for c in SPLIT_COLUMNS if c not in frame.columns]
    if missing:
        raise ManifestError(
            f"{source}: splits file lacks column(s) {', '.join(missing)}; expected {', '.join(SPLIT_COLUMNS)}"
        )
    return frame[list(SPLIT_COLUMNS)]


def write_splits(splits: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``splits.csv`` atomically."""
    write_csv(path, splits[list(SPLIT_COLUMNS)])


def splits_kind(splits: pd.DataFrame) -> str:
    """``"holdout"``, ``"kfold:K"`` or ``"kfold:K+test"``.

    Raises:
        ManifestError: split names are neither train/val/test nor fold_k (+ test), or mix folds with train/val.
    """
    names = set(splits["split"])
    folds = {n for n in names if n.startswith("fold_") and n[5:].isdigit()}
    if not folds and names <= set(HOLDOUT_NAMES):
        return "holdout"
    if folds and names - folds <= {"test"}:
        count = max(int(n[5:]) for n in folds) + 1
        return f"kfold:{count}" + ("+test" if "test" in names else "")
    odd = sorted(names - folds - {"test"}) or sorted(names)
    raise ManifestError(
        f"splits hold partition name(s) {', '.join(map(repr, odd[:5]))} that do not fit together; expected "
        f"train/val/test, or fold_k with an optional test"
    )


def wanted_kind(folds: int | None, test: float) -> str:
    """The :func:`splits_kind` that ``make_splits(folds=folds, test=test)`` produces."""
    if folds is None:
        return "holdout"
    return f"kfold:{folds}" + ("+test" if test > 0 else "")


def check_splits_match(splits: pd.DataFrame, manifest: pd.DataFrame, label_column: str = "label") -> None:
    """Check that ``splits`` covers exactly the manifest's labelled samples, with their patient ids.

    Raises:
        ManifestError: samples missing, extra or listed twice; patient ids that differ; bad split names.
    """
    labelled = _labelled(manifest, label_column)
    splits_kind(splits)
    duplicated = splits["sample_id"][splits["sample_id"].duplicated()]
    if len(duplicated):
        raise ManifestError(f"splits list sample {duplicated.iloc[0]} twice")
    expected = set(labelled["sample_id"])
    present = set(splits["sample_id"].astype(str))
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} labelled manifest sample(s) not in the splits (e.g. {', '.join(missing[:3])})"
            )
        if extra:
            parts.append(f"{len(extra)} split sample(s) not labelled in the manifest (e.g. {', '.join(extra[:3])})")
        raise ManifestError("splits do not match the manifest: " + "; ".join(parts))
    patients = splits.set_index("sample_id")["patient_id"].astype(str)
    manifest_patients = labelled.set_index("sample_id")["patient_id"]
    differ = [s for s in manifest_patients.index if patients[s] != manifest_patients[s]]
    if differ:
        raise ManifestError(
            f"splits and manifest disagree on the patient of {len(differ)} sample(s) (e.g. {', '.join(differ[:3])})"
        )


# ---------------------------------------------------------------------------------------------
# leakage audit


@dataclass
class LeakageAudit:
    """What the audit checked.

    Attributes:
        n_samples: samples checked.
        pixel_checked: whether pixel content was compared.
        hashes: ``sample_id -> content hash`` for the samples that loaded.
        unreadable: ``sample_id -> reason`` for samples whose pixels could not be loaded (not hashed).
    """

    n_samples: int
    pixel_checked: bool
    hashes: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


def pixel_hashes(
    rows: Sequence[Mapping],
    workers: int | None = None,
    max_bytes: int | None = None,
    on_done: Callable[[str], None] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Content hashes of the given manifest rows, each decoded once, in a small process pool.

    Args:
        rows: manifest rows (dicts).
        workers: processes (default ``min(2, cpu count)``); 1 or very few rows: in this process.
        max_bytes: per-sample memory budget.
        on_done: called with each sample id when its hash is done (progress bars).

    Returns:
        ``(hashes, unreadable)``: ``sample_id -> hash`` and ``sample_id -> reason``.
    """
    from medrec.loader.rows import content_hash_job

    jobs = [{**dict(r), "sample_id": str(r["sample_id"]), "_max_bytes": max_bytes} for r in rows]
    n_workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    hashes: dict[str, str] = {}
    unreadable: dict[str, str] = {}

    def collect(result: tuple[str, str, str]) -> None:
        sample_id, digest, reason = result
        if digest:
            hashes[sample_id] = digest
        else:
            unreadable[sample_id] = reason
        if on_done is not None:
            on_done(sample_id)

    if n_workers == 1 or len(jobs) < 4:
        for job in jobs:
            collect(content_hash_job(job))
    else:
        # spawn: workers import only numpy / pydicom / nibabel, never a forked copy of torch state
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
            for result in pool.map(content_hash_job, jobs, chunksize=4):
                collect(result)
    return hashes, unreadable


def _without_split(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest keyed by string sample ids, without a column that would clash with ``split``."""
    frame = manifest.drop(columns=[c for c in ("split", "_merge") if c in manifest.columns])
    return frame.assign(sample_id=frame["sample_id"].astype(str))


def _describe(rows: pd.DataFrame) -> str:
    by_split = rows.groupby("split", sort=True)["sample_id"].apply(lambda ids: ", ".join(sorted(ids)))
    return "; ".join(f"{split}: {ids}" for split, ids in by_split.items())


def audit_leakage(
    manifest: pd.DataFrame,
    splits: pd.DataFrame,
    check_pixels: bool = True,
    workers: int | None = None,
    max_bytes: int | None = None,
    on_hashed: Callable[[str], None] | None = None,
) -> LeakageAudit:
    """Refuse splits that leak a patient, a study or pixel content across partitions.

    Args:
        manifest: the manifest the splits were made from.
        splits: ``sample_id, patient_id, split``.
        check_pixels: also decode every split sample once and compare content hashes.
        workers: processes for pixel hashing.
        max_bytes: per-sample memory budget for decoding.
        on_hashed: progress callback, called with each hashed sample id.

    Returns:
        The :class:`LeakageAudit` (hashes and samples that could not be decoded).

    Raises:
        LeakageError: one of the three leaks; the message lists every kind found, the offending
            sample ids per partition and patient pseudonyms.
        ManifestError: a split sample is not in the manifest.
    """
    merged = splits[["sample_id", "split"]].astype(str).merge(
        _without_split(manifest), on="sample_id", how="left", indicator=True)
    unknown = merged.loc[merged["_merge"] == "left_only", "sample_id"]
    if len(unknown):
        raise ManifestError(f"splits list {len(unknown)} sample(s) not in the manifest (e.g. {unknown.iloc[0]})")
    merged["patient_id"] = merged["patient_id"].fillna("").astype(str)
    key = pseudonym_key(manifest)

    def pseudonym(patient_id: str) -> str:
        return patient_pseudonym(patient_id, key)

    problems: list[str] = []

    crossing = merged.groupby("patient_id")["split"].nunique()
    crossing = crossing[crossing > 1]
    if len(crossing):
        lines = [f"{pseudonym(p)} in {_describe(merged[merged['patient_id'] == p])}"
                 for p in sorted(crossing.index)[:MAX_LISTED]]
        more = f" (+{len(crossing) - MAX_LISTED} more)" if len(crossing) > MAX_LISTED else ""
        problems.append(f"{len(crossing)} patient(s) in more than one partition{more}: " + " | ".join(lines))

    if "study_uid" in merged.columns:
        studies = merged[merged["study_uid"].fillna("").astype(str) != ""]
        spread = studies.groupby("study_uid").agg(patients=("patient_id", "nunique"), splits=("split", "nunique"))
        bad = spread[(spread["patients"] > 1) & (spread["splits"] > 1)]
        if len(bad):
            lines = []
            for study in sorted(bad.index)[:MAX_LISTED]:
                rows = studies[studies["study_uid"] == study]
                names = ", ".join(pseudonym(p) for p in sorted(rows["patient_id"].unique()))
                lines.append(f"study of samples [{_describe(rows)}] filed under {names}")
            more = f" (+{len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
            problems.append(
                f"{len(bad)} study_uid(s) under several patient ids, in more than one partition{more}: "
                + " | ".join(lines)
            )

    audit = LeakageAudit(n_samples=len(merged), pixel_checked=check_pixels)
    if check_pixels:
        rows = merged.drop(columns=["_merge"]).to_dict(orient="records")
        audit.hashes, audit.unreadable = pixel_hashes(rows, workers=workers, max_bytes=max_bytes, on_done=on_hashed)
        hashed = merged[merged["sample_id"].isin(audit.hashes)].copy()
        hashed["content_hash"] = hashed["sample_id"].map(audit.hashes)
        spread = hashed.groupby("content_hash")["split"].nunique()
        duplicated = spread[spread > 1]
        if len(duplicated):
            lines = []
            for digest in sorted(duplicated.index)[:MAX_LISTED]:
                rows_same = hashed[hashed["content_hash"] == digest]
                names = ", ".join(pseudonym(p) for p in sorted(rows_same["patient_id"].unique()))
                lines.append(f"identical pixels in [{_describe(rows_same)}] ({names})")
            more = f" (+{len(duplicated) - MAX_LISTED} more)" if len(duplicated) > MAX_LISTED else ""
            problems.append(f"{len(duplicated)} image(s) with identical pixel content in more than one partition"
                            f"{more}: " + " | ".join(lines))

    if problems:
        raise LeakageError(
            "leakage audit failed, nothing was written: " + "; ".join(problems)
            + ". Fix the patient ids / duplicates in the manifest (or drop the duplicated samples) and split again"
        )
    return audit


# ---------------------------------------------------------------------------------------------
# summary and the whole step


def split_order(names: Iterable[str]) -> list[str]:
    """Partition names in display order: train, val, test, then fold_0, fold_1, ..."""
    unique = set(names)
    holdout = [n for n in HOLDOUT_NAMES if n in unique]
    rest = sorted(unique - set(holdout), key=lambda n: (len(n), n))
    return holdout + rest


def split_summary(
    manifest: pd.DataFrame,
    splits: pd.DataFrame,
    label_column: str = "label",
    positive_class: str | None = None,
) -> pd.DataFrame:
    """Counts per partition: patients, studies, samples, positives (and a ``total`` row).

    Splitting does not depend on which label is positive: when two labels leave the positive
    class undecided (and no ``positive_class`` names it), the positives columns read ``-``. With
    more than two classes there is no positive class: the columns after ``samples`` count the
    samples of each class instead (one column per class, named by it).
    """
    merged = splits[["sample_id", "split"]].astype(str).merge(_without_split(manifest), on="sample_id", how="left")
    merged[label_column] = merged[label_column].fillna("").astype(str)
    classes = distinct_labels(merged[label_column])
    if len(classes) > 2:
        return _class_counts(merged, label_column, classes)
    try:
        positives: set[str] | None = positive_labels(merged[label_column], positive_class)
    except LabelsError:
        positives = None
    study = merged["study_uid"].astype(str) if "study_uid" in merged.columns else merged["sample_id"]
    merged = merged.assign(_study=study, _positive=merged[label_column].str.strip().isin(positives or set()))
    rows = []
    for name in [*split_order(merged["split"]), "total"]:
        part = merged if name == "total" else merged[merged["split"] == name]
        rows.append({
            "split": name,
            "patients": int(part["patient_id"].nunique()),
            "studies": int(part["_study"].nunique()),
            "samples": len(part),
            "positives": int(part["_positive"].sum()) if positives is not None else "-",
            "positive_fraction": f"{part['_positive'].mean():.3f}" if len(part) and positives is not None else "-",
        })
    return pd.DataFrame(rows)


def _class_counts(merged: pd.DataFrame, label_column: str, classes: Sequence[str]) -> pd.DataFrame:
    """:func:`split_summary` of a multi-class cohort: samples of each class per partition."""
    study = merged["study_uid"].astype(str) if "study_uid" in merged.columns else merged["sample_id"]
    labels = merged[label_column].str.strip()
    rows = []
    for name in [*split_order(merged["split"]), "total"]:
        mask = pd.Series(True, index=merged.index) if name == "total" else merged["split"] == name
        row: dict[str, object] = {"split": name, "patients": int(merged.loc[mask, "patient_id"].nunique()),
                                  "studies": int(study[mask].nunique()), "samples": int(mask.sum())}
        for label in classes:
            row[label if label not in row else f"label {label}"] = int((labels[mask] == label).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _kind_text(kind: str) -> str:
    if kind == "holdout":
        return "train/val/test"
    count, _, test = kind.removeprefix("kfold:").partition("+")
    return f"{count}-fold" + (" + test" if test else "")


@dataclass
class SplitResult:
    """Outcome of :func:`ensure_splits`.

    Attributes:
        splits: ``sample_id, patient_id, split``.
        reused: an existing ``splits.csv`` was validated and kept.
        unlabelled: sample ids left out because they have no label.
        audit: the leakage audit's result.
        summary: counts per partition (see :func:`split_summary`).
    """

    splits: pd.DataFrame
    reused: bool
    unlabelled: list[str]
    audit: LeakageAudit
    summary: pd.DataFrame


def ensure_splits(
    manifest: pd.DataFrame,
    path: str | os.PathLike[str],
    val: float = 0.15,
    test: float = 0.2,
    folds: int | None = None,
    stratify_by: str | Sequence[str] | None = None,
    seed: int = 0,
    label_column: str = "label",
    overwrite: bool = False,
    check_pixels: bool = True,
    workers: int | None = None,
    max_bytes: int | None = None,
    on_hashed: Callable[[str], None] | None = None,
    positive_class: str | None = None,
) -> SplitResult:
    """Reuse ``path`` when it matches the manifest, else make, audit and write the splits.

    An existing file is validated (same labelled samples and patients, same kind of split:
    hold-out vs the requested number of folds) and audited, never rewritten; with ``overwrite``
    new splits replace it. New splits are audited before anything is written. ``positive_class``
    only names the positive class in the summary (see :func:`split_summary`).

    Raises:
        OutputError: an existing file does not match and ``overwrite`` is not set.
        LeakageError: the audit found a leak (nothing is written).
        ConfigError, ManifestError: see :func:`make_splits`.
    """
    target = Path(path)
    labels = manifest[label_column].fillna("").astype(str).str.strip() if label_column in manifest.columns else None
    unlabelled = [] if labels is None else manifest.loc[labels == "", "sample_id"].astype(str).tolist()
    reused = False
    if target.exists() and not overwrite:
        existing = read_splits(target)
        wanted = wanted_kind(folds, test)
        try:
            check_splits_match(existing, manifest, label_column)
            found = splits_kind(existing)
            if found != wanted:
                raise ManifestError(f"it holds a {_kind_text(found)} split, a {_kind_text(wanted)} split was asked for")
        except ManifestError as e:
            raise OutputError(
                f"{target}: existing splits file does not match this manifest ({e}); it is never overwritten "
                f"silently: pass --overwrite to replace it, or choose another -o path"
            ) from e
        splits = existing
        reused = True
    else:
        splits = make_splits(manifest, val=val, test=test, folds=folds, stratify_by=stratify_by, seed=seed,
                             label_column=label_column)
    audit = audit_leakage(manifest, splits, check_pixels=check_pixels, workers=workers, max_bytes=max_bytes,
                          on_hashed=on_hashed)
    if not reused:
        write_splits(splits, target)
    return SplitResult(splits=splits, reused=reused, unlabelled=unlabelled, audit=audit,
                       summary=split_summary(manifest, splits, label_column, positive_class))
