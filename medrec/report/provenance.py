"""The report's provenance: its inputs by file name and sha256, the model by the hash of its weights,
the run's resolved configuration and preprocessing plan, the library versions and the report date.

File and folder names only are recorded, never full paths (folders can be named after patients).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import yaml

from medrec import __version__
from medrec.hashing import sha256_file, sha256_json
from medrec.labels import mapping_text
from medrec.report import document as doc_model
from medrec.report.reference import PREDICTIONS_REFERENCE
from medrec.runinfo import MODEL_WEIGHTS, RunInfo

LIBRARIES: tuple[str, ...] = ("medrec", "torch", "monai", "numpy", "pydicom", "scikit-learn", "scipy", "pandas",
                              "matplotlib", "reportlab")


def _versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def report_date() -> str:
    """Today (UTC) as ISO date, or the date of ``SOURCE_DATE_EPOCH`` for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC).date().isoformat()
    return dt.datetime.now(tz=dt.UTC).date().isoformat()


def _fingerprint_text(value: object) -> str:
    if value in (None, "", {}):
        return ""
    if isinstance(value, str):
        return value
    digest = sha256_json(value)[:16]
    details = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, int | float | str) and not isinstance(item, bool) and len(details) < 6:
                if isinstance(item, str) and ("/" in item or "\\" in item):
                    continue
                details.append(f"{key}={item}")
    return f"sha256:{digest}" + (f" ({', '.join(details)})" if details else "")


PATH_WORDS: tuple[str, ...] = ("path", "dir", "root", "file", "scans", "labels", "manifest", "splits", "lesions",
                               "masks", "pretrained")


def _flatten_settings(node: object, prefix: str, settings: dict[str, str], left_out: list[str]) -> None:
    """Every setting under ``node`` as ``{dotted key: text}``; paths go to ``left_out`` (they name local folders)."""
    if isinstance(node, Mapping):
        if not node and prefix:
            settings[prefix] = "{}"
        for key, value in node.items():
            _flatten_settings(value, f"{prefix}.{key}" if prefix else str(key), settings, left_out)
        return
    if isinstance(node, list | tuple):
        if any(isinstance(item, Mapping | list | tuple) for item in node):
            for index, item in enumerate(node):
                _flatten_settings(item, f"{prefix}[{index}]", settings, left_out)
            return
        node = ", ".join(str(item) for item in node) if node else "[]"
    text = "none" if node is None else str(node)
    last = prefix.rsplit(".", 1)[-1].lower()
    if node is not None and (any(word in last for word in PATH_WORDS) or "/" in text or "\\" in text):
        left_out.append(prefix)
        return
    settings[prefix] = text


def _training_summary(run_dir: Path | None) -> tuple[dict[str, str], list[str]]:
    """Every setting of the run's resolved config.yaml as dotted keys, and the path settings left out.

    Nothing is cut: the report prints the whole resolved configuration (``auto`` values are
    resolved in the preprocessing plan, :func:`_plan_summary`); paths are named, not printed.
    """
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return {}, []
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return {"config.yaml": "unreadable"}, []
    settings: dict[str, str] = {}
    left_out: list[str] = []
    _flatten_settings(config if isinstance(config, Mapping) else {}, "", settings, left_out)
    return settings, left_out


def _plan_summary(run_info: RunInfo | None) -> tuple[dict[str, str], list[str]]:
    """The run's preprocessing plan as model.json records it (resolved spacing, input size, ...), and the
    reason for each choice; the data fingerprint the plan was made from is given separately."""
    plan = run_info.plan if run_info is not None else {}
    settings: dict[str, str] = {}
    left_out: list[str] = []
    _flatten_settings({k: v for k, v in plan.items() if k not in ("reasons", "fingerprint")}, "", settings, left_out)
    reasons = [doc_model.scrub_paths(str(reason), limit=300) for reason in plan.get("reasons") or []]
    return settings, reasons


def _model_sha256(run_dir: Path | None, run_info: RunInfo | None) -> str | None:
    """The sha256 of the run's weights (as model.json records it, else computed from model.safetensors)."""
    if run_info is not None and run_info.weights.sha256:
        return run_info.weights.sha256
    if run_dir is not None and (run_dir / MODEL_WEIGHTS).is_file():
        return sha256_file(run_dir / MODEL_WEIGHTS)
    return None


def provenance_block(
    predictions_csv: Path,
    run_dir: Path | None,
    run_info: RunInfo | None,
    report: Mapping,
    keep_identifiers: bool,
    analysis_kw: Mapping,
    date: str,
    compare_path: Path | None = None,
    manifest_path: Path | None = None,
) -> dict:
    """Everything a reader needs to trace the report back to its inputs and software.

    File and folder *names* only are recorded, never full paths (folders can be named after patients).
    The run is named by the sha256 of its weights, not by its folder: the same run reported from two
    folders (or copied elsewhere) gives the same report.json, and the hash names the model exactly.
    """
    architecture = run_info.architecture.to_json() if run_info is not None else {}
    calibration = run_info.calibration if run_info is not None else None
    fingerprint = run_info.data_fingerprint if run_info is not None else None
    training, training_paths = _training_summary(run_dir)
    plan, plan_reasons = _plan_summary(run_info)
    return {
        "report_date": date,
        "medrec_version": __version__,
        "predictions_file": predictions_csv.name,
        "predictions_sha256": sha256_file(predictions_csv),
        "compare_file": compare_path.name if compare_path is not None else None,
        "compare_sha256": sha256_file(compare_path) if compare_path is not None else None,
        "manifest": manifest_path.name if manifest_path is not None else None,
        "model_sha256": _model_sha256(run_dir, run_info),
        "model_name": architecture.get("name"),
        "architecture": doc_model.plain_text({k: v for k, v in architecture.items()
                                              if isinstance(v, int | float | str | bool)}) or None,
        "classes": (list(run_info.classes) if run_info is not None else None) or report.get("classes"),
        "positive_class": (run_info.positive_class if run_info is not None else None) or report.get("positive_label"),
        "label_mapping": (f"{mapping_text(report['label_mapping'])} (the predictions' labels matched to the run's "
                          "classes by polarity)") if report.get("label_mapping") else None,
        "reference_standard": (report.get("reference_standard") or {}).get("summary") or PREDICTIONS_REFERENCE,
        "threshold": report.get("threshold"),
        "threshold_source": report.get("threshold_source"),
        "threshold_method": report.get("threshold_method"),
        "threshold_note": (run_info.threshold.note if run_info is not None and run_info.threshold is not None
                           else None),
        "calibration": doc_model.plain_text(calibration.to_json()) if calibration is not None else None,
        "data_fingerprint": _fingerprint_text(fingerprint.to_json() if fingerprint is not None else None),
        "ci_method": analysis_kw.get("ci_method"),
        "n_boot": analysis_kw.get("n_boot"),
        "seed": analysis_kw.get("seed"),
        "identifiers": "kept (--keep-identifiers)" if keep_identifiers else
        "pseudonymised: keyed SHA-256 HMAC, key derived from the predictions file (medrec.report.pseudonym)",
        "library_versions": _versions(),
        "training_library_versions": dict(run_info.versions or {}) if run_info is not None else {},
        "training": training,
        "training_paths_left_out": training_paths,
        "plan": plan,
        "plan_reasons": plan_reasons,
        "plan_hash": run_info.plan_hash if run_info is not None else None,
    }
