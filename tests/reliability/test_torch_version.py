"""Item 2: torch older than 2.10 is refused before any command runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medrec.cli import check_torch_version
from medrec.errors import MedrecError


@pytest.mark.parametrize("version", ["2.9.1", "2.9.0+cu121", "1.13.1", "2.0.0"])
def test_old_torch_refused_with_one_line_reason(version: str) -> None:
    with pytest.raises(MedrecError) as info:
        check_torch_version(version)
    message = str(info.value)
    assert "\n" not in message
    assert version in message and "2.10" in message


@pytest.mark.parametrize("version", ["2.10.0", "2.13.0+cpu", "2.11.0a0+git123", "3.0.0"])
def test_supported_torch_accepted(version: str) -> None:
    check_torch_version(version)


def test_unparseable_version_refused() -> None:
    with pytest.raises(MedrecError):
        check_torch_version("not-a-version")


def test_package_import_does_not_import_torch() -> None:
    code = "import sys, medrec, medrec.errors; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_cli_main_checks_the_installed_torch(monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    import medrec.cli as cli

    monkeypatch.setattr(cli, "_check_installed_torch", lambda: cli.check_torch_version("2.9.1"))
    code, output = run_cli(["models"])
    assert code != 0
    assert "2.9.1" in output and "2.10" in output
    assert "Traceback" not in output
