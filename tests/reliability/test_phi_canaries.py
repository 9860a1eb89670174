"""Item 5: identifying header values never reach index tables or report files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import files_under

CANARY_NAME = "CANARYNAME"
CANARY_PID = "CANARYPID"
CANARY_BIRTH = "19030507"
CANARY_SITE = "CANARYSITE"

NEVER = [CANARY_NAME, CANARY_BIRTH, "1903-05-07", CANARY_SITE]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from medrec.cli import main
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("phi")
    generate_cohort(
        root / "scans",
        kind="ct-lesion",
        patients=4,
        image_size=24,
        seed=11,
        follow_up_fraction=0.0,
        identity={
            "patient_name": CANARY_NAME + "^{patient_key}",
            "patient_id": CANARY_PID + "{index:02d}",
            "birth_date": CANARY_BIRTH,
            "institution_name": CANARY_SITE,
        },
    )
    dicoms = [p for p in (root / "scans").rglob("*") if p.is_file() and p.suffix not in (".csv",)]
    planted = b"".join(p.read_bytes()[:4096] for p in dicoms[:3])
    for canary in (CANARY_NAME, CANARY_PID, CANARY_BIRTH, CANARY_SITE):
        assert canary.encode() in planted, f"synth did not write {canary} into the headers"
    index_out = root / "index"
    with pytest.raises(SystemExit) as done:
        main(["index", str(root / "scans"), "-o", str(index_out)])
    assert done.value.code in (0, None)
    manifest = pd.read_csv(index_out / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(manifest) == 4, manifest
    rng = np.random.default_rng(0)
    predictions = pd.DataFrame(
        {
            "sample_id": manifest["sample_id"],
            "patient_id": manifest["patient_id"],
            "study_uid": manifest["study_uid"],
            "score": rng.random(len(manifest)).round(4),
            "label": ["positive", "negative", "positive", "negative"],
        }
    )
    predictions_csv = root / "predictions.csv"
    predictions.to_csv(predictions_csv, index=False)
    return {"root": root, "index": index_out, "predictions": predictions_csv}


def _leaks(folder: Path, canaries: list[str]) -> list[str]:
    found = []
    for path in files_under(folder):
        data = path.read_bytes()
        for canary in canaries:
            if canary.encode() in data or canary.encode("utf-16-le") in data or canary in str(path.relative_to(folder)):
                found.append(f"{path.relative_to(folder)}: {canary}")
    return found


def test_index_tables_hold_no_name_birth_date_or_site(indexed: dict[str, Path]) -> None:
    for name in ("manifest.csv", "qc.csv"):
        text = (indexed["index"] / name).read_bytes()
        for canary in NEVER:
            assert canary.encode() not in text, (name, canary)
    assert _leaks(indexed["index"], NEVER) == []


def _report(indexed: dict[str, Path], out: Path, run_cli, *extra: str) -> None:
    code, output = run_cli(
        ["report", indexed["predictions"], "-o", out, "--threshold", "0.5", "--manifest", indexed["index"] / "manifest.csv", *extra]
    )
    assert code == 0, output
    assert files_under(out), "report wrote nothing"
    for canary in [*NEVER, CANARY_PID]:
        assert canary not in output, ("console output", canary)


def test_report_holds_no_canary(indexed: dict[str, Path], tmp_path: Path, run_cli) -> None:
    out = tmp_path / "report"
    _report(indexed, out, run_cli)
    assert _leaks(out, [*NEVER, CANARY_PID]) == []


def test_report_keep_identifiers_still_hides_name_birth_date_site(indexed: dict[str, Path], tmp_path: Path, run_cli) -> None:
    out = tmp_path / "report-ids"
    _report(indexed, out, run_cli, "--keep-identifiers")
    assert _leaks(out, NEVER) == []
