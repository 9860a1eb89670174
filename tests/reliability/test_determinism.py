"""Same seed, same machine, CPU: two complete ``medrec run`` workflows into two folders give the same results.

Bit-identical: the weights, model.json, the splits, the test predictions and the whole report
(report.json, report.html, report.pdf, figures). What may differ is bookkeeping about *when* and
*where*: log timestamps, epoch timings in metrics.jsonl, the resolved config's absolute paths and
the scoring sidecar's start / finish times; the test checks that nothing else differs there.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

from .pipeline_faults import COHORT, TRAIN_RECIPE, cli, single_thread

pytestmark = pytest.mark.slow

TIMING_KEYS = {"seconds", "train_seconds", "data_wait_seconds", "data_wait_fraction"}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("determinism")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate_cohort(root / "scans", **COHORT)
    recipe = {"name": "tiny_determinism", "data": {"scans": "scans", "labels": "scans/labels.csv"},
              **TRAIN_RECIPE, "evaluation": {"bootstrap": 200, "seed": 0}}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    with single_thread(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # the report date: the same day for both runs
        for name in ("run-alpha-7f3e", "run-beta-c91d"):  # names no report text could contain by chance
            assert cli(["run", root / "recipe.yaml", "-o", root / name]) == 0, name
    return root / "run-alpha-7f3e", root / "run-beta-c91d"


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "cache" not in p.parts}


def test_weights_predictions_and_report_are_bit_identical(two_runs):
    first, second = two_runs
    assert _files(first) == _files(second)
    identical = ["model.safetensors", "model.json", "splits.csv", "plan.json", "val_predictions.csv",
                 "index/manifest.csv", "index/qc.csv", "split/splits.csv", "checkpoint_last.safetensors",
                 "evaluation/predictions.csv", "evaluation/report.json", "evaluation/report.html",
                 "evaluation/report.pdf"]
    identical += sorted(name for name in _files(first) if name.startswith("evaluation/figures/"))
    for name in identical:
        assert (first / name).read_bytes() == (second / name).read_bytes(), f"{name} differs between the runs"
    report = json.loads((first / "evaluation" / "report.json").read_text())
    model = json.loads((first / "model.json").read_text())
    assert report["provenance"]["model_sha256"] == model["weights"]["sha256"]
    assert first.name not in json.dumps(report)
    assert second.name not in (second / "evaluation" / "report.html").read_text()
    predictions = (first / "evaluation" / "predictions.csv").read_text().splitlines()
    assert report["n_samples"] == len(predictions) - 1 > 0


def test_only_timings_and_locations_differ_elsewhere(two_runs):
    first, second = two_runs

    def epochs(run: Path) -> list[dict]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]

    assert epochs(first) == epochs(second) and len(epochs(first)) == 3

    def config(run: Path) -> str:
        return (run / "config.yaml").read_text().replace(str(run), "RUN")

    assert config(first) == config(second)

    def log(run: Path) -> list[str]:  # "YYYY-mm-dd HH:MM:SS message": drop the stamp and the durations
        lines = [line[20:] for line in (run / "train.log").read_text().splitlines()]
        return [line.replace(str(run), "RUN").split(", ")[0] for line in lines if not line.startswith("epoch ")]

    assert log(first) == log(second)

    def sidecar(run: Path) -> dict:
        record = json.loads((run / "evaluation" / "predictions.csv.json").read_text())
        for key in ("started", "first_started", "finished", "seconds"):
            record.pop(key)
        return json.loads(json.dumps(record).replace(str(run), "RUN"))

    assert sidecar(first) == sidecar(second)
