"""Shared pytest fixtures for the medrec test suite."""

from __future__ import annotations

import os

# Tests run on 2-core CI machines: keep BLAS / torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import shlex
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


class ReadmeSteps:
    """The ``medrec`` commands of the README's "Step by step on your own data" block.

    Attributes:
        steps: sub-command -> its words as written (``{"index": ["index", "/data/scans", ...], ...}``).
    """

    def __init__(self) -> None:
        block = README.read_text(encoding="utf-8").split("Step by step on your own data", 1)[1].split("```", 2)[1]
        self.steps: dict[str, list[str]] = {}
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            if command.startswith("medrec "):
                words = shlex.split(command)[1:]
                self.steps[words[0]] = words

    def local(self, name: str, root: Path) -> list[str]:
        """The words of sub-command ``name`` with the README's example paths (/data/...) moved under ``root``."""
        return [str(root / word.lstrip("/")) if word.startswith("/data/") else word for word in self.steps[name]]


@pytest.fixture
def readme_steps() -> ReadmeSteps:
    """The README's step-by-step commands (see :class:`ReadmeSteps`)."""
    return ReadmeSteps()


@pytest.fixture
def medrec_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``f(*args) -> (exit code, stdout, stderr)``: runs ``medrec ARGS`` in-process (arguments made strings)."""
    from medrec.cli import main

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _annotated_ct_config(annotated: dict[str, Any], **training: Any) -> Any:
    """The finding-map training config of :func:`annotated_ct` (training overrides as keywords)."""
    from medrec.config import parse_config

    return parse_config({
        "data": {"manifest": str(annotated["manifest"]), "lesions": str(annotated["cohort"].ground_truth_csv)},
        "split": {"val": 0.2, "test": 0.3, "seed": 0, "check_pixels": False},
        "preprocessing": {"preset": "ct", "augment": True},
        "model": {"name": "finding_fcn"},
        "training": {"epochs": 6, "steps_per_epoch": 40, "batch_size": 16, "lr": 0.003, "device": "cpu",
                     "patience": None, "warmup_epochs": 1, "cache_dir": str(annotated["root"] / "cache"), **training},
    })


@pytest.fixture(scope="session")
def annotated_ct(tmp_path_factory) -> dict[str, Any]:
    """A small CT cohort with its lesion table and masks (40 patients, NIfTI), indexed: ``root``, ``cohort``,
    ``manifest``.

    Easy on purpose (30-45 mm lesions of 70-110 HU, low noise): tests on it are about the
    finding-map method working end to end on any machine, not about the difficulty it reaches.
    """
    from medrec.index import index_folder
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("annotated_ct")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = generate_cohort(root / "scans", kind="ct-lesion", patients=40, fmt="nifti", seed=2, image_size=64,
                                 slice_thickness=10.0, follow_up_fraction=0.0, lesion_diameter_mm=(30.0, 45.0),
                                 contrast=(70.0, 110.0), noise=0.6, masks=True)
        index_folder(root / "scans", root / "index", labels=cohort.labels_csv, show_progress=False)
    return {"root": root, "cohort": cohort, "manifest": root / "index" / "manifest.csv"}


@pytest.fixture(scope="session")
def annotated_ct_config():
    """``f(annotated_ct, **training) -> TrainConfig``: the finding-map config of the annotated cohort."""
    return _annotated_ct_config


@pytest.fixture(scope="session")
def annotated_ct_run(annotated_ct):
    """A finding-map run trained on :func:`annotated_ct` (240 steps of 16 slices, one thread, ~40 s)."""
    import torch

    from medrec.train import train

    run = annotated_ct["root"] / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(_annotated_ct_config(annotated_ct), run, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    return run
