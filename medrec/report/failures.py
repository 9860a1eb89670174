"""The failure review: the slice each flagged case is shown on, the marks drawn on it, and the
patient's other studies.

A missed positive shown on the middle slice of its volume, with nothing marked, cannot be
reviewed. The report's failure analysis therefore shows a flagged case (a false negative or a
false positive) on

1. the slice through the centre of its **annotated lesion**: a lesion of the ``--lesions`` table
   (the largest whose centre lies in the image, circled at its radius), else the lesion mask that
   the ``mask`` column of the labels file names (``medrec synth --masks`` writes one; shown on the
   slice where the mask is largest, outlined);
2. else the slice of the model's **top finding** (``finding_x``, ``finding_y``, ``finding_z`` of
   the predictions, LPS mm), marked by a crosshair;
3. else the middle slice (the caller tries the saliency overlay of ``medrec score --explain``
   first).

With both a lesion and a top finding the lesion's slice is shown, and the top finding is marked on
it when it lies there (the note names its slice otherwise). Lesions are matched to samples as the
lesion-level results match them (:func:`medrec.annotations.read_annotations`: by series, then by
study), and a reference-negative sample has no lesion, whatever the table says. LPS millimetres
become voxel indices through the loaded image's voxel-to-RAS affine by
:func:`medrec.annotations.nearest_voxel`, the rule the finding-map training targets use for a
lesion's centre, so a mark sits on the voxel the lesion was trained on.

Beside each case the report lists the same patient's other analysed rows (:func:`other_studies`),
so that a reader sees whether the model missed the patient or only this study.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medrec.annotations import (
    MASK_COLUMN,
    Annotations,
    Lesion,
    annotation_mask,
    nearest_voxel,
    read_annotations,
)
from medrec.errors import LabelsError
from medrec.index.labels import read_labels
from medrec.loader import load_volume
from medrec.loader.volume import Volume
from medrec.report import figures as figs
from medrec.report.analysis import analysed_rows

Point = tuple[float, float, float]
OtherStudy = tuple[str, float | None, str]  # (sample id as shown, score, reference label)
FINDING_POSITION_COLUMNS: tuple[str, ...] = ("finding_x", "finding_y", "finding_z")


@dataclass(frozen=True)
class ReviewSlice:
    """The picture of one case: which slice, what is marked on it, and the note that says so.

    Attributes:
        kind: ``lesion`` (an annotated lesion's slice), ``finding`` (the top finding's) or ``middle``.
        index: the slice ``k`` of a volume (None for a 2D image).
        n_slices: the volume's slices (None for a 2D image).
        note: the picture's note, e.g. "lesion slice 14/40, annotated lesion 12 mm".
        circles: ``(row, col, radius_rows, radius_cols)`` in display pixels, one per annotated lesion
            centred on this slice (:func:`medrec.report.figures.mark_slice`).
        crosses: ``(row, col)`` of the top finding when it lies on this slice.
        outline: the lesion mask on this slice in display orientation (rows, cols), or None.
    """

    kind: str
    index: int | None
    n_slices: int | None
    note: str
    circles: tuple[tuple[float, float, float, float], ...] = ()
    crosses: tuple[tuple[float, float], ...] = ()
    outline: np.ndarray | None = field(default=None, compare=False)


def voxel_of(point_lps: Sequence[float], shape: tuple[int, ...], affine_ras: np.ndarray) -> tuple[int, ...] | None:
    """The voxel index that holds an LPS point, or None when the point lies outside the image.

    Args:
        point_lps: ``(x, y, z)`` patient LPS mm.
        shape: spatial shape, ``(I, J, K)`` or ``(I, J)`` (a 2D image: the point is projected onto it).
        affine_ras: the image's voxel-to-RAS matrix.
    """
    return nearest_voxel(point_lps, shape, affine_ras)


def _mm(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def review_slice(
    shape: tuple[int, ...],
    affine_ras: np.ndarray,
    lesions: Sequence[Lesion] = (),
    lesion_mask: np.ndarray | None = None,
    finding: Point | None = None,
) -> ReviewSlice:
    """Choose the slice of a case and its marks: annotated lesion, else top finding, else the middle.

    Args:
        shape: the image's spatial shape, ``(I, J, K)`` or ``(I, J)``.
        affine_ras: its 4x4 voxel-to-RAS matrix (``medrec.loader``'s geometry).
        lesions: the case's lesions of the lesion table (LPS centres).
        lesion_mask: the case's lesion mask on the image grid (used when no lesion of the table lies
            in the image).
        finding: the model's top finding, LPS mm.

    Returns:
        The :class:`ReviewSlice`; slices in its note count from 1.
    """
    shape = tuple(int(n) for n in shape)
    volume = len(shape) == 3
    n_slices = shape[2] if volume else None
    # mm per voxel along i (display columns) and j (display rows)
    spacing_i, spacing_j = (float(v) for v in np.linalg.norm(np.asarray(affine_ras, dtype=np.float64)[:3, :2], axis=0))
    top = voxel_of(finding, shape, affine_ras) if finding is not None else None

    def where(k: int | None) -> str:
        return f"slice {k + 1}/{n_slices}" if k is not None else ""

    def finding_on(k: int | None) -> tuple[tuple[tuple[float, float], ...], str]:
        if top is None:
            return (), ""
        if not volume or top[2] == k:
            return ((top[1], top[0]),), "; top finding (+) on this slice" if volume else "; top finding (+)"
        return (), f"; top finding on slice {top[2] + 1}"

    placed = [(lesion, voxel) for lesion in lesions
              if (voxel := voxel_of(lesion.center_lps, shape, affine_ras)) is not None]
    if placed:
        largest, centre = max(placed, key=lambda item: item[0].diameter_mm)  # the first of the largest
        k = centre[2] if volume else None
        circles = tuple((voxel[1], voxel[0], lesion.diameter_mm / 2 / spacing_j, lesion.diameter_mm / 2 / spacing_i)
                        for lesion, voxel in placed if not volume or voxel[2] == k)
        crosses, finding_note = finding_on(k)
        note = (f"lesion {where(k)}, " if volume else "") + f"annotated lesion {_mm(largest.diameter_mm)} mm"
        note += f" (largest of {len(placed)})" if len(placed) > 1 else ""
        return ReviewSlice("lesion", k, n_slices, note + finding_note, circles, crosses)
    if lesion_mask is not None and np.any(lesion_mask):
        mask = np.asarray(lesion_mask, dtype=bool)
        k = int(np.argmax(mask.sum(axis=(0, 1)))) if volume else None  # where the lesion is largest
        plane = mask[:, :, k] if k is not None else mask
        crosses, finding_note = finding_on(k)
        note = (f"lesion {where(k)}, " if volume else "") + "annotated lesion (mask outline)"
        return ReviewSlice("lesion", k, n_slices, note + finding_note, (), crosses, plane.T.copy())
    if top is not None:
        k = top[2] if volume else None
        note = f"slice of the top finding {k + 1}/{n_slices} (+)" if k is not None else "top finding (+)"
        return ReviewSlice("finding", k, n_slices, note, (), ((top[1], top[0]),))
    if volume:
        return ReviewSlice("middle", shape[2] // 2, n_slices, f"middle {where(shape[2] // 2)}")
    return ReviewSlice("middle", None, None, "image")


def review_picture(scan: Volume, choice: ReviewSlice) -> np.ndarray:
    """The chosen slice of ``scan``, windowed for display, with the choice's marks (RGB when marked).

    Raises:
        ValueError: the scan is neither 2D nor 3D.
    """
    array = np.asarray(scan.array)
    plane = array[:, :, choice.index] if choice.index is not None and array.ndim == 3 else array
    picture = figs.display_slice(plane, scan.modality)
    if choice.circles or choice.crosses or choice.outline is not None:
        return figs.mark_slice(picture, choice.circles, choice.crosses, choice.outline)
    return picture


def load_scan(row: Mapping, max_bytes: int) -> tuple[Volume | None, str]:
    """The scan of a manifest row, or None and why not (the error's type only: messages name paths)."""
    try:
        scan = load_volume(row, max_bytes=max_bytes)
    except Exception as e:  # noqa: BLE001 - one unreadable scan must not stop the report
        return None, f"unreadable ({type(e).__name__})"
    if scan.array.ndim not in (2, 3):
        return None, "unsupported image shape"
    return scan, ""


# ------------------------------------------------------------------------------------------------
# Where the annotations and findings come from
# ------------------------------------------------------------------------------------------------


def masks_file(labels: str | Path | None) -> Path | None:
    """The labels file when it names lesion masks (a ``mask`` column), else None."""
    if labels is None:
        return None
    try:
        read_labels(labels, label_column=MASK_COLUMN)
    except LabelsError:
        return None
    return Path(labels)


def case_annotations(
    manifest_rows: Iterable[Mapping],
    references: Mapping[str, str],
    positive_label: str,
    lesions: str | Path | None = None,
    masks: str | Path | None = None,
) -> Annotations | None:
    """The lesion annotations of the pictured samples.

    Args:
        manifest_rows: the manifest's rows, each sample once (masks are matched against all of them,
            as ``medrec index`` matches them).
        references: pictured sample id -> the reference label of the report row it stands for (it
            decides whether the sample may have a lesion); other samples count as unlabelled.
        positive_label: the positive class.
        lesions: the lesion table (``--lesions``).
        masks: a labels-style file with a ``mask`` column (:func:`masks_file`).

    Returns:
        :class:`~medrec.annotations.Annotations`, or None when neither file is given.

    Raises:
        AnnotationError: a file is missing, unreadable or lacks a required column.
    """
    if lesions is None and masks is None:
        return None
    frame = pd.DataFrame([dict(row) for row in manifest_rows])
    for column in ("sample_id", "study_uid", "series_uid"):
        if column not in frame.columns:
            frame[column] = ""
    frame["sample_id"] = frame["sample_id"].astype(str)
    frame = frame.drop_duplicates("sample_id").reset_index(drop=True)
    frame["label"] = [references.get(sample_id, "") for sample_id in frame["sample_id"]]
    return read_annotations(frame, lesions=lesions, masks=masks, label_positive=lambda label: label == positive_label)


def case_lesions(annotations: Annotations | None, sample_id: str) -> list[Lesion]:
    """The sample's lesions of the lesion table (none for a reference-negative sample)."""
    return list(annotations.lesions.get(sample_id, [])) if annotations is not None else []


def has_mask(annotations: Annotations | None, sample_id: str) -> bool:
    """Whether a lesion mask is named for the sample."""
    return annotations is not None and annotations.masks.get(sample_id) is not None


def case_mask(annotations: Annotations, sample_id: str, scan: Volume) -> np.ndarray | None:
    """The sample's lesion mask on the scan's grid, or None (no mask, or one unusable on this grid)."""
    target = annotation_mask(annotations, sample_id, scan.array.shape, scan.affine_ras)
    return target if target is not None and target.any() else None


def top_findings(predictions: pd.DataFrame) -> dict[str, Point]:
    """Row ``sample_id`` -> the top finding (``finding_x/y/z``, LPS mm) of the rows that have one."""
    if not set(FINDING_POSITION_COLUMNS) <= set(predictions.columns):
        return {}
    points = predictions[list(FINDING_POSITION_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    return {str(sample_id): (float(point[0]), float(point[1]), float(point[2]))
            for sample_id, point in zip(predictions["sample_id"], points, strict=True) if np.isfinite(point).all()}


# ------------------------------------------------------------------------------------------------
# The patient's other studies
# ------------------------------------------------------------------------------------------------


def other_studies(predictions: pd.DataFrame, sample_id: str, patient_id: str) -> tuple[OtherStudy, ...]:
    """The same patient's other analysed rows, in file order: ``(sample id, score, reference label)``.

    A row is analysed when the analysis keeps it (:func:`medrec.report.analysis.analysed_rows`: no
    error, a reference label and a finite score). A row without a patient id is a patient of
    its own, so it has no other study.

    Args:
        predictions: the rows as the report shows them (identifiers pseudonymised unless kept).
        sample_id: the flagged row's sample id, as shown.
        patient_id: its patient id, as shown.
    """
    if not patient_id or "score" not in predictions.columns or "patient_id" not in predictions.columns:
        return ()
    scores = pd.to_numeric(predictions["score"], errors="coerce")
    same = analysed_rows(predictions) & predictions["patient_id"].astype(str).eq(patient_id) \
        & predictions["sample_id"].astype(str).ne(sample_id)
    return tuple((str(row_id), float(score) if math.isfinite(score) else None, str(label).strip())
                 for row_id, score, label in zip(predictions.loc[same, "sample_id"], scores[same],
                                                 predictions.loc[same, "label"], strict=True))
