"""Candidate findings: regions of a finding map (against numpy), the ``<stem>.findings.csv`` side file
written by ``score_manifest`` for finding-map runs (sidecar, agreement with the top finding), and
its resumability after a kill between the candidates and the prediction rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from score_helpers import StandInRun

from medrec.errors import OutputError
from medrec.models.findings import FindingMapModel
from medrec.score import ScoreOptions, score_manifest
from medrec.score.findings import candidate_findings, top_finding
from medrec.score.writer import FINDINGS_COLUMNS, FindingsWriter, findings_path, read_findings

AFFINE = np.array([[1.5, 0.0, 0.0, -40.0], [0.0, 2.0, 0.0, 12.0], [0.0, 0.0, 4.0, -7.0], [0.0, 0.0, 0.0, 1.0]])
BLOBS = (  # (peak voxel, sigma in voxels, peak probability)
    ((10, 12, 5), 1.5, 0.9),
    ((30, 8, 11), 2.5, 0.6),
)


def _two_blobs() -> np.ndarray:
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in (40, 24, 16)), indexing="ij"), axis=-1).astype(np.float64)
    probability = np.full((40, 24, 16), 0.01)
    for centre, sigma, peak in BLOBS:
        distance2 = ((grid - np.array(centre)) ** 2).sum(axis=-1)
        probability = np.maximum(probability, peak * np.exp(-distance2 / (2 * sigma**2)))
    return probability


def _expected(probability: np.ndarray, centre: tuple[int, int, int]) -> tuple[tuple[float, ...], float]:
    """LPS mm of a voxel and the sphere-equivalent diameter of the blob's half-peak region, by hand."""
    ras = AFFINE @ np.array([*centre, 1.0])
    lps = (-ras[0], -ras[1], ras[2])
    peak = probability[centre]
    # the two blobs lie far apart: the half-peak voxels of a blob are those within 8 voxels of its peak
    near = np.zeros(probability.shape, dtype=bool)
    near[tuple(slice(max(c - 8, 0), c + 9) for c in centre)] = True
    voxels = int((near & (probability >= peak / 2)).sum())
    volume = voxels * 1.5 * 2.0 * 4.0
    return lps, (6 * volume / np.pi) ** (1 / 3)


def test_candidate_findings_locate_and_size_two_blobs():
    probability = _two_blobs()
    found = candidate_findings(probability, AFFINE)
    assert [c["rank"] for c in found] == [1, 2]
    for candidate, (centre, _, peak) in zip(found, BLOBS, strict=True):
        lps, diameter = _expected(probability, centre)
        assert (candidate["x"], candidate["y"], candidate["z"]) == pytest.approx(lps, abs=0.01)
        assert candidate["diameter_mm"] == pytest.approx(diameter, abs=0.01)
        assert candidate["probability"] == pytest.approx(peak, abs=1e-6)
    # the first candidate is the top finding
    top = top_finding(probability, AFFINE)
    assert (top["finding_x"], top["finding_y"], top["finding_z"], top["finding_diameter_mm"]) == (
        found[0]["x"], found[0]["y"], found[0]["z"], found[0]["diameter_mm"])
    # limits: the most probable only; a floor above the second peak; no geometry without an affine
    assert [c["probability"] for c in candidate_findings(probability, AFFINE, max_findings=1)] == [0.9]
    assert len(candidate_findings(probability, AFFINE, min_probability=0.7)) == 1
    assert candidate_findings(np.full((4, 4, 4), 0.01), AFFINE) == []
    assert candidate_findings(probability, None)[1]["x"] is None


def test_candidate_findings_on_a_2d_map():
    probability = _two_blobs()[:, :, 5]  # the first blob's plane; the second blob's tail is below 0.05 there
    affine = np.diag([0.5, 0.5, 1.0, 1.0])
    found = candidate_findings(probability, affine)
    assert len(found) == 1 and (found[0]["x"], found[0]["y"]) == (-5.0, -6.0)
    area = (probability >= 0.45).sum() * 0.25
    assert found[0]["diameter_mm"] == pytest.approx(2 * np.sqrt(area / np.pi), abs=0.01)


def test_a_candidate_below_twice_the_floor_is_sized_on_the_whole_map():
    # peak 0.08: half of it (0.04) lies below the 0.05 floor, so its region at half the peak reaches past the
    # region above the floor; the diameter follows top_finding's rule all the same
    probability = np.full((12, 12, 3), 0.045)
    probability[5, 5, 1] = 0.08
    found = candidate_findings(probability, AFFINE)
    assert found[0]["diameter_mm"] == top_finding(probability, AFFINE)["finding_diameter_mm"]


def test_findings_writer_keeps_only_candidates_of_scored_samples(tmp_path):
    path = tmp_path / "pred.findings.csv"
    writer = FindingsWriter(path)
    assert writer.start([]) == 0
    rows = [{"sample_id": s, "study_uid": "1.2", "patient_id": "P", "rank": r, "x": 1.0, "y": 2.0, "z": 3.0,
             "diameter_mm": 4.0, "probability": 0.5} for s in ("a", "b") for r in (1, 2)]
    writer.append(rows)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("c,1.2,P,1,1.0")  # a line torn by a kill
    assert FindingsWriter(path).start(["a"]) == 2
    assert [(row["sample_id"], row["rank"]) for row in read_findings(path)] == [("a", "1"), ("a", "2")]
    assert path.read_text().endswith("\n")


class MapFromIntensity(FindingMapModel):
    """A finding-map model whose logit map is the (scaled) image itself: bright voxels are findings."""

    def __init__(self) -> None:
        super().__init__(3, 1, channels=(2, 2, 2, 2, 2, 2))

    def finding_map(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] - 0.5) * 20.0

    def forward(self, x: torch.Tensor, dense: bool = False) -> torch.Tensor:
        score = self.finding_map(x).amax(dim=(1, 2, 3, 4))
        return torch.stack([-score / 2, score / 2], dim=1)


def _score(manifest: pd.DataFrame, output: Path, **options) -> None:
    run = StandInRun(model=MapFromIntensity())
    score_manifest(run, manifest, output, ScoreOptions(workers=0, **options), model_sha256="f" * 64,
                   show_progress=False)


def test_scoring_a_finding_run_writes_candidates_and_resumes(cohort, tmp_path):
    output = tmp_path / "pred.csv"
    _score(cohort, output)
    record = json.loads((tmp_path / "pred.csv.json").read_text())
    assert record["findings_file"] == "pred.findings.csv" == findings_path(output).name
    assert (record["findings_min_probability"], record["findings_max_per_sample"]) == (0.05, 10)
    findings = pd.read_csv(findings_path(output), dtype={"sample_id": str})
    assert list(findings.columns) == list(FINDINGS_COLUMNS)
    predictions = pd.read_csv(output, dtype={"sample_id": str})
    assert set(findings["sample_id"]) <= set(predictions["sample_id"])
    assert findings.groupby("sample_id")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1))).all()
    assert findings.groupby("sample_id").size().max() <= 10
    # the bright cubes of the odd volumes are found, and the first candidate is the top finding
    first = findings[findings["rank"] == 1].set_index("sample_id")
    for row in predictions[predictions["label"] == 1].to_dict("records"):
        assert row["finding_probability"] > 0.99
        candidate = first.loc[row["sample_id"]]
        assert (candidate["x"], candidate["y"], candidate["z"], candidate["diameter_mm"], candidate["probability"]) \
            == (row["finding_x"], row["finding_y"], row["finding_z"], row["finding_diameter_mm"],
                row["finding_probability"])
    reference = findings_path(output).read_text()

    # a kill after the candidates of the last samples were written, before their prediction rows
    lines = output.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:4]))
    _score(cohort, output)
    assert findings_path(output).read_text() == reference  # no duplicate, none lost
    assert len(pd.read_csv(output)) == len(cohort)

    # the findings file gone while rows are done: refused, since their candidates would be missing
    findings_path(output).unlink()
    with pytest.raises(OutputError, match="findings.csv: missing"):
        _score(cohort, output)
    _score(cohort, output, overwrite=True)
    assert findings_path(output).read_text() == reference


def test_study_level_scoring_keeps_candidates_per_sample(tmp_path):
    from score_helpers import write_nifti_cohort

    manifest = write_nifti_cohort(tmp_path / "scans", n=4, studies_per_patient=2)
    output = tmp_path / "pred.csv"
    _score(manifest, output, level="study")
    record = json.loads((tmp_path / "pred.csv.json").read_text())
    assert record["findings_file"] == "pred.findings.csv" and record["samples_file"] == "pred.samples.csv"
    findings = pd.read_csv(findings_path(output), dtype={"sample_id": str})
    assert set(findings["sample_id"]) <= set(manifest["sample_id"])


def test_merged_parts_carry_the_candidates(cohort, tmp_path):
    from medrec.score import merge_parts

    whole = tmp_path / "whole.csv"
    _score(cohort, whole)
    parts = []
    for part_id in range(2):
        parts.append(tmp_path / f"part{part_id}.csv")
        _score(cohort, parts[-1], num_parts=2, part_id=part_id)
    merged = tmp_path / "merged.csv"
    merge_parts(parts, merged)
    record = json.loads((tmp_path / "merged.csv.json").read_text())
    assert record["findings_file"] == "merged.findings.csv" and record["findings_max_per_sample"] == 10

    def rows(path: Path) -> list[tuple]:
        return sorted(tuple(row.values()) for row in read_findings(path))

    assert rows(findings_path(merged)) == rows(findings_path(whole))
    run = StandInRun(model=MapFromIntensity())
    again = score_manifest(run, cohort, merged, ScoreOptions(workers=0), model_sha256="f" * 64, show_progress=False)
    assert again.scored == 0


def test_equal_peaks_rank_by_position_and_the_first_is_the_top_finding():
    probability = np.full((10, 10, 4), 0.01)
    probability[7, 2, 1] = probability[2, 8, 3] = probability[2, 8, 0] = 0.8
    found = candidate_findings(probability, AFFINE)
    peaks = [(c["x"], c["y"], c["z"]) for c in found]
    expected = [tuple(np.round([-(AFFINE @ [*v, 1])[0], -(AFFINE @ [*v, 1])[1], (AFFINE @ [*v, 1])[2]], 2))
                for v in ((2, 8, 0), (2, 8, 3), (7, 2, 1))]
    assert peaks == expected
    top = top_finding(probability, AFFINE)
    assert (top["finding_x"], top["finding_y"], top["finding_z"]) == peaks[0]
