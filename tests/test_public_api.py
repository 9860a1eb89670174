"""Every name a package lists in ``__all__`` resolves, and the lazily loaded packages list exactly
the names their ``_EXPORTS`` table can load (``__all__`` is spelled out for ruff and mypy, so the two
could drift apart)."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "medrec.data",
    "medrec.dicomout",
    "medrec.index",
    "medrec.labels",
    "medrec.loader",
    "medrec.models",
    "medrec.score",
    "medrec.synth",
    "medrec.train",
    "medrec.transforms",
]
LAZY_PACKAGES = ["medrec.index", "medrec.loader"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_listed_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_exports_match_all(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(module._EXPORTS)
