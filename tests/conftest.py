"""Shared pytest fixtures for the medrec test suite."""

from __future__ import annotations

import os

# Tests run on 2-core CI machines: keep BLAS / torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
