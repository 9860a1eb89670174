"""What the DICOM writers are given: the algorithm, its per-series results and the top finding.

These are plain frozen records checked on construction, so that a wrong value (a score of 1.7, a
weights hash that is not a sha256) fails where it is made, not deep inside highdicom.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medrec.errors import MedrecError

_SHA256 = re.compile(r"[0-9a-f]{64}")


class DicomExportError(MedrecError, ValueError):
    """Results cannot be written as DICOM (names the input, the value and the fix).

    A :class:`ValueError` as well, so callers that only know the public API can catch that.
    """


def _check_probability(value: float, what: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise DicomExportError(f"{what} must be a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class Algorithm:
    """The model that produced the results.

    Attributes:
        name: model architecture or run name (e.g. ``finding_fcn``).
        version: medrec version string.
        weights_sha256: sha256 of ``model.safetensors`` (64 hex digits, kept lowercase); every UID
            medrec writes derives from it, so another model never overwrites this one's objects.
        threshold: operating threshold on the calibrated score (``score >= threshold`` is positive).
        threshold_source: how the threshold was chosen (free text, e.g. ``validation: Youden``).
        positive_class: the class whose probability the score is (e.g. ``lesion``).
    """

    name: str
    version: str
    weights_sha256: str
    threshold: float
    threshold_source: str
    positive_class: str

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise DicomExportError("Algorithm.name is empty; give the model architecture or run name")
        # frozen: normalise through object.__setattr__ (a hash in capitals is the same hash)
        object.__setattr__(self, "weights_sha256", str(self.weights_sha256).strip().lower())
        if not _SHA256.fullmatch(self.weights_sha256):
            raise DicomExportError(
                f"Algorithm.weights_sha256 must be 64 lowercase hex digits (sha256 of model.safetensors), "
                f"got {self.weights_sha256!r}"
            )
        _check_probability(self.threshold, "Algorithm.threshold")

    def is_positive(self, score: float) -> bool:
        """medrec's decision rule: ``score >= threshold`` is positive (as in ``medrec report``)."""
        return score >= self.threshold


@dataclass(frozen=True)
class Finding:
    """The top finding of a finding-map model.

    Attributes:
        x, y, z: centre in patient LPS mm (DICOM patient coordinates).
        diameter_mm: equivalent diameter of the region around the peak.
        probability: the map's probability at the peak.
    """

    x: float
    y: float
    z: float
    diameter_mm: float
    probability: float

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.x, self.y, self.z)):
            raise DicomExportError(f"Finding centre must be finite LPS mm, got ({self.x}, {self.y}, {self.z})")
        if not (math.isfinite(self.diameter_mm) and self.diameter_mm > 0):
            raise DicomExportError(f"Finding.diameter_mm must be > 0 mm, got {self.diameter_mm!r}")
        _check_probability(self.probability, "Finding.probability")

    @property
    def center_lps(self) -> tuple[float, float, float]:
        return (float(self.x), float(self.y), float(self.z))


@dataclass(frozen=True)
class SeriesResult:
    """One scored DICOM series.

    Attributes:
        sample_id: the manifest's sample id (becomes the SR tracking identifier).
        source_files: the DICOM files of the scored series (all slices, any order).
        score: calibrated probability of the positive class.
        finding: the top finding, for finding-map models.
    """

    sample_id: str
    source_files: Sequence[Path]
    score: float
    finding: Finding | None = None

    def __post_init__(self) -> None:
        if not self.sample_id:
            raise DicomExportError("SeriesResult.sample_id is empty; give the manifest's sample_id")
        if len(self.source_files) == 0:
            raise DicomExportError(f"sample {self.sample_id}: source_files is empty; give the series' DICOM files")
        _check_probability(self.score, f"sample {self.sample_id}: score")
