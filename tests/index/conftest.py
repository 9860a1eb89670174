"""Fixtures for the index tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    """An empty scan folder."""
    folder = tmp_path / "scans"
    folder.mkdir()
    return folder
