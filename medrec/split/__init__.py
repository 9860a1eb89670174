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

from medrec.split.audit import LeakageAudit, audit_leakage, patient_pseudonym, pixel_hashes, pseudonym_key
from medrec.split.making import fraction_as_folds, held_out_fold_splits, make_splits, patient_groups
from medrec.split.splits_file import (
    HOLDOUT_NAMES,
    SPLIT_COLUMNS,
    check_splits_match,
    fold_name,
    read_splits,
    splits_kind,
    wanted_kind,
    write_splits,
)
from medrec.split.step import SplitResult, ensure_splits
from medrec.split.summary import split_order, split_summary

__all__ = [
    "HOLDOUT_NAMES",
    "SPLIT_COLUMNS",
    "LeakageAudit",
    "SplitResult",
    "audit_leakage",
    "check_splits_match",
    "ensure_splits",
    "fold_name",
    "fraction_as_folds",
    "held_out_fold_splits",
    "make_splits",
    "patient_groups",
    "patient_pseudonym",
    "pixel_hashes",
    "pseudonym_key",
    "read_splits",
    "split_order",
    "split_summary",
    "splits_kind",
    "wanted_kind",
    "write_splits",
]
