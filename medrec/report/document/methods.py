"""Methods: how the numbers were obtained (the STARD / CLAIM statistical-methods items)."""

from __future__ import annotations

from collections.abc import Mapping

from medrec.report.document.model import BulletList, Section
from medrec.report.reference import PREDICTIONS_REFERENCE


def reference_sentence(report: Mapping) -> str:
    """Where the report's labels came from: a labels file given to the report, or the predictions' label column."""
    reference = report.get("reference_standard")
    if isinstance(reference, Mapping) and reference.get("method"):
        return str(reference["method"])
    return PREDICTIONS_REFERENCE


def methods_section(report: Mapping) -> Section:
    """How the numbers were obtained (the STARD / CLAIM statistical-methods items)."""
    stated = (report.get("context") or {}).get("reference_standard")
    items = [
        "Index test: the model's score; a sample is positive when its score is at least the operating threshold "
        "(multi-class: the class with the highest score).",
        f"Reference standard: {reference_sentence(report)}" + (f"; as stated for this study: {stated}" if stated
                                                                 else "") + ".",
        "Unit of analysis: the sample (one series per study); a patient-level analysis is given beside it.",
        "Samples that failed scoring or lack a reference label are excluded and counted in the cohort flow.",
    ]
    names = {"proportions": "Proportions", "auc": "AUC", "bootstrap": "Bootstrap", "calibration": "Calibration",
             "threshold_table": "Threshold table", "lesion_level": "Lesion level",
             "predictive_values": "Predictive values", "decision_curve": "Decision curve"}
    for name, sentence in (report.get("methods") or {}).items():
        items.append(f"{names.get(name, name.replace('_', ' ').capitalize())}: {sentence}.")
    return Section("methods", "Methods", [BulletList(items)])
