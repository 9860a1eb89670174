"""medrec: from folders of medical scans to validated tumor / anomaly classifiers."""

from __future__ import annotations

__version__ = "0.1.0"
