"""Provenance: the model, data, settings and library versions behind the report."""

from __future__ import annotations

from collections.abc import Mapping

from medrec.report.document.model import BulletList, Paragraph, Section, Table

PROVENANCE_LABELS: dict[str, str] = {
    "report_date": "Report date",
    "medrec_version": "medrec version",
    "predictions_file": "Predictions file",
    "predictions_sha256": "Predictions SHA-256",
    "compare_file": "Comparison predictions file",
    "compare_sha256": "Comparison predictions SHA-256",
    "model_sha256": "Model weights SHA-256",
    "model_name": "Model",
    "architecture": "Architecture",
    "classes": "Classes",
    "positive_class": "Positive class",
    "label_mapping": "Label mapping",
    "reference_standard": "Reference standard",
    "threshold": "Operating threshold",
    "threshold_source": "Threshold source",
    "calibration": "Calibration",
    "data_fingerprint": "Data fingerprint",
    "manifest": "Manifest",
    "ci_method": "CI method (proportions)",
    "n_boot": "Bootstrap replicates",
    "seed": "Seed",
    "identifiers": "Identifiers",
}


def provenance_section(provenance: Mapping) -> Section:
    section = Section("provenance", "Provenance")
    rows = [[label, plain_text(provenance[key])] for key, label in PROVENANCE_LABELS.items()
            if provenance.get(key) not in (None, "", [], {})]
    section.blocks.append(Table(["Item", "Value"], rows, caption="Model, data and report"))
    training = provenance.get("training") or {}
    if training:
        left_out = provenance.get("training_paths_left_out") or []
        section.blocks.append(Table(["Training setting", "Value"],
                                    [[k, plain_text(v)] for k, v in training.items()],
                                    caption=f"Training configuration: all {len(training)} settings of the run's "
                                            "resolved config.yaml",
                                    note=(f"Paths are not printed (folder names can identify patients): "
                                          f"{', '.join(left_out)}." if left_out else "")))
    plan = provenance.get("plan") or {}
    if plan:
        hashed = f" (plan hash {str(provenance['plan_hash'])[:12]})" if provenance.get("plan_hash") else ""
        section.blocks.append(Table(["Plan setting", "Value"], [[k, plain_text(v)] for k, v in plan.items()],
                                    caption=f"Preprocessing plan as trained{hashed}: 'auto' settings resolved "
                                            "(model.json)"))
        if provenance.get("plan_reasons"):
            section.blocks.append(Paragraph("Why the plan chose these settings:"))
            section.blocks.append(BulletList([str(reason) for reason in provenance["plan_reasons"]]))
    versions = provenance.get("library_versions") or {}
    trained = provenance.get("training_library_versions") or {}
    if versions:
        rows = [[name, str(version), str(trained.get(name, ""))] for name, version in versions.items()]
        section.blocks.append(Table(["Library", "Version (report)", "Version (training)"], rows,
                                    caption="Library versions"))
    return section


def plain_text(value: object) -> str:
    """A value as one line of text (lists comma-separated, mappings as ``key: value; ...``)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ", ".join(plain_text(v) for v in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {plain_text(v)}" for k, v in value.items())
    return str(value)
