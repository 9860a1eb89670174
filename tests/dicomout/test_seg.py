"""finding_seg: a NIfTI sphere on its own grid, resampled onto the source slices, checked pixel by pixel."""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from medrec.dicomout import DicomExportError, SeriesResult, finding_seg, study_sr, write_dataset
from medrec.dicomout.codes import MORPHOLOGICALLY_ABNORMAL_STRUCTURE, finding_code
from medrec.errors import NiftiError
from tests.dicomout.conftest import headers, pixel_centre_lps

RADIUS_MM = 30.0
VOXEL_MM = (4.0, 4.0, 5.0)
# The map's grid is rotated against the CT's: voxel axis i runs anterior (+y RAS), j runs left
# (-x RAS), k runs superior; so a missed LPS <-> RAS flip or a transposed affine moves the sphere.
MAP_DIRECTIONS = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
MAP_SHAPE = (40, 36, 30)


def _sphere_map(path, centre_lps, radius_mm=RADIUS_MM, inside=1.0, outside=0.3):
    """A NIfTI map: ``inside`` where the voxel centre is within ``radius_mm`` of ``centre_lps``, else ``outside``."""
    centre_ras = np.array(centre_lps) * [-1.0, -1.0, 1.0]
    affine = np.eye(4)
    affine[:3, :3] = MAP_DIRECTIONS * np.array(VOXEL_MM)
    middle = (np.array(MAP_SHAPE) - 1) / 2.0
    affine[:3, 3] = centre_ras - affine[:3, :3] @ middle + [3.0, -2.0, 1.5]  # sphere off the grid's centre
    index = np.indices(MAP_SHAPE).reshape(3, -1)
    ras = (affine[:3, :3] @ index).T + affine[:3, 3]
    distance = np.linalg.norm(ras - centre_ras, axis=1).reshape(MAP_SHAPE)
    values = np.where(distance <= radius_mm, inside, outside).astype(np.float32)
    nib.save(nib.Nifti1Image(values, affine), str(path))
    return path


@pytest.fixture(scope="module")
def sphere(lesion_study, algorithm, tmp_path_factory):
    """(result, written SEG path) for a sphere at the study's lesion centre."""
    folder = tmp_path_factory.mktemp("seg")
    result = SeriesResult("P0002-S01", list(reversed(lesion_study.files)), score=0.9)
    seg = finding_seg(result, _sphere_map(folder / "map.nii.gz", lesion_study.lesions[0].center_lps), algorithm)
    return result, write_dataset(seg, folder / "out")


def test_frames_align_with_the_source_slices(sphere, lesion_study):
    _result, path = sphere
    seg = pydicom.dcmread(path)
    sources = {ds.SOPInstanceUID: ds for ds in headers(lesion_study.files)}
    assert int(seg.NumberOfFrames) == len(sources)
    referenced = []
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        referenced.append(uid)
        np.testing.assert_allclose(np.array(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float),
                                   np.array(sources[uid].ImagePositionPatient, dtype=float), atol=1e-3)
    assert sorted(referenced) == sorted(sources)  # every slice once


def test_segmented_pixels_are_the_sphere(sphere, lesion_study):
    _result, path = sphere
    seg = pydicom.dcmread(path)
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    sources = {ds.SOPInstanceUID: ds for ds in headers(lesion_study.files)}
    centre = np.array(lesion_study.lesions[0].center_lps)
    border = float(np.linalg.norm(VOXEL_MM))  # one map voxel (its diagonal) either way
    core = edge = 0
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        source = sources[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        rows, columns = np.indices(frame.shape)
        for row, column in zip(rows.ravel(), columns.ravel(), strict=True):
            distance = np.linalg.norm(pixel_centre_lps(source, column, row) - centre)
            if distance <= RADIUS_MM - border:
                assert frame[row, column] == 1, (source.InstanceNumber, row, column, distance)
                core += 1
            elif distance > RADIUS_MM + border:
                assert frame[row, column] == 0, (source.InstanceNumber, row, column, distance)
            else:
                edge += 1
    assert core > 20 and edge > 0
    assert frames.sum() >= core


def test_segment_describes_the_finding_and_joins_the_sr(sphere, lesion_study, algorithm):
    result, path = sphere
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG" and seg.SeriesNumber == 9902
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "medrec finding"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert "0.5" in segment.SegmentDescription
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == MORPHOLOGICALLY_ABNORMAL_STRUCTURE.value
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == finding_code("lesion").value
    algorithm_item = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm_item.AlgorithmName == "finding_fcn" and algorithm_item.AlgorithmVersion == "0.1.0"
    assert algorithm.weights_sha256 in algorithm_item.AlgorithmParameters
    source = pydicom.dcmread(lesion_study.files[0], stop_before_pixels=True)
    assert (seg.PatientID, seg.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)
    sr = hd.sr.Comprehensive3DSR.from_dataset(study_sr([result], algorithm))
    (group,) = sr.content.get_image_measurement_groups()
    assert segment.TrackingUID == group.tracking_uid  # the SR group and the segment are one finding


def test_same_inputs_same_uids(sphere, lesion_study, algorithm, tmp_path):
    result, path = sphere
    again = finding_seg(result, _sphere_map(tmp_path / "map.nii.gz", lesion_study.lesions[0].center_lps), algorithm)
    first = pydicom.dcmread(path, stop_before_pixels=True)
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (first.SOPInstanceUID, first.SeriesInstanceUID)


def test_empty_map_gives_a_valid_empty_seg(lesion_study, algorithm, tmp_path):
    result = SeriesResult("P0002-S01", lesion_study.files, score=0.1)
    low = _sphere_map(tmp_path / "low.nii.gz", lesion_study.lesions[0].center_lps, inside=0.49, outside=0.0)
    path = write_dataset(finding_seg(result, low, algorithm), tmp_path / "out")
    seg = hd.seg.segread(path)
    assert int(seg.NumberOfFrames) == len(lesion_study.files)  # one (empty) frame per slice
    assert not np.any(pydicom.dcmread(path).pixel_array)
    assert "empty" in seg.ContentDescription


def test_unreadable_map_and_missing_geometry_are_refused(lesion_study, algorithm, tmp_path):
    result = SeriesResult("P0002-S01", lesion_study.files, score=0.1)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    with pytest.raises(NiftiError, match="broken.nii.gz"):
        finding_seg(result, broken, algorithm)
    flat = pydicom.dcmread(lesion_study.files[0])
    del flat.ImagePositionPatient
    flat.save_as(tmp_path / "flat.dcm")
    with pytest.raises(DicomExportError, match="plane geometry"):
        finding_seg(SeriesResult("flat", [tmp_path / "flat.dcm"], score=0.1), broken, algorithm)
