"""Small inputs for the scoring tests: NIfTI cohorts with a bright blob, and a stand-in run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from monai.transforms import Compose, ScaleIntensityRanged
from torch import nn

from medrec.loader import LoadSampled


def write_nifti_cohort(
    folder: Path, n: int = 6, shape: tuple[int, ...] = (16, 16, 8), seed: int = 0, studies_per_patient: int = 1
) -> pd.DataFrame:
    """Write ``n`` NIfTI volumes (odd ones hold a bright cube) and return their manifest."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n):
        volume = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
        label = index % 2
        if label:
            centre = [s // 2 for s in shape]
            region = tuple(slice(c - 2, c + 2) for c in centre)
            volume[region] += 6.0
        affine = np.diag([1.5, 1.5, 2.5, 1.0])
        affine[:3, 3] = [-10.0, 5.0, 3.0][: 3]
        path = folder / f"vol{index:02d}.nii.gz"
        nib.save(nib.Nifti1Image(volume, affine), path)
        patient = index // (2 * studies_per_patient) if studies_per_patient > 1 else index
        rows.append({
            "sample_id": f"s{index:02d}",
            "patient_id": f"P{patient:02d}",
            "study_uid": f"1.2.{index // max(studies_per_patient, 1)}" if studies_per_patient > 1 else f"1.2.{index}",
            "series_uid": f"1.3.{index}",
            "modality": "CT",
            "format": "nifti",
            "path": str(path),
            "files": "",
            "label": str(label),
        })
    return pd.DataFrame(rows)


class TinyNet(nn.Module):
    """Conv -> ReLU -> conv -> global max pool -> linear (2 logits); any spatial dims."""

    def __init__(self, spatial_dims: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.features = nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU(inplace=True), conv(4, 4, 3, padding=1),
                                      nn.ReLU(inplace=True))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        return self.head(features.flatten(2).amax(dim=2))


@dataclass
class StandInRun:
    """What the scorer needs from ``medrec.rundir.Run``."""

    model: nn.Module = field(default_factory=TinyNet)
    classes: list[str] = field(default_factory=lambda: ["0", "1"])
    threshold: float = 0.5
    threshold_source: str = "fixed for tests"
    temperature: float = 1.5

    def __post_init__(self) -> None:
        self.model.eval()

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(batch) / self.temperature, dim=1)

    def deterministic_transforms(self) -> Compose:
        return Compose([
            LoadSampled(keys="image"),
            ScaleIntensityRanged(keys="image", a_min=-3.0, a_max=9.0, b_min=0.0, b_max=1.0, clip=True),
        ])


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """``medrec score ARGS`` in-process: its exit code and what it wrote to stderr."""
    from medrec.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["score", *map(str, args)])
    return int(exit_info.value.code or 0), capsys.readouterr().err
