"""``splits.csv`` (``sample_id, patient_id, split``): its partition names, reading and atomic writing,
the kind of split it holds, and the check that it still matches the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from medrec.atomicio import write_csv
from medrec.errors import ManifestError
from medrec.split.cohort import _labelled

SPLIT_COLUMNS: tuple[str, ...] = ("sample_id", "patient_id", "split")
HOLDOUT_NAMES: tuple[str, ...] = ("train", "val", "test")


def fold_name(index: int) -> str:
    """Name of fold ``index`` in ``splits.csv`` (``fold_0``, ``fold_1``, ...)."""
    return f"fold_{index}"


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
