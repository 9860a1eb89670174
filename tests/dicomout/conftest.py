"""A small synthetic CT cohort and an algorithm shared by the dicomout tests (built once per session)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medrec.dicomout import Algorithm
from medrec.synth import generate_cohort

DCIODVFY = "/usr/bin/dciodvfy"
WEIGHTS = "3f" * 32
OTHER_WEIGHTS = "a0" * 32


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    """Two CT patients, one study each (48 x 48 pixels, 18 slices of 10 mm); study 1 has one lesion."""
    return generate_cohort(tmp_path_factory.mktemp("dicomout") / "scans", kind="ct-lesion", patients=2, fmt="dicom",
                           seed=1, image_size=48, slice_thickness=10.0, follow_up_fraction=0.0)


@pytest.fixture(scope="session")
def lesion_study(cohort):
    return next(study for study in cohort.studies if study.lesions)


@pytest.fixture(scope="session")
def normal_study(cohort):
    return next(study for study in cohort.studies if not study.lesions)


@pytest.fixture(scope="session")
def algorithm() -> Algorithm:
    return Algorithm(name="finding_fcn", version="0.1.0", weights_sha256=WEIGHTS, threshold=0.42,
                     threshold_source="validation: Youden", positive_class="lesion")


def headers(files) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in files]


def pixel_centre_lps(ds: pydicom.Dataset, column: float, row: float) -> np.ndarray:
    """LPS mm of zero-based pixel (column, row), written out from PS3.3 C.7.6.2.1.1 (not via highdicom)."""
    position = np.array(ds.ImagePositionPatient, dtype=float)
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    return position + column * column_spacing * orientation[:3] + row * row_spacing * orientation[3:]


def slice_normal(ds: pydicom.Dataset) -> np.ndarray:
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    return np.cross(orientation[:3], orientation[3:])


def dciodvfy_lines(path: Path) -> list[str]:
    """dciodvfy's output lines for a file (it reports on stderr)."""
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


requires_dciodvfy = pytest.mark.skipif(
    shutil.which(DCIODVFY) is None and not Path(DCIODVFY).exists(),
    reason=f"{DCIODVFY} is absent (Debian package dicom3tools); the DICOM objects were not validated",
)
