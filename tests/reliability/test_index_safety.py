"""Items 4, 6 and 8: 'medrec index' on hostile headers, executable preambles and unwritable outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from .conftest import files_under

HOSTILE_PID = "../../escape"
HOSTILE_DESCRIPTION = "AX/../../etc/passwd ~$HOME *?<>|:\"'; rm -rf"


def test_hostile_patient_id_and_description_stay_inside_output(tmp_path: Path, run_cli, ct_series) -> None:
    scans = tmp_path / "scans"
    ct_series(scans / "s1", patient_id=HOSTILE_PID, series_description=HOSTILE_DESCRIPTION, slices=6)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    out = work / "out"
    code, output = run_cli(["index", scans, "-o", out])
    assert code == 0, output
    assert "Traceback" not in output

    before = {p for p in tmp_path.rglob("*")}
    written = files_under(out)
    assert written, "index wrote nothing"
    root = out.resolve()
    for path in written:
        assert path.resolve().is_relative_to(root), path
        relative = str(path.relative_to(out))
        assert "escape" not in relative and HOSTILE_PID not in relative, relative
        assert "passwd" not in relative, relative
    # Nothing appeared next to the output or above it (the "escape" target).
    assert not (tmp_path / "escape").exists() and not (tmp_path / "a" / "escape").exists()
    assert not any("escape" in p.name for p in before)

    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(manifest) == 1


def _with_preamble(path: Path, magic: bytes) -> None:
    data = bytearray(path.read_bytes())
    assert data[128:132] == b"DICM"
    data[: len(magic)] = magic
    path.write_bytes(bytes(data))


def test_executable_preamble_flagged_in_qc(tmp_path: Path, run_cli, ct_series) -> None:
    scans = tmp_path / "scans"
    good = ct_series(scans / "good", patient_id="GOOD01", slices=6, seed=1)
    bad = ct_series(scans / "bad", patient_id="BAD01", slices=6, seed=2)
    _with_preamble(bad[0], b"MZ\x90\x00\x03\x00\x00\x00")
    out = tmp_path / "out"
    code, output = run_cli(["index", scans, "-o", out])
    assert code == 0, output
    qc = pd.read_csv(out / "qc.csv", dtype=str, keep_default_na=False)
    flagged = qc[qc["code"] == "executable_preamble"]
    assert [Path(p).resolve() for p in flagged["path"]] == [bad[0].resolve()], qc.to_string()
    assert "MZ" in flagged["reason"].iloc[0]
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    listed = " ".join(manifest["files"])
    assert str(bad[0].resolve()) not in listed and str(bad[0]) not in listed
    assert all(str(p.resolve()) in listed or str(p) in listed for p in good), listed


def test_synth_dicom_has_zeroed_preamble(tmp_path: Path) -> None:
    from medrec.synth import generate_cohort

    cohort = generate_cohort(
        tmp_path / "synth", kind="ct-lesion", patients=2, image_size=16, seed=3, follow_up_fraction=0.0)
    dicoms = [p for p in (tmp_path / "synth").rglob("*") if p.is_file() and p.read_bytes()[128:132] == b"DICM"]
    assert dicoms and len(dicoms) >= sum(len(s.files) for s in cohort.studies)
    for path in dicoms:
        assert path.read_bytes()[:128] == b"\x00" * 128, path


def _assert_one_line_error(code: int, output: str) -> None:
    assert code != 0
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1, output


def test_output_under_a_regular_file_is_a_clear_error(tmp_path: Path, run_cli, ct_series) -> None:
    scans = tmp_path / "scans"
    ct_series(scans / "s1", slices=3)
    blocker = tmp_path / "some_file"
    blocker.write_text("not a folder\n")
    code, output = run_cli(["index", scans, "-o", blocker / "out"])
    _assert_one_line_error(code, output)
    assert "some_file" in output
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root ignores directory permissions, so chmod 0o555 cannot make a folder read-only")
def test_read_only_output_folder_is_a_clear_error(tmp_path: Path, run_cli, ct_series) -> None:
    scans = tmp_path / "scans"
    ct_series(scans / "s1", slices=3)
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, output = run_cli(["index", scans, "-o", out])
    finally:
        out.chmod(0o755)
    _assert_one_line_error(code, output)
