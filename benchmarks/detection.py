"""Record what finished runs detect, side by side, in ``benchmarks/results.json`` under ``detection``.

Detection quality is not a speed ratio, so it is not one of :mod:`run_all`'s benchmarks: the runs
take tens of minutes each and are made with the commands of ``datasets/synthetic_phantoms.md``.
This script reads what they wrote (``evaluation/report.json``, ``config.yaml``, ``metrics.jsonl``)
and records, per run, the method, the locked test split's AUC and average precision with their
confidence intervals, the lesion-level results (hit rate, FROC CPM, voxel-level AP, AUC by
lesion diameter when the report has them) and the training time and steps, plus the load average
at the time of recording (training time taken on a busy machine is marked so).

Usage:
    python benchmarks/detection.py GROUP RUN [RUN ...] [--note TEXT]

``GROUP`` names the comparison (``mr-anomaly``); each ``RUN`` is a run folder (``medrec run``
output). The group's previous record is replaced; other groups are kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, load_average, machine  # noqa: E402

RESULTS = BENCH_DIR / "results.json"


def _metric(metrics: dict[str, Any], name: str) -> dict[str, Any] | None:
    entry = metrics.get(name) or {}
    if entry.get("value") is None:
        return None
    return {"value": round(float(entry["value"]), 4),
            "ci95": [round(float(v), 4) for v in entry["ci95"]] if entry.get("ci95") else None}


def run_record(run: Path) -> dict[str, Any]:
    """What one finished run detects and what its training cost."""
    report = json.loads((run / "evaluation" / "report.json").read_text(encoding="utf-8"))
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    training = config.get("training") or {}
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    metrics = report.get("metrics") or {}
    record: dict[str, Any] = {
        "run": run.name,
        "task": config.get("task", "classification"),
        "method": training.get("anomaly_method", "synthetic") if config.get("task") == "anomaly" else "supervised",
        "model": (config.get("model") or {}).get("name"),
        "test": {"n_positive": report.get("n_positive"), "n_negative": report.get("n_negative"),
                 "auc": _metric(metrics, "auc"), "average_precision": _metric(metrics, "pr_auc"),
                 "sensitivity": _metric(metrics, "sensitivity"), "specificity": _metric(metrics, "specificity")},
        "training": {"epochs": len(epochs), "steps": len(epochs) * int(training.get("steps_per_epoch", 0)),
                     "seconds": round(sum(float(e.get("seconds", 0.0)) for e in epochs), 1),
                     "val_auc_by_epoch": [e.get("val_auc") for e in epochs]},
    }
    lesion = report.get("lesion_level") or {}
    if lesion:
        hit = lesion.get("hit_rate") or {}
        voxel = lesion.get("voxel_ap") or {}
        record["lesion_level"] = {
            "hit_rate": hit.get("value"), "hit_rate_of": [hit.get("numerator"), hit.get("denominator")],
            "froc_cpm": (lesion.get("froc") or {}).get("cpm"),
            "voxel_ap": voxel.get("value"), "voxel_ap_lesion_voxel_share": (
                round(voxel["lesion_voxels"] / voxel["voxels"], 5) if voxel.get("voxels") else None),
            "sensitivity_by_diameter": [{"band": row.get("band"), "n_lesions": row.get("n_lesions"),
                                         "sensitivity": row.get("value")}
                                        for row in lesion.get("by_diameter") or []],
        }
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("group", help="name of the comparison, e.g. mr-anomaly")
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    parser.add_argument("--note", default="", help="what the reader should know (data, machine load)")
    args = parser.parse_args()
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    detection = dict(previous.get("detection") or {})
    detection[args.group] = {
        "recorded_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "load_average": load_average(),
        "machine": machine(),
        "note": args.note,
        "runs": [run_record(run) for run in args.runs],
    }
    previous["detection"] = detection
    temporary = RESULTS.with_suffix(".tmp")
    temporary.write_text(json.dumps(previous, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(temporary, RESULTS)
    for run in detection[args.group]["runs"]:
        auc = (run["test"]["auc"] or {}).get("value")
        print(f"{run['run']}: {run['method']}, test AUC {auc}, {run['training']['steps']} steps, "
              f"{run['training']['seconds']} s")


if __name__ == "__main__":
    main()
