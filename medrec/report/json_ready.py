"""report.json holds plain JSON types only: what the analysis returns (numpy, pandas, paths, NaN) made so."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd


def to_json_ready(value: object) -> object:
    """Plain JSON types: numpy scalars / arrays to Python, NaN / inf to None, tuples to lists."""
    if isinstance(value, Mapping):
        return {str(k): to_json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_json_ready(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return to_json_ready(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, pd.Timestamp | dt.date):
        return value.isoformat()
    return value
