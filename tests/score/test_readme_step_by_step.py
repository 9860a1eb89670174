"""README "Step by step on your own data": its score and report commands, as written, on a small synthetic cohort.

The trained run of the session (``trained_run``) stands in for the index / split / train steps; the
commands are read from the README itself, so the test fails when the README's commands do.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
MEDREC = [sys.executable, "-m", "medrec"]


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


def without_option(words: list[str], name: str) -> list[str]:
    if name not in words:
        return list(words)
    at = words.index(name)
    return words[:at] + words[at + 2:]


def medrec(words: list[str], cwd: Path) -> str:
    done = subprocess.run([*MEDREC, *words], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"medrec {' '.join(words)}:\n{done.stdout}\n{done.stderr}"
    return " ".join((done.stdout + done.stderr).split())


@pytest.fixture
def workplace(trained_run, tmp_path, readme_steps) -> dict:
    """A folder laid out as the README assumes: the run at runs/exp1, new studies under data/, their labels file."""
    from medrec.synth import generate_cohort

    steps = readme_steps.steps
    assert {"score", "report"} <= set(steps), f"README step-by-step block lacks score / report: {steps}"
    score = readme_steps.local("score", tmp_path)
    run = Path(score[1])
    (tmp_path / run).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / run).symlink_to(trained_run["run"], target_is_directory=True)
    scans = tmp_path / score[2]
    cohort = generate_cohort(tmp_path / "synth", kind="mri-tumor", patients=6, fmt="nifti", seed=21, image_size=48,
                             follow_up_fraction=0.0, slice_thickness=5.0)
    shutil.copytree(cohort.out_dir, scans, ignore=shutil.ignore_patterns("*.csv", "*.json"))
    labels = option(score, "--labels") or "new_labels.csv"
    shutil.copy(cohort.labels_csv, tmp_path / labels)
    truth = {study.study_uid: str(study.label) for study in cohort.studies}
    assert set(truth.values()) == {"0", "1"}
    return {"root": tmp_path, "score": score, "report": readme_steps.local("report", tmp_path), "labels": labels,
            "truth": truth}


def check_report(folder: Path, truth: dict[str, str]) -> dict:
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["n_samples"] == len(truth) and "no label" not in report["excluded_reasons"]
    assert report["cohort"]["n_manifest"] == len(truth) and report["cohort"]["n_not_scored"] == 0  # the new studies
    confusion = report["confusion_matrix"]
    assert confusion["tp"] + confusion["fn"] == sum(label == "1" for label in truth.values())
    assert confusion["tn"] + confusion["fp"] == sum(label == "0" for label in truth.values())
    return report


def test_readme_commands_as_written_give_a_report_with_labels(workplace) -> None:
    root = workplace["root"]
    medrec(workplace["score"], root)
    medrec(workplace["report"], root)
    report = check_report(root / option(workplace["report"], "-o"), workplace["truth"])
    assert report["threshold_kind"] == "validation"


def test_labels_added_after_scoring_reach_the_report(workplace) -> None:
    """Scored without --labels: the report takes them with --labels, and a rerun of score with --labels
    refreshes the label column without scoring again."""
    root = workplace["root"]
    unlabelled = without_option(workplace["score"], "--labels")
    medrec(unlabelled, root)
    predictions = root / unlabelled[unlabelled.index("-o") + 1]
    assert all(row["label"] == "" for row in _rows(predictions))

    report_words = without_option(workplace["report"], "-o")
    medrec([*report_words, "-o", "reports/with_labels", "--labels", workplace["labels"]], root)
    report = check_report(root / "reports" / "with_labels", workplace["truth"])
    assert workplace["labels"] in report["provenance"]["reference_standard"]

    summary = medrec([*unlabelled, "--labels", workplace["labels"]], root)
    assert "labels refreshed" in summary
    assert {row["study_uid"]: row["label"] for row in _rows(predictions)} == workplace["truth"]
    assert json.loads(predictions.with_name(predictions.name + ".json").read_text())["counts"]["scored"] == 0
    medrec([*report_words, "-o", "reports/refreshed"], root)
    check_report(root / "reports" / "refreshed", workplace["truth"])


def _rows(path: Path) -> list[dict[str, str]]:
    from medrec.score import read_rows

    return read_rows(path)[1]
