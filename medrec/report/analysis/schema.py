"""The shape of ``report.json`` values: its schema version, the METRIC dict, and plain JSON types.

The schema is written out in the docstring of :mod:`medrec.report.analysis.analyse`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1


def _jsonable(value: Any) -> Any:
    """Plain Python types only; NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(item) for item in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def _metric(value: float, ci: Sequence[float], method: str, **extra: Any) -> dict[str, Any]:
    return {"value": value, "ci95": [ci[0], ci[1]], "method": method, **extra}
