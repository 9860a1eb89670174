"""The cases a binary report flags for review: the most confident false negatives and false positives."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

N_FLAGGED = 5


def _flagged(data: pd.DataFrame, y: np.ndarray, s: np.ndarray, pred: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    def rows(mask: np.ndarray, ascending: bool) -> list[dict[str, Any]]:
        index = np.flatnonzero(mask)
        order = index[np.argsort(s[index] if ascending else -s[index], kind="stable")][:N_FLAGGED]
        return [{"sample_id": str(data["sample_id"].iat[i]), "patient_id": str(data["patient_id"].iat[i]),
                 "score": float(s[i])} for i in order]

    return {"false_negatives": rows((y == 1) & (pred == 0), ascending=True),
            "false_positives": rows((y == 0) & (pred == 1), ascending=False)}
