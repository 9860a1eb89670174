"""Batch scoring: predictions CSV (resumable, shardable), study / patient aggregation, Grad-CAM maps.

Public API:
    score(run_dir, input_path, output, options=None, labels=None, match_on=None) -> ScoreResult
    score_manifest(run, manifest, output, options=None, *, model_sha256, ...) -> ScoreResult
    ScoreOptions(level, aggregate, threshold, tta, batch_size, workers, device, amp, explain_dir,
                 retry_errors, overwrite, num_parts, part_id)
    merge_parts(parts, output, allow_incomplete=False, overwrite=False) -> MergeResult
    shard_of(key, num_parts) -> int;  select_part(manifest, num_parts, part_id, level) -> DataFrame
    grad_cam(model, image, class_index) -> ndarray;  GradCamExplainer(run, out_dir)
    read_rows(path) -> (columns, rows);  read_sidecar(output) -> dict | None
    default_workers() -> int (loader processes when --workers is not given)
"""

from __future__ import annotations

from medrec.score.aggregate import aggregate_rows
from medrec.score.merge import MergeResult, merge_parts
from medrec.score.options import ScoreOptions, ScoreResult
from medrec.score.pipeline import default_workers
from medrec.score.scorer import score, score_manifest
from medrec.score.scoring_run import load_scoring_run
from medrec.score.shards import select_part, shard_of
from medrec.score.writer import PredictionsWriter, read_rows, read_sidecar, sidecar_path

__all__ = [
    "MergeResult",
    "PredictionsWriter",
    "ScoreOptions",
    "ScoreResult",
    "aggregate_rows",
    "default_workers",
    "load_scoring_run",
    "merge_parts",
    "read_rows",
    "read_sidecar",
    "score",
    "score_manifest",
    "select_part",
    "shard_of",
    "sidecar_path",
]


def __getattr__(name: str):  # Grad-CAM pulls in matplotlib / scipy: import it only when asked
    if name in ("grad_cam", "GradCamExplainer"):
        from medrec.score import explain

        return getattr(explain, name)
    raise AttributeError(f"module 'medrec.score' has no attribute {name!r}")
