"""A finding map (NIfTI probabilities) as a binary DICOM Segmentation on the source series' slices.

The map lives on the model's grid; a SEG that a viewer overlays must live on the source
images'. Each source pixel centre goes to LPS mm (ImagePositionPatient + ImageOrientationPatient
x PixelSpacing), then through the inverse of the map's RAS affine (with the LPS <-> RAS flip) to a
voxel, sampled nearest-neighbour (outside the map: 0), and is set where the probability is at
least 0.5 (:data:`BINARIZATION_THRESHOLD`, a property of the map, not the operating threshold on
the calibrated score). The SEG has one frame per source slice, in the order of the slices along
their normal, each referencing its slice.

A map where nothing reaches 0.5 still gives a valid SEG: every frame empty and the content
description saying so. That records that the model ran and marked nothing, and a batch export
needs no special case; the SR says the same in words.
"""

from __future__ import annotations

import os
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from medrec.dicomout import codes as medrec_codes
from medrec.dicomout.geometry import has_plane_geometry, sample_on_slices, sort_along_normal
from medrec.dicomout.identity import (
    INSTANCE_NUMBER,
    MANUFACTURER,
    SEG_SERIES_NUMBER,
    check_one_series,
    long_string,
    object_uids,
    read_image,
    series_description,
    tracking_uid,
)
from medrec.dicomout.results import Algorithm, DicomExportError, SeriesResult
from medrec.errors import NiftiError

BINARIZATION_THRESHOLD = 0.5
SEGMENT_LABEL = "medrec finding"
CONTENT_LABEL = "MEDREC_FINDING"


def read_finding_map(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(probability (I, J, K), RAS affine)`` of a NIfTI finding map; a 2D map gets K = 1.

    Raises:
        NiftiError: the file cannot be read or is not one 2D / 3D volume.
    """
    try:
        image = nib.load(str(path))
        values = np.asarray(image.dataobj, dtype=np.float32)
        affine = np.asarray(image.affine, dtype=float)
    except (OSError, ValueError, ImageFileError) as e:
        raise NiftiError(f"{path}: cannot read the finding map ({e}); pass the NIfTI map medrec score wrote") from e
    while values.ndim > 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3:
        raise NiftiError(f"{path}: finding map has shape {values.shape}; expected one 2D or 3D volume")
    return values, affine


def segment_description(algorithm: Algorithm, result: SeriesResult, series_uid: str) -> hd.seg.SegmentDescription:
    """The one segment: the finding, found automatically by the algorithm, thresholded at 0.5."""
    finding = medrec_codes.finding_code(algorithm.positive_class)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=medrec_codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=finding,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=long_string(algorithm.name),
            family=medrec_codes.ALGORITHM_FAMILY,
            version=long_string(algorithm.version),
            source=MANUFACTURER,
            parameters={
                "weights_sha256": algorithm.weights_sha256,
                "binarization_threshold": f"{BINARIZATION_THRESHOLD:g}",
                "operating_threshold": f"{algorithm.threshold:.6g} ({algorithm.threshold_source})",
            },
        ),
        # the same tracking UID as the series' group in the SR, so the two can be joined
        tracking_uid=tracking_uid(algorithm, series_uid, result.sample_id),
        tracking_id=result.sample_id,
    )
    description.SegmentDescription = long_string(
        f"{finding.meaning} where the finding map probability >= {BINARIZATION_THRESHOLD:g}"
    )
    return description


def finding_seg(result: SeriesResult, finding_map: Path, algorithm: Algorithm) -> hd.seg.Segmentation:
    """A BINARY Segmentation of ``finding_map`` >= 0.5 on the slices of ``result``'s source series.

    Args:
        result: the scored series (its ``source_files`` are read with pixels: highdicom needs them).
        finding_map: NIfTI file of voxel probabilities on any grid, RAS affine (as nibabel reads it).
        algorithm: the model that made the map.

    Returns:
        The SEG dataset (a :class:`highdicom.seg.Segmentation`), one frame per source slice.

    Raises:
        DicomExportError: (a ValueError) the source series has no plane geometry (multi-frame,
            or a radiograph without ImagePositionPatient) to place the map on.
        DicomError: a source file is unreadable or the files span two series.
        NiftiError: the map cannot be read.
    """
    images = [read_image(path) for path in result.source_files]
    check_one_series(images, result.source_files, result.sample_id)
    missing = [str(path) for path, ds in zip(result.source_files, images, strict=True) if not has_plane_geometry(ds)]
    if missing:
        raise DicomExportError(
            f"sample {result.sample_id}: {missing[0]} has no single-frame plane geometry (ImagePositionPatient, "
            "ImageOrientationPatient, PixelSpacing); finding_seg places maps on cross-sectional slices only"
        )
    images = sort_along_normal(images)
    probability, affine_ras = read_finding_map(finding_map)
    mask = sample_on_slices(probability, affine_ras, images) >= BINARIZATION_THRESHOLD

    series_uid = str(images[0].SeriesInstanceUID)
    study_uid = str(images[0].StudyInstanceUID)
    seg_series_uid, seg_instance_uid = object_uids(algorithm, study_uid, "seg", [result.sample_id])
    content = f"finding map >= {BINARIZATION_THRESHOLD:g}"
    if not mask.any():
        content += f" (empty: no voxel reached {BINARIZATION_THRESHOLD:g})"
    return hd.seg.Segmentation(
        source_images=images,
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(algorithm, result, series_uid)],
        series_instance_uid=seg_series_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=seg_instance_uid,
        instance_number=INSTANCE_NUMBER,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=long_string(algorithm.name),
        software_versions=long_string(algorithm.version),
        device_serial_number=algorithm.weights_sha256[:16],
        content_label=CONTENT_LABEL,
        content_description=long_string(content),
        series_description=series_description(algorithm, "finding"),
        # one frame per source slice, empty or not (frames align with the slices one to one)
        omit_empty_frames=False,
    )
