"""Write synthetic series as DICOM Part 10 files (CT / MR Image Storage, DX For Presentation).

Headers are complete for their IOD (patient, study, series, frame of reference, equipment,
image plane, image pixel, modality image and VOI LUT modules, SOP common) so that any reader
that handles a scanner export handles these. Every UID derives from the seed and the position of
the instance in the cohort; no clock is read, so the same seed gives byte-identical files.
Slices are encoded by :mod:`medrec.synth.dicom_encoder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medrec.atomicio import write_bytes
from medrec.synth.dicom_encoder import SeriesEncoder, SliceValues, apply_slice
from medrec.synth.plan import StudyPlan, make_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
DX_IMAGE_STORAGE_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
SOP_CLASSES = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE, "DX": DX_IMAGE_STORAGE_PRESENTATION}
WINDOWS = {"CT": (40.0, 400.0)}


def ds_number(value: float) -> str:
    """A Decimal String of at most 16 characters that parses back to the value the affine uses."""
    text = f"{round(float(value), 6):.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > 16:
        text = f"{float(value):.10g}"
    return text


@dataclass
class SeriesSpec:
    """One series to write.

    Attributes:
        series_number / description / image_type: header values.
        stored: stored values, vol[i, j, k] (3D) or img[i, j] (2D single image).
        affine_lps: index -> LPS mm (column 2 is the slice step along the normal).
        slice_thickness: SliceThickness in mm (0 for a projection radiograph).
        instance_numbers: InstanceNumber of each slice k (default 1..n along the normal).
        kernel: ConvolutionKernel (CT).
        localizer: a scout image (ImageType ...\\LOCALIZER).
        uid_offset: added to k when deriving SOPInstanceUIDs (single-image specs sharing a series).
    """

    series_number: int
    description: str
    image_type: Sequence[str]
    stored: np.ndarray
    affine_lps: np.ndarray
    slice_thickness: float
    instance_numbers: Sequence[int] | None = None
    kernel: str = ""
    localizer: bool = False
    uid_offset: int = 0

    @property
    def n_slices(self) -> int:
        return 1 if self.stored.ndim == 2 else int(self.stored.shape[2])


def series_uid(plan: StudyPlan, series_number: int) -> str:
    return make_uid(plan.kind, plan.seed, plan.patient_index, plan.study_index, "series", series_number)


def frame_of_reference_uid(plan: StudyPlan) -> str:
    return make_uid(plan.kind, plan.seed, plan.patient_index, plan.study_index, "frame")


def instance_uid(plan: StudyPlan, series_number: int, k: int) -> str:
    return make_uid(plan.kind, plan.seed, plan.patient_index, plan.study_index, "instance", series_number, k)


def _base_dataset(plan: StudyPlan, spec: SeriesSpec, modality: str) -> Dataset:
    scanner = plan.scanner
    ds = Dataset()
    needs_utf8 = any(ord(ch) > 255 for ch in plan.patient_name + plan.patient_id + plan.institution)
    ds.SpecificCharacterSet = "ISO_IR 192" if needs_utf8 else "ISO_IR 100"
    ds.ImageType = list(spec.image_type)
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.StudyDate = plan.study_date
    ds.SeriesDate = plan.study_date
    ds.AcquisitionDate = plan.study_date
    ds.ContentDate = plan.study_date
    ds.StudyTime = plan.study_time
    minutes = int(plan.study_time[2:4]) + spec.series_number
    series_time = f"{plan.study_time[:2]}{min(minutes, 59):02d}{plan.study_time[4:]}"
    ds.SeriesTime = series_time
    ds.AcquisitionTime = series_time
    ds.ContentTime = series_time
    ds.AccessionNumber = plan.accession
    ds.Modality = modality
    ds.Manufacturer = scanner.manufacturer
    ds.InstitutionName = plan.institution
    ds.ReferringPhysicianName = ""
    ds.StationName = scanner.station_name
    ds.StudyDescription = {"CT": "CT ABDOMEN WITH CONTRAST", "MR": "MRI BRAIN WITH AND WITHOUT CONTRAST",
                           "DX": "XR CHEST PA"}[modality]
    ds.SeriesDescription = spec.description
    ds.ManufacturerModelName = scanner.model_name
    ds.PatientName = plan.patient_name
    ds.PatientID = plan.patient_id
    ds.PatientBirthDate = plan.birth_date
    ds.PatientSex = plan.sex
    ds.PatientAge = f"{plan.age:03d}Y"
    ds.BodyPartExamined = {"CT": "ABDOMEN", "MR": "HEAD", "DX": "CHEST"}[modality]
    ds.DeviceSerialNumber = scanner.station_name[-5:]
    ds.SoftwareVersions = scanner.software_versions
    ds.StudyInstanceUID = plan.study_uid
    ds.SeriesInstanceUID = series_uid(plan, spec.series_number)
    ds.StudyID = f"{plan.study_index + 1}"
    ds.SeriesNumber = spec.series_number
    ds.AcquisitionNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = scanner.photometric
    ds.BitsAllocated = 16
    ds.BitsStored = scanner.bits_stored
    ds.HighBit = scanner.bits_stored - 1
    ds.PixelRepresentation = scanner.pixel_representation
    return ds


def _add_modality_module(ds: Dataset, plan: StudyPlan, spec: SeriesSpec, modality: str) -> None:
    scanner = plan.scanner
    extra = scanner.extra
    if modality == "CT":
        ds.KVP = extra["kvp"]
        ds.DataCollectionDiameter = 500.0
        ds.ReconstructionDiameter = ds_number(scanner.field_of_view_mm)
        ds.GantryDetectorTilt = 0.0
        ds.TableHeight = 160.0
        ds.RotationDirection = "CW"
        ds.ExposureTime = extra["exposure_time"]
        ds.XRayTubeCurrent = extra["tube_current"]
        ds.Exposure = extra["tube_current"] * extra["exposure_time"] // 1000
        ds.FilterType = extra["filter_type"]
        ds.ConvolutionKernel = spec.kernel or scanner.kernel
        ds.PatientPosition = "HFS"
        ds.ContrastBolusAgent = "IOHEXOL"
        ds.ContrastBolusRoute = "IV"
    elif modality == "MR":
        ds.ScanningSequence = ["GR", "IR"] if extra["ti"] else ["GR"]
        ds.SequenceVariant = ["SP", "MP"]
        ds.ScanOptions = ["IR"] if extra["ti"] else ""
        ds.MRAcquisitionType = "3D"
        ds.SequenceName = scanner.kernel
        ds.RepetitionTime = extra["tr"]
        ds.EchoTime = extra["te"]
        if extra["ti"]:
            ds.InversionTime = extra["ti"]
        ds.NumberOfAverages = 1
        ds.ImagingFrequency = extra["frequency"]
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = 1
        ds.MagneticFieldStrength = extra["field_strength"]
        ds.EchoTrainLength = 1
        ds.FlipAngle = extra["flip"]
        ds.PatientPosition = "HFS"
        ds.ContrastBolusAgent = "GADOBUTROL"
        ds.ContrastBolusRoute = "IV"
    else:
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.KVP = extra["kvp"]
        ds.DistanceSourceToDetector = extra["sid"]
        ds.DistanceSourceToPatient = extra["sod"]
        ds.ExposureTime = 12
        ds.XRayTubeCurrent = 320
        ds.Exposure = 4
        ds.DetectorType = extra["detector"]
        ds.ViewPosition = "PA"
        ds.PatientOrientation = ["L", "F"]
        ds.PixelIntensityRelationship = "LOG"
        # +1: lower stored values mean less beam intensity (MONOCHROME1: bone low); -1 the reverse
        ds.PixelIntensityRelationshipSign = 1 if scanner.photometric == "MONOCHROME1" else -1
        ds.PresentationLUTShape = "INVERSE" if scanner.photometric == "MONOCHROME1" else "IDENTITY"
        ds.LossyImageCompression = "00"
        ds.BurnedInAnnotation = "NO"


def _window(plan: StudyPlan, modality: str) -> tuple[float, float]:
    if modality in WINDOWS:
        return WINDOWS[modality]
    scanner = plan.scanner
    if modality == "MR":
        return round(0.6 * scanner.gain, 1), round(1.2 * scanner.gain, 1)
    lo = scanner.offset + 0.2 * scanner.gain
    hi = scanner.offset + 1.4 * scanner.gain
    return round((lo + hi) / 2.0, 1), round(hi - lo, 1)


def series_template(plan: StudyPlan, spec: SeriesSpec):  # Dataset, callable
    """The header shared by every slice of ``spec`` and a function ``k -> SliceValues``."""
    modality = plan.phantom.modality
    scanner = plan.scanner
    ds = _base_dataset(plan, spec, modality)
    _add_modality_module(ds, plan, spec, modality)
    affine = spec.affine_lps
    row_spacing = float(np.linalg.norm(affine[:3, 1]))  # mm between rows (along the column direction)
    col_spacing = float(np.linalg.norm(affine[:3, 0]))  # mm between columns (along the row direction)
    row_dir = affine[:3, 0] / col_spacing
    col_dir = affine[:3, 1] / row_spacing
    pixel_spacing = [ds_number(row_spacing), ds_number(col_spacing)]
    if modality == "DX":
        ds.ImagerPixelSpacing = pixel_spacing
        ds.PixelSpacing = pixel_spacing
    else:
        ds.FrameOfReferenceUID = frame_of_reference_uid(plan)
        ds.PositionReferenceIndicator = ""
        ds.PixelSpacing = pixel_spacing
        ds.ImageOrientationPatient = [ds_number(v) for v in (*row_dir, *col_dir)]
        ds.SliceThickness = ds_number(spec.slice_thickness)
        if spec.n_slices > 1:
            ds.SpacingBetweenSlices = ds_number(float(np.linalg.norm(affine[:3, 2])))
    if scanner.write_rescale or modality in ("CT", "DX"):
        ds.RescaleIntercept = ds_number(scanner.rescale_intercept)
        ds.RescaleSlope = ds_number(scanner.rescale_slope)
        ds.RescaleType = {"CT": "HU", "MR": "US", "DX": "US"}[modality]
    center, width = _window(plan, modality)
    if scanner.photometric == "MONOCHROME1":
        # VOI window applies to stored values, which are inverted
        center = round(2**scanner.bits_stored - 1 - center, 1)
    ds.WindowCenter = ds_number(center)
    ds.WindowWidth = ds_number(width)
    ds.WindowCenterWidthExplanation = "DEFAULT"
    first = spec.stored if spec.stored.ndim == 2 else spec.stored[:, :, 0]
    ds.Columns, ds.Rows = first.shape
    ds.preamble = b"\x00" * 128
    normal = np.cross(row_dir, col_dir)
    dtype = np.int16 if scanner.pixel_representation else np.uint16
    numbers = list(spec.instance_numbers) if spec.instance_numbers is not None else list(range(1, spec.n_slices + 1))

    def values(k: int) -> SliceValues:
        plane = spec.stored if spec.stored.ndim == 2 else spec.stored[:, :, k]
        position = location = None
        if modality != "DX":
            point = affine[:3, 3] + k * affine[:3, 2]
            position = [ds_number(v) for v in point]
            location = ds_number(float(point @ normal))
        return SliceValues(
            sop_instance_uid=instance_uid(plan, spec.series_number, spec.uid_offset + k),
            instance_number=int(numbers[k]),
            position=position,
            slice_location=location,
            pixels=np.ascontiguousarray(plane.T.astype(dtype)),
        )

    return ds, values


def build_series_datasets(plan: StudyPlan, spec: SeriesSpec):  # generator of (k, Dataset)
    """Yield ``(k, dataset)`` per slice; the same Dataset object is updated in place between yields."""
    ds, values = series_template(plan, spec)
    for k in range(spec.n_slices):
        yield k, apply_slice(ds, values(k))


def write_series(plan: StudyPlan, spec: SeriesSpec, paths: Sequence[Path]) -> list[Path]:
    """Write one file per slice of ``spec`` to ``paths[k]`` (atomically); returns the paths."""
    if len(paths) != spec.n_slices:
        raise ValueError(f"write_series: {len(paths)} paths for {spec.n_slices} slices")
    template, values = series_template(plan, spec)
    encoder = SeriesEncoder(template, values(0))
    for k in range(spec.n_slices):
        write_bytes(paths[k], encoder.encode(values(k)), fsync=False)
    return list(paths)
