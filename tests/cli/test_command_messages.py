"""One-line answers that name the real problem: a missing run, an empty scan folder; model descriptions in full."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from medrec.cli import app, main
from medrec.errors import InputError
from medrec.index import index_folder
from medrec.models import list_models


def _exit_code(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    return 0


def test_evaluate_a_missing_run_says_not_found(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "ct-lesion").mkdir(parents=True)
    assert _exit_code(["evaluate", "runs/nope"]) != 0
    message = " ".join(capsys.readouterr().err.split())
    assert "error: runs/nope: run directory not found;" in message
    assert "not a complete run" not in message
    assert _exit_code(["evaluate", "runs/ct-lesio"]) != 0  # a typo gets the near folder
    assert "runs/ct-lesio: run directory not found; did you mean runs/ct-lesion?" in capsys.readouterr().err


def test_evaluate_an_existing_but_unfinished_run_still_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert _exit_code(["evaluate", str(run)]) != 0
    assert "not a complete run directory" in capsys.readouterr().err


def test_an_empty_scan_folder_has_no_zero_junk_clause(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as caught:
        index_folder(tmp_path / "empty", tmp_path / "index", show_progress=False)
    assert str(caught.value) == f"{tmp_path / 'empty'}: no files found; point SCANS at the folder holding the scans"


def test_a_folder_of_os_junk_names_it(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / ".DS_Store").write_bytes(b"\0")
    with pytest.raises(InputError, match=r"no files found \(only 1 OS junk file: \.DS_Store"):
        index_folder(scans, tmp_path / "index", show_progress=False)
    (scans / "Thumbs.db").write_bytes(b"\0")
    with pytest.raises(InputError, match=r"no files found \(only 2 OS junk files: "):
        index_folder(scans, tmp_path / "index", show_progress=False)


def _descriptions(table: str) -> dict[str, str]:
    """Each model's description as the table shows it, its wrapped lines joined (no whitespace)."""
    found: dict[str, str] = {}
    name = None
    for line in table.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells[0]:
            name = cells[0]
            found[name] = ""
        found[name] += re.sub(r"\s+", "", cells[-1])
    return found


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_models_prints_every_description_in_full(columns):
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert all(len(line) <= columns for line in result.output.splitlines())
    shown = _descriptions(result.output)
    for info in list_models():
        assert shown[info.name] == re.sub(r"\s+", "", info.description), info.name
