"""The ``data`` and ``split`` sections: where the samples and labels come from, and how patients are split."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from medrec.config.base import ResolvedPath, _Section


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
        unlabelled: what rows without a label are: ``ignore`` (not used) or ``normal`` (``task:
            anomaly`` only: assumed normal and split like the labelled rows; the run's manifest copy
            marks them in ``label_assumed`` and the report states it).
    """

    manifest: ResolvedPath
    splits: ResolvedPath | None = None
    lesions: ResolvedPath | None = None
    masks: ResolvedPath | None = None
    label_column: str = "label"
    classes: tuple[str, ...] | None = None
    positive_class: str | None = None
    unlabelled: Literal["ignore", "normal"] = "ignore"

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
