"""One sample's dense lesion target: lesion-table spheres and its mask combined on the image grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medrec.annotations.masks import _resample
from medrec.annotations.record import Annotations
from medrec.annotations.spheres import rasterise_spheres
from medrec.errors import AnnotationError


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
