"""Ctrl-C (SIGINT) during train / score / run: exit 130 with what was kept and the command that resumes.

The train and score tests interrupt a real ``medrec`` process in the middle of its work (slow: a
few seconds each, most of it the start of a Python process that imports torch).
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medrec.cli import interruption_message, main
from medrec.score.writer import read_rows

# ``python -c`` prelude for the scoring process: the first batch is scored at once, every later
# one waits, so that the process is certainly mid-batch (with rows on disk) when it is interrupted
SLOW_SCORER = """
import sys, time
from medrec.score import inference
predict, calls = inference.Predictor.__call__, []
def slow(self, *args, **kwargs):
    if calls:
        time.sleep(120)
    calls.append(1)
    return predict(self, *args, **kwargs)
inference.Predictor.__call__ = slow
from medrec.cli import main
sys.argv = ["medrec", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A 6-patient NIfTI CT cohort, indexed, split by patient and trained for one epoch (a few seconds)."""
    from medrec.config import load_config
    from medrec.index import index_folder
    from medrec.synth import generate_cohort
    from medrec.train import train

    root = tmp_path_factory.mktemp("tiny")
    cohort = generate_cohort(root / "scans", kind="ct-lesion", patients=6, fmt="nifti", seed=1, image_size=32,
                             slice_thickness=10.0, follow_up_fraction=0.0)
    manifest = index_folder(root / "scans", root / "index", labels=cohort.labels_csv, show_progress=False).manifest
    rows = []  # both classes in train and in val
    for _, group in manifest.groupby("label"):
        assert len(group) >= 2
        for position, (_, sample) in enumerate(group.iterrows()):
            rows.append({"sample_id": sample["sample_id"], "patient_id": sample["patient_id"],
                         "split": "val" if position % 2 else "train"})
    pd.DataFrame(rows).to_csv(root / "splits.csv", index=False)
    config = {
        "data": {"manifest": str(root / "index" / "manifest.csv"), "splits": str(root / "splits.csv")},
        "split": {"check_pixels": False},
        "preprocessing": {"input_size": [16, 16, 8], "spacing": [20.0, 20.0, 20.0], "mode": "3d", "augment": False},
        "model": {"name": "cnn_small", "kwargs": {"channels": [4, 8]}},
        "training": {"epochs": 1, "batch_size": 2, "device": "cpu", "patience": None},
    }
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    # far more epochs than the test waits for: the interrupt always lands during training
    config["training"]["epochs"] = 100_000
    (root / "long.yaml").write_text(yaml.safe_dump(config))
    train(load_config(root / "train.yaml"), root / "run")
    return {"root": root, "run": root / "run", "manifest": root / "index" / "manifest.csv",
            "long_config": root / "long.yaml"}


def _interrupt_when(command: list[str], ready: Callable[[], bool], timeout: float = 60.0) -> tuple[int, str]:
    """Start ``command``, send SIGINT once ``ready()`` holds, and return its exit code and stderr."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise AssertionError(f"exited with {process.returncode} before it was interrupted:\n"
                                     f"{process.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready within {timeout} s")
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr


def _resume_line(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.startswith("resume with: ")]
    assert len(lines) == 1, stderr
    return shlex.split(lines[0].removeprefix("resume with: "))


def _cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    return 0


@pytest.mark.slow  # a real medrec process (about 10 s)
def test_ctrl_c_during_train_names_the_kept_checkpoint_and_the_resume_command(tiny, tmp_path):
    run = tmp_path / "run with space"  # the printed command must quote it
    metrics = run / "metrics.jsonl"
    code, stderr = _interrupt_when(
        [sys.executable, "-m", "medrec", "train", str(tiny["long_config"]), "-o", str(run)],
        lambda: metrics.is_file() and metrics.read_text().endswith("\n"),
    )
    assert code == 130, stderr
    last_epoch = json.loads(metrics.read_text().splitlines()[-1])["epoch"]
    assert f"interrupted: {run} keeps the checkpoint of epoch {last_epoch}, the last completed one" in stderr
    assert f"training continues at epoch {last_epoch + 1}" in stderr
    assert (run / "checkpoint_last.json").is_file()
    assert _resume_line(stderr) == ["medrec", "train", str(tiny["long_config"]), "-o", str(run), "--resume"]


@pytest.mark.slow  # a real medrec process (about 10 s)
def test_ctrl_c_during_score_keeps_the_rows_and_the_same_command_resumes(tiny, tmp_path):
    output = tmp_path / "scored" / "predictions.csv"
    args = ["score", str(tiny["run"]), str(tiny["manifest"]), "-o", str(output), "--workers", "0",
            "--batch-size", "1", "--overwrite"]
    code, stderr = _interrupt_when([sys.executable, "-c", SLOW_SCORER, *args],
                                   lambda: len(read_rows(output)[1]) >= 1)
    assert code == 130, stderr
    kept = len(read_rows(output)[1])
    assert 1 <= kept < len(pd.read_csv(tiny["manifest"]))
    assert re.search(rf"interrupted: .*predictions\.csv keeps the {kept} rows? scored so far", stderr), stderr
    assert not output.with_name("predictions.csv.lock").exists()  # released and removed on the way out
    # the same command, less --overwrite (which would discard the kept rows)
    resume = _resume_line(stderr)
    assert resume == ["medrec", *[word for word in args if word != "--overwrite"]]

    assert _cli(resume[1:]) == 0
    record = json.loads(output.with_name("predictions.csv.json").read_text())
    assert record["counts"]["skipped"] == kept
    assert record["status"] == "complete"
    assert len(read_rows(output)[1]) == len(pd.read_csv(tiny["manifest"]))
    assert not output.with_name("predictions.csv.lock").exists()


def test_an_interrupted_recipe_names_its_finished_steps(tmp_path):
    run = tmp_path / "runs" / "mine"
    run.mkdir(parents=True)
    (run / "workflow.json").write_text(json.dumps({"steps": {"index": {"fingerprint": "a"},
                                                             "split": {"fingerprint": "b"}}}))
    (run / "checkpoint_last.json").write_text("{}")
    message = interruption_message(["run", "my recipe.yaml", "-o", str(run)])
    assert message.splitlines() == [
        f"interrupted: {run} keeps the finished steps (index, split) and the last completed training epoch; "
        "the same command skips what is finished",
        f"resume with: medrec run 'my recipe.yaml' -o {run}",
    ]


def test_train_interrupted_before_its_first_epoch_says_it_restarts(tmp_path):
    message = interruption_message(["--debug", "train", "cfg.yaml", f"--out={tmp_path / 'r'}", "--resume"])
    assert message.splitlines() == [
        f"interrupted: no epoch had completed; {tmp_path / 'r'} keeps what was prepared, training restarts at epoch 1",
        f"resume with: medrec --debug train cfg.yaml --out={tmp_path / 'r'} --resume",
    ]


def test_other_commands_get_the_command_to_run_again():
    assert interruption_message(["index", "scans dir", "-o", "idx"]).splitlines() == [
        "interrupted: medrec index stopped before it finished",
        "run it again with: medrec index 'scans dir' -o idx",
    ]
