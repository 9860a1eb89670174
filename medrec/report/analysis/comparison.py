"""Two models on the same samples: paired test of their AUCs (DeLong / Obuchowski) and McNemar's
test of their sensitivities and specificities."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from medrec.errors import InputError
from medrec.report import stats
from medrec.report.analysis.settings import _Settings
from medrec.report.analysis.table import _is_blank, _text


def _comparison(data: pd.DataFrame, y: np.ndarray, s: np.ndarray, pred: np.ndarray, patients: np.ndarray,
                all_ids: pd.Series, compare: pd.DataFrame, threshold_b: float, settings: _Settings) -> dict[str, Any]:
    if not isinstance(compare, pd.DataFrame) or "sample_id" not in compare.columns or "score" not in compare.columns:
        raise InputError("compare: needs a binary predictions table with sample_id and score columns")
    other_ids = _text(compare["sample_id"])
    if other_ids.duplicated().any():
        raise InputError(f"compare: sample_id {other_ids[other_ids.duplicated()].iloc[0]!r} appears twice")
    only_first = sorted(set(all_ids) - set(other_ids))
    only_second = sorted(set(other_ids) - set(all_ids))
    if only_first or only_second:
        raise InputError(
            f"compare: the two predictions tables hold different samples ({len(only_first)} only in the first, "
            f"e.g. {only_first[:3]}; {len(only_second)} only in the second, e.g. {only_second[:3]}); score both "
            "models on the same manifest")
    usable = compare.assign(sample_id=other_ids, score=pd.to_numeric(compare["score"], errors="coerce"))
    if "error" in usable.columns:
        usable = usable[_is_blank(usable["error"])]
    usable = usable[np.isfinite(usable["score"].to_numpy(dtype=np.float64))]
    merged = data[["sample_id"]].assign(_row=np.arange(len(data))).merge(
        usable[["sample_id", "score"]].rename(columns={"score": "score_b"}), on="sample_id", how="inner")
    rows = merged["_row"].to_numpy()
    ya, sa, pa = y[rows], s[rows], pred[rows]
    sb = merged["score_b"].to_numpy(dtype=np.float64)
    pb = (sb >= threshold_b).astype(np.int8)
    result: dict[str, Any] = {"n_samples": int(rows.size), "n_unusable_in_compare": int(len(data) - rows.size),
                              "threshold_b": threshold_b}
    if 0 < ya.sum() < ya.size:
        pa_ids = patients[rows]
        n_patients = int(np.unique(pa_ids).size)
        if n_patients < rows.size:
            paired = stats.obuchowski_paired_test(ya, sa, sb, pa_ids, n_boot=settings.n_boot, seed=settings.seed)
            test = (f"paired test of AUC(first) - AUC(second) with the Obuchowski (1997) clustered covariance, the "
                    f"{n_patients} patients as clusters ({rows.size} samples)")
        else:
            paired = stats.delong_paired_test(ya, sa, sb, n_boot=settings.n_boot, seed=settings.seed)
            test = "paired DeLong test (Sun & Xu 2014) of AUC(first) - AUC(second); one sample per patient"
        result["auc"] = {**paired, "method": f"{test}; {paired['ci_method']}"}
    else:
        result["auc"] = None
    for name, subset in (("sensitivity", ya == 1), ("specificity", ya == 0)):
        correct_a = pa[subset] == ya[subset]
        correct_b = pb[subset] == ya[subset]
        b = int(np.sum(correct_a & ~correct_b))
        c = int(np.sum(~correct_a & correct_b))
        result[name] = {"value_a": float(correct_a.mean()) if correct_a.size else math.nan,
                        "value_b": float(correct_b.mean()) if correct_b.size else math.nan,
                        "n": int(subset.sum()), **stats.mcnemar_test(b, c)}
    return result
