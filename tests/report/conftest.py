"""Fixtures for the report renderers and the ``medrec report`` command.

``report_inputs`` builds a small synthetic study on disk: a predictions CSV (random scores with
signal, two manufacturers, some patients with two studies, one scoring error), a manifest whose
rows point to tiny NIfTI volumes (for the failure-analysis thumbnails), a qc.csv, and a run
directory with model.json (frozen threshold), splits.csv and config.yaml. The predictions are the
run's test split; its manifest and splits also hold the training / validation patients.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

N_PATIENTS = 48
N_FITTED = 24  # training and validation patients of the run (not in the predictions)
THRESHOLD = 0.5


@dataclass
class ReportInputs:
    predictions: Path
    manifest: Path
    qc: Path
    run: Path
    frame: pd.DataFrame
    patient_ids: list[str]
    sample_ids: list[str]


def make_predictions(n_patients: int = N_PATIENTS, seed: int = 0) -> pd.DataFrame:
    """Binary predictions with signal: positives score higher on average."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        patient_id = f"MRN{700000 + 37 * p:06d}"
        label = int(rng.random() < 0.45)
        manufacturer = "GE MEDICAL SYSTEMS" if p % 2 == 0 else "SIEMENS"
        n_studies = 2 if p % 5 == 0 else 1
        for s in range(n_studies):
            logit = (1.6 if label else -1.6) + rng.normal(0, 1.3)
            rows.append({
                "sample_id": f"smp{p:03d}{s}x{rng.integers(1 << 20):05x}",
                "patient_id": patient_id,
                "study_uid": f"1.2.826.0.1.3680043.9.{p}.{s}",
                "score": round(float(1 / (1 + np.exp(-logit))), 6),
                "label": str(label),
                "error": "",
                "manufacturer": manufacturer,
            })
    frame = pd.DataFrame(rows)
    frame["prediction"] = (frame["score"] >= THRESHOLD).astype(int).astype(str)
    # One sample could not be scored.
    frame.loc[3, ["score", "prediction"]] = [np.nan, ""]
    frame.loc[3, "error"] = "/data/scans/DOE^JOHN/series7/IM0001.dcm: DicomError: pixel data truncated"
    return frame


@pytest.fixture(scope="session")
def report_inputs(tmp_path_factory: pytest.TempPathFactory) -> ReportInputs:
    root = tmp_path_factory.mktemp("report_inputs")
    frame = make_predictions()
    predictions = root / "scores" / "predictions.csv"
    predictions.parent.mkdir()
    frame[["sample_id", "patient_id", "study_uid", "score", "prediction", "label", "error"]].to_csv(
        predictions, index=False)

    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    volume_paths = []
    for index in range(3):
        volume = rng.normal(100, 20, size=(24, 20, 6)).astype(np.float32)
        volume[8:14, 6:12, 2:5] += 150 * (index + 1)
        path = images / f"vol{index}.nii.gz"
        nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 2.0, 1.0])), path)
        volume_paths.append(path)
    manifest = frame[["sample_id", "patient_id", "study_uid", "label", "manufacturer"]].copy()
    manifest["series_uid"] = manifest["study_uid"] + ".1"
    manifest["accession"] = ""
    manifest["modality"] = "MR"
    manifest["format"] = "nifti"
    manifest["path"] = [str(volume_paths[i % 3]) for i in range(len(manifest))]
    manifest["files"] = ""
    manifest["sex"] = ["F" if i % 3 else "M" for i in range(len(manifest))]
    manifest["age"] = [40 + (i % 30) for i in range(len(manifest))]
    run = root / "run"
    run.mkdir()
    manifest_path = run / "manifest.csv"
    manifest.to_csv(manifest_path, index=False)
    qc = pd.DataFrame({
        "path": ["/data/scans/DOE^JOHN/a.dcm", "/data/scans/ROE^JANE/b.dcm", "/data/scans/x/c.txt"],
        "series_uid": ["", "", ""],
        "reason": ["not a DICOM file", "not a DICOM file", "localizer series skipped"],
    })
    qc_path = run / "qc.csv"
    qc.to_csv(qc_path, index=False)
    patients = sorted(frame["patient_id"].unique())
    # The predictions are the run's locked test split; the run was fitted and tuned on other patients,
    # who are in its manifest and splits but not in the predictions (a report leaves out their rows).
    fitted = pd.DataFrame([manifest.iloc[i % len(manifest)].to_dict() | {
        "sample_id": f"fit{i:03d}", "patient_id": f"MRN{800000 + 41 * i:06d}",
        "study_uid": f"1.2.826.0.1.3680043.10.{i}", "series_uid": f"1.2.826.0.1.3680043.10.{i}.1",
        "label": str(i % 2)} for i in range(N_FITTED)])
    pd.concat([manifest, fitted], ignore_index=True).to_csv(manifest_path, index=False)
    splits = pd.concat([
        fitted[["sample_id", "patient_id"]].assign(split=["train" if i % 3 else "val" for i in range(N_FITTED)]),
        frame[["sample_id", "patient_id"]].assign(split="test"),
    ])
    splits.to_csv(run / "splits.csv", index=False)
    (run / "model.json").write_text(json.dumps({
        "format": "medrec-run-1",
        "architecture": {"name": "resnet10", "spatial_dims": 3, "in_channels": 1, "num_classes": 2},
        "weights": {"file": "model.safetensors"},
        "plan": {},
        "classes": ["0", "1"],
        "positive_class": "1",
        "threshold": {"value": THRESHOLD, "method": "youden", "chosen_on": "validation",
                      "sensitivity": 0.9, "specificity": 0.8},
        "calibration": {"method": "temperature", "temperature": 1.3},
        "versions": {"torch": "2.13.0", "monai": "1.6.1"},
        "data_fingerprint": {"n_samples": 80, "modality": "MR", "median_spacing": [1.0, 1.0, 2.0]},
    }))
    (run / "config.yaml").write_text(
        "data:\n  manifest: /data/study/manifest.csv\n  classes: ['0', '1']\n"
        "model:\n  name: resnet10\n  spatial_dims: 3\ntrain:\n  epochs: 20\n  lr: 0.001\n  batch_size: 4\n"
    )
    return ReportInputs(predictions, manifest_path, qc_path, run, frame, patients, frame["sample_id"].tolist())



@dataclass
class BuiltReport:
    out: Path
    exit_code: int
    output: str


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Run ``medrec`` in-process; return the exit code and what it printed (stdout + stderr)."""
    import contextlib
    import io

    from medrec.cli import main

    buffer = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer):
        try:
            main(argv)
        except SystemExit as e:
            code = int(e.code or 0) if not isinstance(e.code, str) else 1
    return code, buffer.getvalue()


@pytest.fixture(scope="session")
def cli_report(report_inputs: ReportInputs, tmp_path_factory: pytest.TempPathFactory) -> BuiltReport:
    """The default report: run directory (frozen threshold, manifest, qc, splits), pseudonymised."""
    out = tmp_path_factory.mktemp("cli_report") / "report"
    code, output = run_cli([
        "report", str(report_inputs.predictions), "-o", str(out), "--run", str(report_inputs.run),
        "--subgroup", "manufacturer", "--prevalence", "0.05", "--bootstrap", "200", "--seed", "3",
    ])
    return BuiltReport(out, code, output)


@pytest.fixture(scope="session")
def explore_report(report_inputs: ReportInputs, tmp_path_factory: pytest.TempPathFactory) -> BuiltReport:
    """Exploratory threshold, raw identifiers kept, compared with a second (noisier) model; no manifest."""
    root = tmp_path_factory.mktemp("explore_report")
    other = report_inputs.frame.copy()
    rng = np.random.default_rng(5)
    noisy = np.clip(other["score"].fillna(0.5) + rng.normal(0, 0.25, len(other)), 0, 1).round(6)
    other["score"] = noisy.where(other["error"] == "", np.nan)
    compare = root / "other.csv"
    columns = ["sample_id", "patient_id", "study_uid", "score", "prediction", "label", "error"]
    other[columns].to_csv(compare, index=False)
    out = root / "report"
    code, output = run_cli([
        "report", str(report_inputs.predictions), "-o", str(out), "--exploratory-threshold", "youden",
        "--keep-identifiers", "--compare", str(compare), "--bootstrap", "100", "--title", "Exploratory look",
    ])
    return BuiltReport(out, code, output)


@pytest.fixture()
def run_medrec():
    """``run_medrec(argv) -> (exit_code, printed_text)``."""
    return run_cli
