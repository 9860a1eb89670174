"""The bootstrap's vectorised engine: weighted binary statistics for many replicates at once.

scikit-learn's metrics accept ``sample_weight`` but would need one Python call per replicate, far
too slow for 2000 replicates of 100,000 predictions. :class:`_ReplicateEvaluator` evaluates a whole
block of weight rows with matrix products; :func:`weighted_statistics` exposes it so that it can be
checked against scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medrec.report.stats.inputs import _binary_array, _score_array
from medrec.report.stats.point_metrics import _bin_index, _ratio, metrics_from_counts

# Statistics that cluster_bootstrap evaluates vectorised over replicates.
BOOTSTRAP_STATISTICS: tuple[str, ...] = (
    "sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy", "f1", "mcc",
    "auc", "pr_auc", "brier", "ece",
)
# Evaluated like them, but not part of the report's metric table: the scaled Brier score
# (1 - Brier / (prevalence (1 - prevalence)), Steyerberg et al. 2010) of the calibration section.
EXTRA_BOOTSTRAP_STATISTICS: tuple[str, ...] = ("scaled_brier",)
_SCORE_STATISTICS = frozenset({"auc", "pr_auc", "brier", "ece", "scaled_brier"})
_PREDICTION_STATISTICS = frozenset(BOOTSTRAP_STATISTICS) - _SCORE_STATISTICS


class _ReplicateEvaluator:
    """Weighted binary metrics for many replicates at once.

    Per-sample weights are cluster weights, so every additive quantity is summed per cluster once
    and a replicate is one matrix product with its weight row. The ranking metrics sort the scores
    once; per replicate, cumulative negative (and positive) weights in score order are gathered at
    each positive's position:
    ``AUC = sum_i w_i * (N_below(i) + N_tied(i) / 2) / (sum P * sum N)`` over positives i (ties count
    1/2), and average precision ``= sum_i w_i * precision(s_i) / sum P`` with precision at threshold
    ``s_i`` (scores >= s_i flagged), as scikit-learn's ``average_precision_score`` with
    ``sample_weight``.
    """

    def __init__(self, statistics: Sequence[str], labels: np.ndarray, scores: np.ndarray | None,
                 predictions: np.ndarray | None, codes: np.ndarray, n_clusters: int, n_bins: int = 10):
        self.statistics = tuple(statistics)
        y = labels.astype(bool)
        self.needs_counts = any(name in _PREDICTION_STATISTICS for name in self.statistics)
        self.needs_levels = any(name in ("auc", "pr_auc") for name in self.statistics)
        self.needs_calibration = any(name in ("brier", "ece", "scaled_brier") for name in self.statistics)
        self.needs_outcomes = "scaled_brier" in self.statistics

        def per_cluster(values: np.ndarray) -> np.ndarray:
            return np.bincount(codes, weights=values.astype(np.float64), minlength=n_clusters)

        # Additive quantities per cluster, one column each: a replicate's sums are one matrix product.
        columns = [per_cluster(np.ones(y.size))]
        if self.needs_counts:
            p = predictions.astype(bool)  # type: ignore[union-attr]
            columns += [per_cluster(y & p), per_cluster(~y & p), per_cluster(~y & ~p), per_cluster(y & ~p)]
        if self.needs_calibration:
            s = scores.astype(np.float64)  # type: ignore[union-attr]
            self.brier_column = len(columns)
            columns.append(per_cluster((s - y) ** 2))
            bin_gap = np.zeros((n_clusters, n_bins))
            np.add.at(bin_gap, (codes, _bin_index(s, n_bins)), s - y)
            self.bin_columns = slice(len(columns), len(columns) + n_bins)
            columns += list(bin_gap.T)
        if self.needs_outcomes:
            self.outcome_column = len(columns)
            columns.append(per_cluster(y))
        self.additive = np.column_stack(columns)
        if self.needs_levels:
            s = scores.astype(np.float64)  # type: ignore[union-attr]
            order = np.argsort(s, kind="stable")
            pos_order, neg_order = order[y[order]], order[~y[order]]
            pos_sorted, neg_sorted = s[pos_order], s[neg_order]
            # Cluster of each positive / negative in ascending score order.
            self.pos_codes = codes[pos_order]
            self.neg_codes = codes[neg_order]
            # For positive i: negatives strictly below it, negatives at or below it, positives below it.
            # Without ties (continuous scores) the second equals the first and the third is i itself,
            # and those gathers are skipped.
            self.neg_below = np.searchsorted(neg_sorted, pos_sorted, side="left")
            neg_upto = np.searchsorted(neg_sorted, pos_sorted, side="right")
            self.neg_upto = None if np.array_equal(neg_upto, self.neg_below) else neg_upto
            pos_below = np.searchsorted(pos_sorted, pos_sorted, side="left")
            self.pos_below = None if np.array_equal(pos_below, np.arange(pos_below.size)) else pos_below

    def evaluate(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Statistics per row of ``weights`` (rows, n_clusters), integer (exact) or float."""
        out: dict[str, np.ndarray] = {}
        integral = weights.dtype.kind in "iu"
        weights_f = weights.astype(np.float64, copy=False)
        sums = weights_f @ self.additive
        total = sums[:, 0]
        if self.needs_counts:
            out.update(metrics_from_counts(sums[:, 1], sums[:, 2], sums[:, 3], sums[:, 4]))
        if self.needs_levels:
            out.update(self._ranking(weights, weights_f, integral, total))
        if self.needs_calibration:
            out["brier"] = _ratio(sums[:, self.brier_column], total)
            out["ece"] = _ratio(np.abs(sums[:, self.bin_columns]).sum(axis=1), total)
        if self.needs_outcomes:
            prevalence = _ratio(sums[:, self.outcome_column], total)
            out["scaled_brier"] = 1.0 - _ratio(out["brier"], prevalence * (1.0 - prevalence))
        return {name: out[name] for name in self.statistics}

    def _ranking(self, weights: np.ndarray, weights_f: np.ndarray, integral: bool,
                 total: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        rows = weights.shape[0]
        # Integer weights: gathers and cumulative sums stay integer (int32 while every running sum fits,
        # i.e. the largest replicate's total weight is below 2**31), products accumulate in int64.
        if integral and (total.size == 0 or total.max() < 2**31 - 1) and weights.min(initial=0) >= 0:
            acc, dot_type = np.int32, np.int64
            source = weights.astype(np.int32, copy=False)
        elif integral:
            acc, dot_type = np.int64, np.int64
            source = weights.astype(np.int64, copy=False)
        else:
            acc, dot_type = np.float64, np.float64
            source = weights_f

        def row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.einsum("rp,rp->r", a, b, dtype=dot_type).astype(np.float64)

        pos_w = np.take(source, self.pos_codes, axis=1)
        neg_cum = np.empty((rows, self.neg_codes.size + 1), dtype=acc)
        neg_cum[:, 0] = 0
        np.cumsum(np.take(source, self.neg_codes, axis=1), axis=1, dtype=acc, out=neg_cum[:, 1:])
        pos_total = pos_w.sum(axis=1, dtype=dot_type)
        neg_total = neg_cum[:, -1].astype(dot_type)
        undefined = (pos_total == 0) | (neg_total == 0)
        pair_weight = pos_total.astype(np.float64) * neg_total.astype(np.float64)
        neg_below = np.take(neg_cum, self.neg_below, axis=1)
        if "auc" in self.statistics:
            # Negatives below each positive, plus half of those tied with it.
            beaten = row_dot(pos_w, neg_below)
            if self.neg_upto is not None:
                beaten = 0.5 * (beaten + row_dot(pos_w, np.take(neg_cum, self.neg_upto, axis=1)))
            out["auc"] = _ratio(beaten, pair_weight)
            out["auc"][undefined] = np.nan
        if "pr_auc" in self.statistics:
            # Precision at each positive's score: the positive share of the weight at or above it.
            pos_cum = np.cumsum(pos_w, axis=1, dtype=acc)
            if self.pos_below is None:
                pos_cum -= pos_w  # positives strictly below positive i: the exclusive running sum
                true_pos = pos_cum
            else:
                pos_cum = np.concatenate([np.zeros((rows, 1), dtype=acc), pos_cum], axis=1)
                true_pos = np.take(pos_cum, self.pos_below, axis=1)
            np.subtract(pos_total.astype(acc)[:, None], true_pos, out=true_pos)
            flagged = np.subtract(neg_total.astype(acc)[:, None], neg_below, out=neg_below)
            flagged += true_pos
            # flagged is 0 only where true_pos is 0 too; such positives weigh nothing.
            np.maximum(flagged, 1 if integral else np.finfo(np.float64).tiny, out=flagged)
            precision = np.divide(true_pos, flagged, dtype=np.float64)
            numerator = np.einsum("rp,rp->r", pos_w, precision, dtype=np.float64)
            out["pr_auc"] = _ratio(numerator, pos_total.astype(np.float64))
            out["pr_auc"][undefined] = np.nan
        return out


def _check_bootstrap_inputs(statistics: Sequence[str], labels, scores, predictions, threshold):
    known = BOOTSTRAP_STATISTICS + EXTRA_BOOTSTRAP_STATISTICS
    unknown = [name for name in statistics if name not in known]
    if unknown:
        raise ValueError(f"unknown bootstrap statistic(s) {unknown}; choose from {', '.join(known)}")
    y = _binary_array(labels, "labels")
    s = None if scores is None else _score_array(scores)
    if s is not None and s.shape != y.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if any(name in _SCORE_STATISTICS for name in statistics) and s is None:
        raise ValueError("AUC, PR-AUC, Brier, scaled Brier and ECE need scores")
    p = None
    if any(name in _PREDICTION_STATISTICS for name in statistics):
        if predictions is not None:
            p = _binary_array(predictions, "predictions")
        elif threshold is not None and s is not None:
            p = (s >= threshold).astype(np.int8)
        else:
            raise ValueError("confusion-matrix statistics need predictions or a threshold with scores")
        if p.shape != y.shape:
            raise ValueError(f"labels and predictions differ in length: {y.size} vs {p.size}")
    return y, s, p


def weighted_statistics(statistics: Sequence[str], labels: np.ndarray, scores: np.ndarray | None,
                        sample_weights: np.ndarray, predictions: np.ndarray | None = None,
                        threshold: float | None = None, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Weighted binary statistics for each row of ``sample_weights`` (n_replicates, n_samples).

    The vectorised engine behind :func:`cluster_bootstrap`, exposed so that it can be checked
    against scikit-learn with ``sample_weight``.
    """
    y, s, p = _check_bootstrap_inputs(statistics, labels, scores, predictions, threshold)
    weights = np.atleast_2d(np.asarray(sample_weights))
    if weights.dtype.kind not in "iu":  # integer weights (bootstrap counts) take the exact integer path
        weights = weights.astype(np.float64)
    if weights.shape[1] != y.size:
        raise ValueError(f"sample_weights need one column per sample ({y.size}), got {weights.shape[1]}")
    evaluator = _ReplicateEvaluator(statistics, y, s, p, np.arange(y.size), y.size, n_bins)
    return evaluator.evaluate(weights)
