"""Patient-clustered, outcome-stratified percentile bootstrap.

:func:`cluster_bootstrap` evaluates all replicates at once from one integer weight matrix
(:mod:`medrec.report.stats.resampling`) with the vectorised statistics of
:mod:`medrec.report.stats.replicates`. :func:`cluster_bootstrap_shared` runs several analyses of the
same patients on one set of weights; :func:`cluster_bootstrap_multiclass` gives the one-vs-rest
statistics of every class and their macro averages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medrec.report.stats.inputs import _binary_array
from medrec.report.stats.point_metrics import _ratio
from medrec.report.stats.replicates import BOOTSTRAP_STATISTICS, _check_bootstrap_inputs, _ReplicateEvaluator
from medrec.report.stats.resampling import (
    _default_chunk,
    _map_blocks,
    _prepare_clusters,
    _weight_chunks,
    _weight_makers,
)


@dataclass(frozen=True)
class BootstrapResult:
    """A percentile bootstrap interval.

    Attributes:
        value: the statistic on the original data.
        ci: ``(lower, upper)`` percentiles of the replicates (nan when no replicate is defined).
        se: standard deviation of the defined replicates.
        n_boot: replicates drawn; n_valid: replicates where the statistic is defined.
        method: one line for the report.
        replicates: the replicate values (nan where undefined).
    """

    value: float
    ci: tuple[float, float]
    se: float
    n_boot: int
    n_valid: int
    method: str
    replicates: np.ndarray = field(repr=False)


def _percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    valid = replicates[np.isfinite(replicates)]
    if valid.size == 0:
        return (math.nan, math.nan)
    alpha = 1.0 - level
    lower, upper = np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0])
    return (float(lower), float(upper))


def bootstrap_method_text(n_boot: int, clustered: bool, stratify: bool, level: float = 0.95) -> str:
    """One line describing the bootstrap, for the report's method column."""
    unit = "patient-clustered" if clustered else "sample-level"
    strata = ", stratified by outcome" if stratify else ""
    return f"{unit} percentile bootstrap ({n_boot} replicates{strata}; {level:.0%} percentile interval)"


def cluster_bootstrap(
    statistic: str | Sequence[str] | Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    labels: np.ndarray,
    scores: np.ndarray | None,
    clusters: np.ndarray | Sequence | None,
    n_boot: int = 2000,
    seed: int = 0,
    stratify: bool = True,
    level: float = 0.95,
    *,
    predictions: np.ndarray | None = None,
    threshold: float | None = None,
    n_bins: int = 10,
    chunk_size: int | None = None,
) -> BootstrapResult | dict[str, BootstrapResult]:
    """Percentile bootstrap that resamples clusters (patients), not samples (images / studies).

    A patient's studies stay together: each replicate draws clusters with replacement and gives every
    sample its cluster's draw count as weight. With ``stratify``, clusters are split into those that
    hold any positive and those that hold none, and each replicate draws within each group as many
    clusters as it has (so every replicate has positives and negatives). All replicates are
    evaluated with numpy from one integer weight matrix, generated and consumed in chunks of
    replicates to bound memory.

    Args:
        statistic: a name from :data:`BOOTSTRAP_STATISTICS`, a list of names, or a callable
            ``f(labels, scores, predictions, sample_weights (rows, n)) -> (rows,)``.
        labels: 0/1 outcomes.
        scores: positive-class probabilities (needed for AUC, PR-AUC, Brier, ECE and a threshold).
        clusters: cluster (patient) id per sample; None resamples samples.
        n_boot: number of replicates.
        seed: seed of the weight draws (same seed, same intervals).
        stratify: resample within outcome strata.
        level: confidence level of the percentile interval.
        predictions: 0/1 predictions (or give ``threshold``: ``scores >= threshold``).
        n_bins: ECE bins.
        chunk_size: replicates per block (default: about 12 million entries per block).

    Returns:
        :class:`BootstrapResult` for one statistic (name or callable), a dict name -> result for a list.
    """
    names = [statistic] if isinstance(statistic, str) else None
    if names is None and not callable(statistic):
        names = list(statistic)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    y, s, p = _check_bootstrap_inputs(names or [], labels, scores, predictions, threshold)
    if names is None and p is None:
        p = _binary_array(predictions, "predictions") if predictions is not None else (
            (s >= threshold).astype(np.int8) if (s is not None and threshold is not None) else None)
    codes, n_clusters, strata = _prepare_clusters(clusters, y, y.size, stratify)
    method = bootstrap_method_text(n_boot, clusters is not None, stratify, level)

    if names is not None:
        evaluator = _ReplicateEvaluator(names, y, s, p, codes, n_clusters, n_bins)
        width = max(n_clusters, y.size if evaluator.needs_levels else 1)
        chunk = chunk_size or _default_chunk(n_boot, width)
        blocks = _map_blocks(evaluator.evaluate, _weight_makers(strata, n_boot, seed, chunk))
        point = evaluator.evaluate(np.ones((1, n_clusters)))
        replicates = {name: np.concatenate([b[name] for b in blocks]) for name in names}
    else:
        chunk = chunk_size or _default_chunk(n_boot, y.size)
        parts = [np.asarray(statistic(y, s, p, w[:, codes].astype(np.float64)), dtype=np.float64)
                 for w in _weight_chunks(strata, n_boot, seed, chunk)]
        point = {"_": np.asarray(statistic(y, s, p, np.ones((1, y.size))), dtype=np.float64)}
        replicates = {"_": np.concatenate(parts)}
        names = ["_"]

    results = {}
    for name in names:
        values = replicates[name]
        valid = values[np.isfinite(values)]
        results[name] = BootstrapResult(
            value=float(point[name][0]),
            ci=_percentile_interval(values, level),
            se=float(valid.std(ddof=1)) if valid.size > 1 else math.nan,
            n_boot=n_boot,
            n_valid=int(valid.size),
            method=method,
            replicates=values,
        )
    if isinstance(statistic, str) or callable(statistic):
        return results[names[0]]
    return results


def cluster_bootstrap_shared(
    tasks: Sequence[dict[str, Any]],
    n_boot: int = 2000,
    seed: int = 0,
    stratify: bool = True,
    level: float = 0.95,
    *,
    n_bins: int = 10,
) -> list[dict[str, BootstrapResult]]:
    """Several :func:`cluster_bootstrap` analyses of the same clusters on one set of weights.

    Each task is a dict with ``statistics`` (names), ``labels``, ``scores``, ``clusters`` and
    optionally ``predictions`` / ``threshold``, as for :func:`cluster_bootstrap`. Every task must
    hold the same cluster ids with the same strata (e.g. the sample-level data and the patient-level
    data, one row per patient, whose label is "holds any positive"). The weights are then the ones
    each separate :func:`cluster_bootstrap` call with this ``seed`` would draw, so the results equal
    those calls; they are drawn once and every task is evaluated on them.

    Returns:
        One dict name -> :class:`BootstrapResult` per task, in order.

    Raises:
        ValueError: tasks whose cluster ids or strata differ, or the errors of :func:`cluster_bootstrap`.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not tasks:
        return []
    prepared = []
    reference = None
    for index, task in enumerate(tasks):
        names = list(task["statistics"])
        y, s, p = _check_bootstrap_inputs(names, task["labels"], task.get("scores"), task.get("predictions"),
                                          task.get("threshold"))
        clusters = task.get("clusters")
        codes, n_clusters, strata = _prepare_clusters(clusters, y, y.size, stratify)
        ids = np.arange(y.size) if clusters is None else np.unique(
            np.asarray(clusters).astype(str) if np.asarray(clusters).dtype == object else np.asarray(clusters))
        if reference is None:
            reference = (ids, strata)
        elif not (np.array_equal(ids, reference[0]) and np.array_equal(strata, reference[1])):
            raise ValueError(f"bootstrap task {index} has other clusters or strata than task 0; shared weights need "
                             "the same clusters (patients) in every task")
        prepared.append((names, _ReplicateEvaluator(names, y, s, p, codes, n_clusters, n_bins), y.size,
                         clusters is not None))
    strata = reference[1]  # type: ignore[index]
    n_clusters = strata.size
    width = max([n_clusters] + [size for _, evaluator, size, _ in prepared if evaluator.needs_levels])
    chunk = _default_chunk(n_boot, width)

    def evaluate_all(weights: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [evaluator.evaluate(weights) for _, evaluator, _, _ in prepared]

    blocks = _map_blocks(evaluate_all, _weight_makers(strata, n_boot, seed, chunk))
    ones = np.ones((1, n_clusters))
    out = []
    for index, (names, evaluator, _, clustered) in enumerate(prepared):
        point = evaluator.evaluate(ones)
        method = bootstrap_method_text(n_boot, clustered, stratify, level)
        replicates = {name: np.concatenate([block[index][name] for block in blocks]) for name in names}
        out.append({name: _bootstrap_result(point[name][0], replicates[name], n_boot, method, level)
                    for name in names})
    return out


def _bootstrap_result(point: float, values: np.ndarray, n_boot: int, method: str, level: float) -> BootstrapResult:
    valid = values[np.isfinite(values)]
    return BootstrapResult(value=float(point), ci=_percentile_interval(values, level),
                           se=float(valid.std(ddof=1)) if valid.size > 1 else math.nan,
                           n_boot=n_boot, n_valid=int(valid.size), method=method, replicates=values)


def cluster_bootstrap_multiclass(
    statistics: Sequence[str],
    labels: np.ndarray,
    scores: np.ndarray,
    predictions: np.ndarray,
    clusters: np.ndarray | Sequence | None,
    n_boot: int = 2000,
    seed: int = 0,
    stratify: bool = True,
    level: float = 0.95,
    n_bins: int = 10,
) -> dict[str, Any]:
    """One-vs-rest statistics of every class and their macro averages, on shared bootstrap weights.

    Args:
        statistics: names from :data:`BOOTSTRAP_STATISTICS`.
        labels: class index per sample (0..k-1).
        scores: (n, k) class probabilities.
        predictions: predicted class index per sample.
        clusters: patient id per sample (None: each sample its own cluster).
        n_boot, seed, stratify, level, n_bins: as in :func:`cluster_bootstrap`; strata are the sets
            of classes that clusters hold.

    Returns:
        ``{"per_class": [ {name: BootstrapResult} per class ], "macro": {name: BootstrapResult},
        "accuracy": BootstrapResult}``; a macro replicate is the mean over classes of that
        replicate's one-vs-rest values (nan when any class's value is undefined in it);
        ``accuracy`` is the multi-class accuracy (fraction of samples whose class is right).
    """
    unknown = [name for name in statistics if name not in BOOTSTRAP_STATISTICS]
    if unknown:
        raise ValueError(f"unknown bootstrap statistic(s) {unknown}; choose from {', '.join(BOOTSTRAP_STATISTICS)}")
    y = np.asarray(labels, dtype=np.int64)
    prob = np.asarray(scores, dtype=np.float64)
    pred = np.asarray(predictions, dtype=np.int64)
    if prob.ndim != 2 or prob.shape[0] != y.size or pred.shape != y.shape:
        raise ValueError(f"need labels (n,), scores (n, k) and predictions (n,); got {y.shape}, {prob.shape}, "
                         f"{pred.shape}")
    n_classes = prob.shape[1]
    codes, n_clusters, strata = _prepare_clusters(clusters, y, y.size, stratify)
    evaluators = [
        _ReplicateEvaluator(statistics, (y == k).astype(np.int8), prob[:, k], (pred == k).astype(np.int8),
                            codes, n_clusters, n_bins)
        for k in range(n_classes)
    ]
    chunk = _default_chunk(n_boot, max(n_clusters, y.size))
    blocks: list[list[dict[str, np.ndarray]]] = [[] for _ in range(n_classes)]
    hits = np.bincount(codes, weights=(y == pred).astype(np.float64), minlength=n_clusters)
    sizes = np.bincount(codes, minlength=n_clusters).astype(np.float64)
    accuracy_blocks = []
    for weights in _weight_chunks(strata, n_boot, seed, chunk):
        weights_f = weights.astype(np.float64)
        accuracy_blocks.append(_ratio(weights_f @ hits, weights_f @ sizes))
        for k, evaluator in enumerate(evaluators):
            blocks[k].append(evaluator.evaluate(weights))
    ones = np.ones((1, n_clusters))
    points = [evaluator.evaluate(ones) for evaluator in evaluators]
    method = bootstrap_method_text(n_boot, clusters is not None, stratify, level)

    def result(point: float, values: np.ndarray) -> BootstrapResult:
        valid = values[np.isfinite(values)]
        return BootstrapResult(value=float(point), ci=_percentile_interval(values, level),
                               se=float(valid.std(ddof=1)) if valid.size > 1 else math.nan,
                               n_boot=n_boot, n_valid=int(valid.size), method=method, replicates=values)

    per_class = []
    replicates = []
    for k in range(n_classes):
        class_replicates = {name: np.concatenate([b[name] for b in blocks[k]]) for name in statistics}
        replicates.append(class_replicates)
        per_class.append({name: result(points[k][name][0], class_replicates[name]) for name in statistics})
    macro = {}
    for name in statistics:
        stacked = np.vstack([replicates[k][name] for k in range(n_classes)])
        point = float(np.mean([points[k][name][0] for k in range(n_classes)]))
        macro[name] = result(point, stacked.mean(axis=0))
    accuracy = result(float(np.mean(y == pred)) if y.size else math.nan, np.concatenate(accuracy_blocks))
    return {"per_class": per_class, "macro": macro, "accuracy": accuracy}
