"""Shared synthetic cohorts and trained runs for the training tests (built once per session)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from medrec.config import TrainConfig, parse_config

# A CT cohort that a small CNN learns reliably (any seed) on a 32 x 32 x 24 input: very large,
# high-contrast liver lesions on a coarse 48 x 48 matrix. With 40 patients (24 for training) the
# validation AUC depends on the seed; 60 patients (36 for training) make it stable.
COHORT_KW: dict[str, Any] = dict(
    kind="ct-lesion",
    patients=60,
    fmt="nifti",
    seed=1,
    image_size=48,
    slice_thickness=8.0,
    follow_up_fraction=0.0,
    lesion_diameter_mm=(80.0, 100.0),
    contrast=(150.0, 200.0),
    noise=0.5,
)


def make_config(manifest: Path, **sections: dict[str, Any]) -> TrainConfig:
    """A small CPU recipe (about 32 x 32 x 24 voxels, cnn_small) with section overrides."""
    data: dict[str, Any] = {
        "data": {"manifest": str(manifest)},
        "split": {"val": 0.25, "test": 0.2, "seed": 0, "check_pixels": False},
        "preprocessing": {"preset": "ct", "voxel_budget": 32 * 32 * 24, "augment": False},
        "model": {"name": "cnn_small", "kwargs": {"channels": [8, 16, 32], "dropout": 0.0}},
        "training": {"epochs": 12, "batch_size": 4, "lr": 0.003, "device": "cpu", "patience": 6, "warmup_epochs": 1},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_config(data)


@pytest.fixture(scope="session")
def train_config():
    """The :func:`make_config` builder."""
    return make_config


@pytest.fixture(scope="session")
def ct_manifest(tmp_path_factory) -> Path:
    """manifest.csv of a 40-patient synthetic CT cohort (NIfTI), indexed with medrec.index."""
    from medrec.index import index_folder
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("ct_cohort")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = generate_cohort(root / "scans", **COHORT_KW)
        index_folder(root / "scans", root / "index", labels=cohort.labels_csv)
    return root / "index" / "manifest.csv"
