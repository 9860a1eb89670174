"""Fixtures of the scoring tests (the trained-run fixtures live in test files that need them)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import StandInRun, write_nifti_cohort  # noqa: E402


@pytest.fixture
def cohort(tmp_path):
    """Six small NIfTI volumes (odd ones hold a bright cube) and their manifest."""
    return write_nifti_cohort(tmp_path / "scans", n=6)


@pytest.fixture
def stand_in_run():
    """A tiny untrained classifier with the ``Run`` interface the scorer uses."""
    return StandInRun()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A small cnn_small run trained on a synthetic CT cohort with big, bright lesions (built once).

    Returns a dict with ``run`` (run directory), ``manifest`` (manifest CSV of the cohort),
    ``cohort`` (the SynthCohort) and ``root``.
    """
    import pandas as pd
    import yaml

    from medrec.config import load_config
    from medrec.index import index_folder
    from medrec.synth import generate_cohort
    from medrec.train import train

    root = tmp_path_factory.mktemp("trained_run")
    cohort = generate_cohort(root / "cohort", kind="ct-lesion", patients=16, fmt="nifti", seed=3, image_size=48,
                             lesion_diameter_mm=(25.0, 35.0), contrast=(90.0, 130.0), follow_up_fraction=0.0,
                             slice_thickness=5.0)
    index = index_folder(root / "cohort", root / "index", labels=cohort.labels_csv, show_progress=False)
    # fixed patient-level splits, both classes in each partition
    rows = []
    for _, group in index.manifest.groupby("label"):
        for position, (_, sample) in enumerate(group.iterrows()):
            split = ("val", "train", "train", "test", "train", "train", "train", "train")[position % 8]
            rows.append({"sample_id": sample["sample_id"], "patient_id": sample["patient_id"], "split": split})
    pd.DataFrame(rows).to_csv(root / "splits.csv", index=False)
    config = {
        "data": {"manifest": str(root / "index" / "manifest.csv"), "splits": str(root / "splits.csv")},
        "split": {"check_pixels": False},
        "preprocessing": {"input_size": [32, 32, 16], "mode": "3d", "augment": False},
        "model": {"name": "cnn_small", "kwargs": {"channels": [8, 16]}},
        "training": {"epochs": 12, "batch_size": 4, "device": "cpu", "patience": None, "lr": 0.003},
    }
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    train(load_config(root / "train.yaml"), root / "run")
    return {"run": root / "run", "manifest": root / "index" / "manifest.csv", "cohort": cohort, "root": root}
