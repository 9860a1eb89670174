"""Fixtures for the split tests: manifests built by hand (no files) and tiny NIfTI-backed ones."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medrec.manifest import MANIFEST_COLUMNS


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    """A manifest with every contract column; unspecified cells are empty strings."""
    frame = pd.DataFrame(rows)
    for column in MANIFEST_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    return frame


def cohort_frame(n_patients: int, studies_per_patient: int = 1, seed: int = 0, prevalence: float = 0.5,
                 manufacturers: tuple[str, ...] = ("GE", "Siemens")) -> pd.DataFrame:
    """A file-less manifest: ``n_patients`` with per-patient labels and a manufacturer column."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = str(int(rng.random() < prevalence))
        maker = manufacturers[int(rng.integers(len(manufacturers)))]
        for s in range(studies_per_patient):
            rows.append({"sample_id": f"s{p:03d}{s}", "patient_id": f"P{p:03d}", "study_uid": f"1.{p}.{s}",
                         "series_uid": f"1.{p}.{s}.1", "format": "nifti", "path": f"/nowhere/{p}_{s}.nii.gz",
                         "modality": "CT", "label": label, "manufacturer": maker})
    return manifest_frame(rows)


@pytest.fixture
def make_manifest():
    return manifest_frame


@pytest.fixture
def make_cohort():
    return cohort_frame


@pytest.fixture
def nifti_cohort(tmp_path: Path):
    """Factory: a manifest of ``n_patients`` tiny NIfTI samples, each with distinct pixels.

    Returns (manifest, write) where ``write(sample_index, array)`` rewrites one sample's file.
    """

    def make(n_patients: int = 6) -> pd.DataFrame:
        rng = np.random.default_rng(7)
        rows = []
        for p in range(n_patients):
            path = tmp_path / f"case{p}.nii.gz"
            nib.save(nib.Nifti1Image(rng.normal(size=(4, 4, 3)).astype(np.float32), np.eye(4)), str(path))
            rows.append({"sample_id": f"n{p}", "patient_id": f"P{p}", "study_uid": f"2.{p}", "series_uid": f"2.{p}.1",
                         "format": "nifti", "path": str(path), "modality": "MR", "label": str(p % 2)})
        return manifest_frame(rows)

    return make
