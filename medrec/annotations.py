"""Lesion annotations: a lesion table or lesion masks, matched to manifest samples.

Two inputs, either or both:

* a **lesion table** (``--lesions``): one row per lesion with ``study_uid`` and / or ``series_uid``,
  ``center_x, center_y, center_z`` (patient LPS mm) and ``diameter_mm``, the columns of ``medrec
  synth``'s ``ground_truth.csv``. A row names a series (matched first) or a study (every sample of
  the study gets the lesion: a lesion in a study is in each of its series). Lesions become spheres.
* a **masks file**: a labels-style CSV with a ``mask`` column, a NIfTI path relative to the CSV's
  folder; the mask is in the scan's world geometry on any voxel grid. An empty cell says the study
  has no lesion. Rows match samples exactly as ``medrec index --labels`` matches them
  (:func:`medrec.index.labels.match_labels`).

A sample is *annotated* when its dense target is known: it has lesions or a usable mask, or it is
a negative study (its target is all zeros, listed or not). A positive study without lesions is
*label-only*. Bad input never stops the read: every bad row, unmatched row or unusable mask is
counted in :attr:`Annotations.counts` and listed in :attr:`Annotations.problems` (file and line).

Geometry: targets are described by their voxel-to-RAS affine (the NIfTI / MONAI convention that
:func:`medrec.loader.load_sample` returns); LPS becomes RAS by negating x and y.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from medrec.atomicio import write_csv
from medrec.errors import AnnotationError, LabelsError
from medrec.index.labels import KEY_ALIASES, SERIES_UID_ALIASES, find_column, match_labels, read_labels, sniff_delimiter
from medrec.labels import positive_labels
from medrec.manifest import series_files

PROBLEM_COLUMNS: tuple[str, ...] = ("source", "sample_id", "reason")
CENTER_COLUMNS: tuple[str, ...] = ("center_x", "center_y", "center_z")
DIAMETER_COLUMN = "diameter_mm"
CONTRAST_COLUMN = "contrast"
MASK_COLUMN = "mask"
# stands for an empty mask cell while matching: the labels matcher skips rows whose value is empty
_NO_MASK = "\x00no-mask"

# every key of Annotations.counts, in the order summary() prints them
COUNT_KEYS: tuple[str, ...] = (
    "lesion_rows",  # rows of the lesion table
    "lesion_rows_matched",  # rows attached to at least one sample
    "lesion_rows_unmatched",  # rows whose study_uid / series_uid names no manifest sample
    "lesion_rows_bad",  # rows with a zero / negative / NaN diameter, a non-finite centre or no UID
    "lesion_rows_multi_sample",  # matched rows attached to more than one sample (a study with several series)
    "mask_rows",  # rows of the masks file
    "mask_rows_matched",
    "mask_rows_unmatched",
    "mask_conflicts",  # samples whose matching rows name different masks (not annotated)
    "masks_bad",  # masks missing, unreadable, holding NaN or not overlapping their image (not annotated)
    "samples_annotated",  # samples with a dense target (lesions, a usable mask, or lesion-free)
    "samples_lesion_free",  # annotated samples whose target is all zeros
    "positives_without_annotation",  # positive studies with no lesion row and no lesion in a mask (label-only)
    "negatives_with_lesions",  # negative studies that a lesion row or a mask says have a lesion (target kept zero)
)


@dataclass(frozen=True)
class Lesion:
    """One lesion of the lesion table: a sphere in patient space."""

    center_lps: tuple[float, float, float]
    diameter_mm: float
    source: str  # file and line, e.g. "lesions.csv line 7"
    contrast: float | None = None  # the optional ``contrast`` column (None when absent or not a number)


@dataclass
class Annotations:
    """Lesion annotations per sample, with what could not be used and why.

    Attributes:
        lesions: sample_id -> lesions from the lesion table.
        masks: sample_id -> mask file, or None when the masks file annotates the sample as lesion-free.
        problems: ``{"source", "sample_id", "reason"}`` per problem (file and line in ``source``).
        counts: :data:`COUNT_KEYS` -> number.
        lesion_free: samples whose target is all zeros (negative studies, empty mask cells).
        positives: samples whose label is positive (an empty mask file leaves them label-only).
        label_only: samples dropped to label-only after their mask was checked against the image grid.
        mask_sources: sample_id -> where its mask was named (file and line), for problem reports.
    """

    lesions: dict[str, list[Lesion]] = field(default_factory=dict)
    masks: dict[str, Path | None] = field(default_factory=dict)
    problems: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    lesion_free: set[str] = field(default_factory=set)
    positives: set[str] = field(default_factory=set)
    label_only: set[str] = field(default_factory=set)
    mask_sources: dict[str, str] = field(default_factory=dict)

    def is_annotated(self, sample_id: str) -> bool:
        """Whether the sample has a dense target (a mask that fails its image check turns this False)."""
        if sample_id in self.label_only:
            return False
        return sample_id in self.lesion_free or bool(self.lesions.get(sample_id)) or sample_id in self.masks

    def add_problem(self, source: str, sample_id: str, reason: str) -> None:
        """Record a problem (appendable after the read: mask checks need the image grid)."""
        self.problems.append({"source": source, "sample_id": sample_id, "reason": reason})

    def demote(self, sample_id: str, count_key: str, source: str, reason: str) -> None:
        """Make an annotated sample label-only, count why and record the problem."""
        if not self.is_annotated(sample_id):
            return
        self.label_only.add(sample_id)
        self.counts["samples_annotated"] -= 1
        self.counts[count_key] += 1
        self.add_problem(source, sample_id, reason)

    def summary(self) -> str:
        """One line for logs: every count, then the number of problems."""
        counts = ", ".join(f"{key}={self.counts.get(key, 0)}" for key in COUNT_KEYS)
        return f"annotations: {counts}, problems={len(self.problems)}"


def read_annotations(
    manifest: pd.DataFrame,
    lesions: str | Path | None = None,
    masks: str | Path | None = None,
    label_positive: Callable[[str], bool] | None = None,
) -> Annotations:
    """Read a lesion table and / or a masks file and match them to the manifest's samples.

    Args:
        manifest: the manifest (:func:`medrec.manifest.read_manifest`).
        lesions: lesion table CSV (``study_uid`` and / or ``series_uid``, ``center_x``, ``center_y``,
            ``center_z`` in LPS mm, ``diameter_mm``).
        masks: labels-style CSV with a ``mask`` column (NIfTI path relative to the CSV's folder; empty
            when the study has no lesion).
        label_positive: whether a label is the positive class; default: the project's rule
            (:func:`medrec.labels.positive_labels` over the manifest's labels). Empty labels are unknown.

    Returns:
        :class:`Annotations`; problems are listed, never raised.

    Raises:
        AnnotationError: a file is missing, unreadable or lacks a required column (names the file and
            the columns found).
    """
    result = Annotations()
    samples = manifest.astype({"sample_id": str}).reset_index(drop=True)
    labels = {str(s): str(v) for s, v in zip(samples["sample_id"], samples["label"].fillna(""), strict=True)}
    if label_positive is None:
        positive_set = positive_labels(labels.values())
        label_positive = positive_set.__contains__

    table_lesions: dict[str, list[Lesion]] = defaultdict(list)
    if lesions is not None:
        table_lesions = _read_lesion_table(Path(lesions), samples, result)
    mask_cells: dict[str, str] = {}  # sample_id -> mask cell ('' when empty)
    if masks is not None:
        mask_cells = _read_mask_rows(Path(masks), samples, result)

    for sample_id, label in labels.items():
        positive = bool(label) and label_positive(label)
        negative = bool(label) and not positive
        if positive:
            result.positives.add(sample_id)
        cell = mask_cells.get(sample_id)
        found = table_lesions.get(sample_id, [])
        if negative:
            result.lesion_free.add(sample_id)
            if found or cell:
                result.counts["negatives_with_lesions"] += 1
                named = [lesion.source for lesion in found] + ([result.mask_sources[sample_id]] if cell else [])
                result.add_problem("; ".join(named), sample_id,
                                   f"label '{label}' is negative but {len(found)} lesion row(s)"
                                   f"{' and a mask' if cell else ''} give a lesion; its target is kept all zeros")
            continue
        if cell and not Path(cell).is_file():
            result.counts["masks_bad"] += 1
            result.add_problem(result.mask_sources[sample_id], sample_id,
                               f"mask file {cell} not found; the sample is label-only")
            continue
        if found:
            result.lesions[sample_id] = list(found)
        if cell:
            result.masks[sample_id] = Path(cell)
        elif cell is not None and not found and not positive:
            result.masks[sample_id] = None
            result.lesion_free.add(sample_id)
        if positive and not found and not cell:
            result.counts["positives_without_annotation"] += 1
    result.counts["samples_annotated"] = sum(result.is_annotated(s) for s in labels)
    result.counts["samples_lesion_free"] = sum(s in result.lesion_free for s in labels)
    return result


def _read_table(source: Path) -> pd.DataFrame:
    if not source.is_file():
        raise AnnotationError(f"{source}: annotation file not found; pass an existing CSV")
    try:
        sample = source.read_text(encoding="utf-8-sig", errors="replace")[:65536]
        frame = pd.read_csv(source, sep=sniff_delimiter(sample, source), dtype=str, keep_default_na=False,
                            encoding="utf-8-sig", skipinitialspace=True)
    except OSError as e:
        raise AnnotationError(f"{source}: cannot read ({e.strerror})") from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{source}: not a readable CSV ({' '.join(str(e).split())})") from e
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda column: column.str.strip())


def check_lesion_table(path: str | Path) -> None:
    """Fail early on a lesion table that is missing, unreadable or lacks a required column.

    Raises:
        AnnotationError: names the file, the missing columns and the columns found.
    """
    _lesion_columns(_read_table(Path(path)), Path(path))


def _lesion_columns(frame: pd.DataFrame, source: Path) -> tuple[str | None, str | None, dict[str, str]]:
    """The table's study / series key columns and its centre and diameter columns."""
    study_column = find_column(frame, KEY_ALIASES["study_uid"])
    series_column = find_column(frame, SERIES_UID_ALIASES)
    columns = {name: find_column(frame, (name,)) for name in (*CENTER_COLUMNS, DIAMETER_COLUMN)}
    missing = [name for name, column in columns.items() if column is None]
    if study_column is None and series_column is None:
        missing.insert(0, "study_uid or series_uid")
    if missing:
        found = ", ".join(frame.columns) if len(frame.columns) else "(none)"
        raise AnnotationError(
            f"{source}: lesion table lacks column(s) {', '.join(missing)}; columns found: {found}. Expected "
            f"study_uid and / or series_uid, center_x, center_y, center_z (LPS mm), diameter_mm"
        )
    return study_column, series_column, {name: str(column) for name, column in columns.items()}


def _read_lesion_table(source: Path, samples: pd.DataFrame, result: Annotations) -> dict[str, list[Lesion]]:
    frame = _read_table(source)
    study_column, series_column, columns = _lesion_columns(frame, source)
    contrast_column = find_column(frame, (CONTRAST_COLUMN,))
    by_series: dict[str, list[str]] = defaultdict(list)
    by_study: dict[str, list[str]] = defaultdict(list)
    for sample_id, study_uid, series_uid in zip(samples["sample_id"], samples["study_uid"], samples["series_uid"],
                                                strict=True):
        by_series[str(series_uid)].append(sample_id)
        by_study[str(study_uid)].append(sample_id)

    found_lesions: dict[str, list[Lesion]] = defaultdict(list)
    counts = result.counts
    for index in range(len(frame)):
        where = f"{source.name} line {index + 2}"  # line 1 is the header
        counts["lesion_rows"] += 1
        row = frame.iloc[index]
        study_uid = row[study_column] if study_column else ""
        series_uid = row[series_column] if series_column else ""
        center = tuple(_number(row[columns[name]]) for name in CENTER_COLUMNS)
        diameter = _number(row[columns[DIAMETER_COLUMN]])
        reason = ""
        if not study_uid and not series_uid:
            reason = "no study_uid or series_uid"
        elif not all(math.isfinite(value) for value in center):
            given = ", ".join(row[columns[n]] or "empty" for n in CENTER_COLUMNS)
            reason = f"centre ({given}) is not a finite position"
        elif not math.isfinite(diameter) or diameter <= 0:
            reason = f"diameter_mm {row[columns[DIAMETER_COLUMN]] or 'empty'} is not a positive number"
        if reason:
            counts["lesion_rows_bad"] += 1
            result.add_problem(where, "", f"bad lesion row: {reason}; the row is ignored")
            continue
        hits = by_series.get(series_uid, []) if series_uid else []
        if not hits and study_uid:
            hits = by_study.get(study_uid, [])
        if not hits:
            counts["lesion_rows_unmatched"] += 1
            named = " / ".join(f"{kind} {uid}" for kind, uid in (("series_uid", series_uid), ("study_uid", study_uid))
                               if uid)
            result.add_problem(where, "", f"lesion row matches no manifest sample ({named})")
            continue
        counts["lesion_rows_matched"] += 1
        if len(hits) > 1:
            counts["lesion_rows_multi_sample"] += 1
        contrast = _number(row[contrast_column]) if contrast_column else math.nan
        lesion = Lesion(center_lps=center, diameter_mm=diameter, source=where,  # type: ignore[arg-type]
                        contrast=contrast if math.isfinite(contrast) else None)
        for sample_id in hits:
            found_lesions[sample_id].append(lesion)
    return found_lesions


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _read_mask_rows(source: Path, samples: pd.DataFrame, result: Annotations) -> dict[str, str]:
    """Match the masks file to samples; returns sample_id -> absolute mask path ('' for an empty cell)."""
    try:
        table = read_labels(source, label_column=MASK_COLUMN)
    except LabelsError as e:
        raise AnnotationError(f"masks file: {e}") from e
    mask_column = table.label_column
    line_of_cell: dict[str, int] = {}
    frame = table.frame.copy()
    frame[mask_column] = frame[mask_column].where(frame[mask_column] != "", _NO_MASK)
    table.frame = frame
    result.counts["mask_rows"] = len(frame)
    rows = []
    for record in samples.to_dict("records"):
        record = {key: ("" if value is None else value) for key, value in record.items()}
        record["_files"] = series_files(record) if record.get("format") == "dicom" else []
        rows.append(record)
    paths = [str(row["path"]) for row in rows if row.get("path")]
    scans_root = Path(os.path.commonpath(paths)) if paths else source.parent
    if scans_root.is_file():
        scans_root = scans_root.parent
    match = match_labels(table, rows, scans_root)
    for line, cell in zip(range(2, len(frame) + 2), frame[mask_column], strict=True):
        line_of_cell.setdefault(cell, line)
    unmatched_lines = set(int(line) for line in match.unmatched_rows.get("line", []))
    result.counts["mask_rows_unmatched"] = len(unmatched_lines)
    result.counts["mask_rows_matched"] = len(frame) - len(unmatched_lines)
    for line in sorted(unmatched_lines):
        key_value = frame.iloc[line - 2][table.key_columns[match.match_on]]
        result.add_problem(f"{source.name} line {line}", "",
                           f"mask row matches no manifest sample ({match.match_on} {key_value or 'empty'})")
    for sample_id, reason in match.conflicts.items():
        result.counts["mask_conflicts"] += 1
        detail = reason.split(": ", 1)[-1].replace(f"'{_NO_MASK}'", "'' (no lesion)")
        result.add_problem(source.name, sample_id, f"rows disagree on the mask: {detail}; the sample is label-only")
    cells: dict[str, str] = {}
    for sample_id, cell in match.labels.items():
        # a mask path names its row; empty cells are many, so only the file is named for them
        result.mask_sources[sample_id] = source.name if cell == _NO_MASK else f"{source.name} line {line_of_cell[cell]}"
        cells[sample_id] = "" if cell == _NO_MASK else str((source.parent / cell).absolute())
    return cells


def _affine_4x4(affine_ras: np.ndarray, spatial_dims: int) -> np.ndarray:
    """The 4x4 voxel-to-RAS matrix (a 3x3 affine of a 2D image gets the identity as its third axis)."""
    affine = np.asarray(affine_ras, dtype=np.float64)
    if affine.shape == (4, 4):
        return affine
    if affine.shape == (3, 3) and spatial_dims == 2:
        full = np.eye(4)
        full[:2, :2] = affine[:2, :2]
        full[:2, 3] = affine[:2, 2]
        return full
    raise AnnotationError(f"affine must be 4x4 (or 3x3 for a 2D image), got shape {affine.shape}")


def _spatial_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    dims = tuple(int(n) for n in shape)
    if len(dims) not in (2, 3):
        raise AnnotationError(f"target shape must have 2 or 3 spatial dimensions, got {dims}")
    return (*dims, 1) if len(dims) == 2 else dims  # type: ignore[return-value]


def rasterise_spheres(shape: tuple[int, ...], affine_ras: np.ndarray, lesions: Sequence[Lesion]) -> np.ndarray:
    """Mark the voxels of each lesion sphere on a target grid.

    A voxel belongs to a lesion when its centre lies within ``diameter_mm / 2`` of the lesion's
    centre; the voxel holding the centre is always marked (when inside the array), so a lesion
    smaller than a voxel is never lost. A 2D target (a radiograph) is the plane ``k = 0``:
    lesions are projected onto it along the affine's third column and distances are in-plane.

    Args:
        shape: spatial shape, ``(I, J, K)`` or ``(I, J)``.
        affine_ras: 4x4 voxel-to-RAS matrix of the target (3x3 accepted for 2D).
        lesions: lesions with LPS centres.

    Returns:
        uint8 array of ``shape``, 1 inside a lesion.
    """
    grid = _spatial_shape(shape)
    flat = len(tuple(shape)) == 2
    affine = _affine_4x4(affine_ras, len(tuple(shape)))
    inverse = np.linalg.inv(affine)
    target = np.zeros(grid, dtype=np.uint8)
    for lesion in lesions:
        x, y, z = lesion.center_lps
        center_ras = np.array([-x, -y, z, 1.0])
        center_index = (inverse @ center_ras)[:3]
        radius = lesion.diameter_mm / 2.0
        # the sphere's extent along index axis a is radius * |row a of the inverse|
        half = radius * np.linalg.norm(inverse[:3, :3], axis=1)
        lo = np.maximum(np.floor(center_index - half), 0).astype(int)
        hi = np.minimum(np.ceil(center_index + half), np.array(grid) - 1).astype(int)
        if flat:
            lo[2] = hi[2] = 0
        if np.all(hi >= lo):
            axes = [np.arange(lo[a], hi[a] + 1, dtype=np.float64) for a in range(3)]
            if flat:
                axes[2] = np.array([center_index[2]])  # in-plane distance: the voxels at the lesion's depth
            ii, jj, kk = np.meshgrid(*axes, indexing="ij")
            world = np.tensordot(affine[:3, :3], np.stack([ii, jj, kk]), axes=1) + affine[:3, 3, None, None, None]
            inside = np.sum((world - center_ras[:3, None, None, None]) ** 2, axis=0) <= radius**2
            target[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] |= inside.astype(np.uint8)
        nearest = nearest_voxel(lesion.center_lps, shape, affine_ras)
        if nearest is not None:
            target[(*nearest, 0) if flat else nearest] = 1
    return target.reshape(tuple(int(n) for n in shape))


def nearest_voxel(center_lps: Sequence[float], shape: tuple[int, ...],
                  affine_ras: np.ndarray) -> tuple[int, ...] | None:
    """The voxel that holds an LPS point (the one :func:`rasterise_spheres` always marks), or None
    when it lies outside the array. A 2D target gives ``(i, j)``: the point projected onto it.

    Args:
        center_lps: ``(x, y, z)`` patient LPS mm.
        shape: spatial shape, ``(I, J, K)`` or ``(I, J)``.
        affine_ras: 4x4 voxel-to-RAS matrix of the target (3x3 accepted for 2D).
    """
    grid = np.array(_spatial_shape(shape))
    flat = len(tuple(shape)) == 2
    x, y, z = (float(v) for v in center_lps)
    index = (np.linalg.inv(_affine_4x4(affine_ras, len(tuple(shape)))) @ np.array([-x, -y, z, 1.0]))[:3]
    nearest = np.floor(index + 0.5).astype(int)
    if flat:
        nearest[2] = 0
    if not (np.all(nearest >= 0) and np.all(nearest < grid)):
        return None
    return tuple(int(v) for v in nearest[:2]) if flat else tuple(int(v) for v in nearest)


@dataclass(frozen=True)
class _Resampled:
    array: np.ndarray
    source_voxels: int  # lesion voxels in the mask file
    overlaps: bool  # the mask's lesion extent and the target grid intersect in world space


def resample_mask(path: str | Path, shape: tuple[int, ...], affine_ras: np.ndarray) -> np.ndarray:
    """Bring a NIfTI lesion mask onto a target grid by nearest neighbour through the two affines.

    Hand-written rather than ``scipy.ndimage.affine_transform`` so that a target voxel takes the
    source voxel whose extent holds its centre (out-of-grid only beyond half a voxel), a 2D target
    can read a single-slice mask by projection, and a lesion smaller than a target voxel still
    marks the voxel that holds it.

    Args:
        path: NIfTI mask in the scan's world geometry, any grid; values > 0.5 are lesion.
        shape: target spatial shape, ``(I, J, K)`` or ``(I, J)``.
        affine_ras: 4x4 voxel-to-RAS matrix of the target (3x3 accepted for 2D).

    Returns:
        uint8 array of ``shape``; target voxels outside the mask's grid are 0.

    Raises:
        AnnotationError: the file is missing, unreadable, not 2D / 3D, or holds NaN.
    """
    return _resample(Path(path), shape, affine_ras).array


def _load_mask(source: Path) -> tuple[np.ndarray, np.ndarray]:
    if not source.is_file():
        raise AnnotationError(f"{source}: mask file not found")
    try:
        image = nib.load(str(source))
        data = np.asarray(image.dataobj, dtype=np.float32)
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as e:  # nibabel raises many unrelated types for damaged files
        raise AnnotationError(f"{source}: mask is not a readable NIfTI file ({type(e).__name__}: {e})") from e
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise AnnotationError(f"{source}: mask must be 2D or 3D, got shape {data.shape}")
    n_nan = int(np.isnan(data).sum())
    if n_nan:
        raise AnnotationError(f"{source}: mask holds {n_nan} NaN voxel(s) of {data.size}; write 0 / 1 values")
    return data > 0.5, affine


def mask_lesion_diameters(path: str | Path) -> list[float]:
    """Equivalent diameters (mm) of the lesions in a NIfTI mask, one per connected component.

    A component of volume ``V`` counts as a sphere of diameter ``(6 V / pi) ** (1 / 3)``; in a
    single-slice (2D) mask, a component of area ``A`` as a disc of diameter ``2 (A / pi) ** 0.5``.
    Voxels touching by a face belong to one lesion.

    Raises:
        AnnotationError: as :func:`resample_mask` for a missing, unreadable or NaN mask.
    """
    lesion, affine = _load_mask(Path(path))
    flat = lesion.shape[2] == 1
    labelled, count = ndimage.label(lesion[..., 0] if flat else lesion)
    if not count:
        return []
    voxels = np.bincount(labelled.ravel())[1:]
    columns = affine[:3, :3]
    if flat:
        area = float(np.linalg.norm(np.cross(columns[:, 0], columns[:, 1])))
        return [round(2.0 * math.sqrt(n * area / math.pi), 3) for n in voxels]
    volume = abs(float(np.linalg.det(columns)))
    return [round((6.0 * n * volume / math.pi) ** (1.0 / 3.0), 3) for n in voxels]


def _resample(source: Path, shape: tuple[int, ...], affine_ras: np.ndarray) -> _Resampled:
    lesion, source_affine = _load_mask(source)
    grid = _spatial_shape(shape)
    flat = len(tuple(shape)) == 2
    target_affine = _affine_4x4(affine_ras, len(tuple(shape)))
    to_source = np.linalg.inv(source_affine) @ target_affine
    if flat and lesion.shape[2] == 1:
        to_source[2] = 0.0  # a single-slice mask on a 2D image: projection, whatever the depth
    source_shape = np.array(lesion.shape)
    target = np.zeros(grid, dtype=np.uint8)
    ii, jj = np.meshgrid(np.arange(grid[0], dtype=np.float64), np.arange(grid[1], dtype=np.float64), indexing="ij")
    for k in range(grid[2]):  # one slice at a time keeps memory at one slice of indices
        points = to_source[:3, :3] @ np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, float(k))]) + to_source[:3, 3:]
        index = np.floor(points + 0.5).astype(np.int64)
        inside = np.all((index >= 0) & (index < source_shape[:, None]), axis=0)
        values = np.zeros(ii.size, dtype=bool)
        values[inside] = lesion[index[0, inside], index[1, inside], index[2, inside]]
        target[:, :, k] = values.reshape(grid[:2])
    source_voxels = int(lesion.sum())
    overlaps = False
    if source_voxels:
        overlaps = _extents_overlap(lesion, source_affine, grid, target_affine, flat)
        if not target.any() and overlaps:
            # lesion smaller than a target voxel: mark the voxel holding its centroid
            centroid = np.append(np.argwhere(lesion).mean(axis=0), 1.0)
            nearest = np.floor((np.linalg.inv(target_affine) @ source_affine @ centroid)[:3] + 0.5).astype(int)
            if flat:
                nearest[2] = 0
            if np.all(nearest >= 0) and np.all(nearest < np.array(grid)):
                target[tuple(nearest)] = 1
    return _Resampled(target.reshape(tuple(int(n) for n in shape)), source_voxels, overlaps)


def _extents_overlap(lesion: np.ndarray, source_affine: np.ndarray, grid: tuple[int, int, int],
                     target_affine: np.ndarray, flat: bool) -> bool:
    """Whether the lesion voxels' world box meets the target grid's box (both in target index space)."""
    found = np.argwhere(lesion)
    lo, hi = found.min(axis=0) - 0.5, found.max(axis=0) + 0.5
    corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    in_target = (np.linalg.inv(target_affine) @ source_affine @ corners.T)[:3]
    box_lo, box_hi = in_target.min(axis=1), in_target.max(axis=1)
    grid_lo, grid_hi = np.full(3, -0.5), np.array(grid, dtype=np.float64) - 0.5
    if flat:
        box_lo[2], box_hi[2] = grid_lo[2], grid_hi[2]
    return bool(np.all(box_hi >= grid_lo) and np.all(box_lo <= grid_hi))


def annotation_mask(
    annotations: Annotations, sample_id: str, shape: tuple[int, ...], affine_ras: np.ndarray
) -> np.ndarray | None:
    """The dense lesion target of one sample on its image grid, or None when it has none.

    Lesion-table spheres and the sample's mask are combined. A mask that cannot be used on this
    grid (unreadable, NaN, no lesion voxel inside the image) makes the sample label-only: the
    problem is recorded in ``annotations`` (once) and None is returned, now and on later calls.
    An empty mask file on a positive study is counted as a positive without annotation. Call it
    where the results are kept (the main process), not only in data-loader workers.

    Args:
        annotations: from :func:`read_annotations`.
        sample_id: the manifest sample.
        shape: spatial shape of the image, ``(I, J, K)`` or ``(I, J)``.
        affine_ras: the image's 4x4 voxel-to-RAS matrix.

    Returns:
        uint8 array of ``shape`` (1 = lesion), or None.
    """
    if not annotations.is_annotated(sample_id):
        return None
    target = np.zeros(tuple(int(n) for n in shape), dtype=np.uint8)
    if sample_id in annotations.lesion_free:
        return target
    found = annotations.lesions.get(sample_id, [])
    if found:
        target |= rasterise_spheres(shape, affine_ras, found)
    mask_path = annotations.masks.get(sample_id)
    if mask_path is None:
        return target
    source = annotations.mask_sources.get(sample_id, str(mask_path))
    try:
        resampled = _resample(Path(mask_path), shape, affine_ras)
    except AnnotationError as e:
        annotations.demote(sample_id, "masks_bad", source, f"{e}; the sample is label-only")
        return None
    if resampled.source_voxels == 0:
        if found or sample_id not in annotations.positives:
            return target
        annotations.demote(sample_id, "positives_without_annotation", source,
                           f"mask {mask_path} has no lesion voxel but the study is positive; the sample is label-only")
        return None
    if not resampled.array.any():
        where = "lies outside" if not resampled.overlaps else "does not reach"
        annotations.demote(sample_id, "masks_bad", source,
                           f"mask {mask_path} {where} the image: none of its {resampled.source_voxels} lesion voxel(s) "
                           f"falls on the image grid {tuple(shape)}; check that it belongs to this scan")
        return None
    return target | resampled.array


def write_problems(path: str | Path, annotations: Annotations) -> None:
    """Write the problems as a CSV (``source, sample_id, reason``), with its header even when empty."""
    frame = pd.DataFrame(annotations.problems, columns=list(PROBLEM_COLUMNS))
    write_csv(path, frame)
