"""medrec's results for one study as a Comprehensive 3D SR (TID 1500 Measurement Report) via highdicom.

Content (see :mod:`medrec.dicomout.codes` for every code and why):

- observation context: the algorithm as a device observer (name, manufacturer ``medrec``, model
  name, a UID derived from the weights' sha256);
- procedure reported: CT / MR / plain radiography / imaging procedure, by the sources' Modality;
- one measurement group per scored series, tracked by its ``sample_id`` and a stable UID, holding
  the algorithm identification (TID 4019: name, version, weights sha256, threshold and its
  source), the finding type, the calibrated score (``Probability``, unit ``1``) and the decision
  ``<finding> = Present | Absent`` (``score >= threshold``). Without a finding the group is a TID 1501
  group that references every slice of the series. With a finding it is a TID 1410 planar ROI: a
  CIRCLE of the finding's diameter around its centre on the slice nearest to it, the finding's
  probability (``Probability``, derivation ``Maximum``: the peak of the map) and its diameter. A
  finding off every slice (beyond half a slice spacing from the nearest plane, or off the image)
  is a SCOORD3D POINT in the series' frame of reference instead; a series without plane geometry
  (a radiograph without ImagePositionPatient) gets the finding's numbers without a location.
- the study score, when given, is one more TID 1501 group tracked as ``study``, with its own
  ``Probability`` and decision at the same threshold (medrec's study rows use the same rule). A
  group rather than a document-level evaluation because TID 1500's document-level evaluations carry
  no numbers and highdicom's MeasurementReport does not write them.

Patient and study attributes come from the first result's first file (highdicom copies them from
the first evidence dataset); nothing else is added. The SR is COMPLETE (every result given is in
it), PRELIMINARY and UNVERIFIED (no person has reviewed it).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from medrec.dicomout import codes as medrec_codes
from medrec.dicomout.geometry import has_plane_geometry, nearest_slice
from medrec.dicomout.identity import (
    INSTANCE_NUMBER,
    MANUFACTURER,
    SR_SERIES_NUMBER,
    device_uid,
    long_string,
    object_uids,
    read_series_headers,
    series_description,
    stable_uid,
    tracking_uid,
)
from medrec.dicomout.results import Algorithm, DicomExportError, Finding, SeriesResult

STUDY_TRACKING_IDENTIFIER = "study"


def algorithm_parameters(algorithm: Algorithm) -> list[str]:
    """The TID 4019 Algorithm Parameters: what identifies the weights and the decision rule."""
    return [
        f"weights_sha256={algorithm.weights_sha256}",
        f"operating_threshold={algorithm.threshold:.6g} ({algorithm.threshold_source}); score >= threshold is positive",
        f"positive_class={algorithm.positive_class}",
    ]


def _algorithm_id(algorithm: Algorithm) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version, parameters=algorithm_parameters(algorithm),
        manufacturer=MANUFACTURER,
    )


def _decision(algorithm: Algorithm, score: float) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(
        name=medrec_codes.finding_code(algorithm.positive_class),
        value=medrec_codes.PRESENT if algorithm.is_positive(score) else medrec_codes.ABSENT,
    )


def _probability(value: float, derivation: hd.sr.CodedConcept | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=medrec_codes.PROBABILITY, value=float(value), unit=medrec_codes.NO_UNITS,
                             derivation=derivation)


def finding_region(finding: Finding, headers: Sequence[Dataset]) -> hd.sr.ImageRegion | hd.sr.ImageRegion3D | None:
    """Where the finding is: a CIRCLE on the nearest slice, a SCOORD3D POINT off the slices, None without geometry."""
    if not all(has_plane_geometry(ds) for ds in headers):
        return None
    seen = nearest_slice(headers, finding.center_lps)
    if not seen.inside:
        return hd.sr.ImageRegion3D(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=np.array([finding.center_lps], dtype=float),
            frame_of_reference_uid=seen.dataset.FrameOfReferenceUID,
        )
    radius_columns = finding.diameter_mm / 2.0 / float(seen.dataset.PixelSpacing[1])
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
        # centre, then a point on the circle along the row
        graphic_data=np.array([[seen.column, seen.row], [seen.column + radius_columns, seen.row]], dtype=float),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=seen.dataset.SOPClassUID,
            referenced_sop_instance_uid=seen.dataset.SOPInstanceUID,
        ),
    )


def _series_group(
    result: SeriesResult, headers: Sequence[Dataset], algorithm: Algorithm,
) -> hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    tracking = hd.sr.TrackingIdentifier(
        uid=tracking_uid(algorithm, headers[0].SeriesInstanceUID, result.sample_id),
        identifier=result.sample_id,  # TEXT (UT): no length limit
    )
    common = {
        "tracking_identifier": tracking,
        "finding_type": medrec_codes.finding_code(algorithm.positive_class),
        "algorithm_id": _algorithm_id(algorithm),
        "qualitative_evaluations": [_decision(algorithm, result.score)],
    }
    measurements = [_probability(result.score)]
    region = None
    if result.finding is not None:
        measurements += [
            _probability(result.finding.probability, derivation=medrec_codes.MAXIMUM),
            hd.sr.Measurement(name=medrec_codes.DIAMETER, value=float(result.finding.diameter_mm),
                              unit=medrec_codes.MILLIMETER),
        ]
        region = finding_region(result.finding, headers)
    if region is not None:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=region, measurements=measurements, **common,
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        measurements=measurements,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(ds.SOPClassUID, ds.SOPInstanceUID) for ds in headers
        ],
        **common,
    )


def _study_group(
    study_score: float, study_uid: str, algorithm: Algorithm,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    if not (0.0 <= float(study_score) <= 1.0):
        raise DicomExportError(f"study_score must be a probability in [0, 1], got {study_score!r}")
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=stable_uid("tracking", "study", algorithm.weights_sha256, study_uid),
            identifier=STUDY_TRACKING_IDENTIFIER,
        ),
        finding_type=medrec_codes.finding_code(algorithm.positive_class),
        algorithm_id=_algorithm_id(algorithm),
        measurements=[_probability(study_score)],
        qualitative_evaluations=[_decision(algorithm, float(study_score))],
    )


def _common_study(results: Sequence[SeriesResult], headers: Sequence[Sequence[Dataset]]) -> str:
    first_uid, first_sample = headers[0][0].StudyInstanceUID, results[0].sample_id
    for result, series in zip(results, headers, strict=True):
        if series[0].StudyInstanceUID != first_uid:
            raise DicomExportError(
                f"study_sr takes the results of one study: sample {first_sample} is in study {first_uid}, "
                f"sample {result.sample_id} in study {series[0].StudyInstanceUID}; write one SR per study "
                "(group the results by study_uid)"
            )
    return str(first_uid)


def study_sr(
    results: Sequence[SeriesResult], algorithm: Algorithm, study_score: float | None = None,
) -> hd.sr.Comprehensive3DSR:
    """One Comprehensive 3D SR (TID 1500 Measurement Report) with the results of one study.

    Args:
        results: the study's scored series (at least one; distinct sample ids).
        algorithm: the model that scored them.
        study_score: the study's aggregated score, written as a group of its own (module docstring).

    Returns:
        The SR dataset (a :class:`highdicom.sr.Comprehensive3DSR`); UIDs are stable for the same
        weights, study and sample ids.

    Raises:
        DicomExportError: (a ValueError) no results, a repeated sample id, results from two studies
            (the message names both), or a probability outside [0, 1].
        DicomError: a source file is unreadable or a result's files span two series.
    """
    if not results:
        raise DicomExportError("study_sr needs at least one SeriesResult")
    sample_ids = [result.sample_id for result in results]
    repeated = sorted({s for s in sample_ids if sample_ids.count(s) > 1})
    if repeated:
        raise DicomExportError(f"study_sr: sample ids {repeated} appear more than once; give each series once")
    headers = [read_series_headers(result) for result in results]
    study_uid = _common_study(results, headers)

    groups: list = [_series_group(result, series, algorithm) for result, series in zip(results, headers, strict=True)]
    if study_score is not None:
        groups.append(_study_group(study_score, study_uid, algorithm))
    modalities = sorted({str(series[0].Modality) for series in headers})
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device,
                observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                    uid=device_uid(algorithm), name=long_string(algorithm.name), manufacturer_name=MANUFACTURER,
                    model_name=long_string(algorithm.name),
                ),
            ),
        ),
        procedure_reported=[medrec_codes.procedure_code(modality) for modality in modalities],
        imaging_measurements=groups,
    )
    series_uid, instance_uid = object_uids(algorithm, study_uid, "sr", sample_ids)
    # evidence[0] (the first result's first file) gives the SR its patient and study
    evidence = [dataset for series in headers for dataset in series]
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=INSTANCE_NUMBER,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=series_description(algorithm, "results"),
        manufacturer_model_name=long_string(algorithm.name),
        software_versions=long_string(algorithm.version),
    )


# --- plain-text rendering ------------------------------------------------------------------------

def _code_text(item: Dataset) -> str:
    return f"{item.CodeMeaning} ({item.CodeValue}, {item.CodingSchemeDesignator})"


def _number(value: object) -> str:
    return f"{float(value):.6g}"


def _value_text(item: Dataset) -> str:
    value_type = item.ValueType
    if value_type == "CODE":
        return _code_text(item.ConceptCodeSequence[0])
    if value_type == "NUM":
        if not item.get("MeasuredValueSequence"):
            return "(no value)"
        measured = item.MeasuredValueSequence[0]
        return f"{_number(measured.NumericValue)} [{measured.MeasurementUnitsCodeSequence[0].CodeMeaning}]"
    if value_type == "TEXT":
        return f'"{item.TextValue}"'
    if value_type == "UIDREF":
        return str(item.UID)
    if value_type == "PNAME":
        return str(item.PersonName)
    if value_type in ("DATE", "TIME", "DATETIME"):
        return str(item.get(value_type.capitalize() if value_type != "DATETIME" else "DateTime", ""))
    if value_type in ("IMAGE", "COMPOSITE"):
        reference = item.ReferencedSOPSequence[0]
        frames = reference.get("ReferencedFrameNumber")
        text = f"{UID(reference.ReferencedSOPClassUID).name} {reference.ReferencedSOPInstanceUID}"
        return text + (f" frame {frames}" if frames else "")
    if value_type == "SCOORD":
        points = np.asarray(item.GraphicData, dtype=float).reshape(-1, 2)
        return f"{item.GraphicType} " + " ".join(f"(column {c:.2f}, row {r:.2f})" for c, r in points)
    if value_type == "SCOORD3D":
        points = np.asarray(item.GraphicData, dtype=float).reshape(-1, 3)
        return (f"{item.GraphicType} " + " ".join(f"({x:.2f}, {y:.2f}, {z:.2f}) mm" for x, y, z in points)
                + f" in frame of reference {item.ReferencedFrameOfReferenceUID}")
    if value_type == "CONTAINER":
        return ""
    return f"({value_type})"


def _render(item: Dataset, depth: int, lines: list[str]) -> None:
    name = item.ConceptNameCodeSequence[0].CodeMeaning if item.get("ConceptNameCodeSequence") else "(unnamed)"
    value = _value_text(item)
    lines.append("  " * depth + (f"{name} = {value}" if value else name))
    for child in item.get("ContentSequence", []):
        _render(child, depth + 1, lines)


def sr_text(ds: Dataset) -> str:
    """The SR content tree as indented plain text: ``concept name = value [unit]``, one item a line.

    Codes show as ``meaning (value, scheme)``, numbers with their unit in brackets, image
    references as SOP class name and instance UID, coordinates as image (column, row) or LPS mm.
    A reader for users without dcmtk's ``dsrdump``; children are indented under their parent.
    """
    lines: list[str] = []
    _render(ds, 0, lines)
    return "\n".join(lines) + "\n"
