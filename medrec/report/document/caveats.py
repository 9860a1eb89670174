"""The limitations: what the numbers cannot support, each statement triggered by a fact in the report."""

from __future__ import annotations

from collections.abc import Mapping

from medrec.report.document.formatting import fmt_count, fmt_value, is_number
from medrec.report.document.subgroups import subgroup_rows
from medrec.report.document.threshold import threshold_kind


def limitations(report: Mapping) -> list[str]:
    """Statements about what the numbers cannot support, each triggered by a fact in ``report``."""
    notes: list[str] = []
    kind = threshold_kind(report)
    if kind == "exploratory":
        notes.append("Threshold chosen on the test data: exploratory. Sensitivity, specificity and predictive "
                     "values at this threshold are optimistically biased and need confirmation on independent data.")
    elif kind == "user-given":
        notes.append("The threshold was given by the user; the report cannot tell whether it was fixed before the "
                     "test data were seen.")
    provenance = report.get("provenance") or {}
    training = provenance.get("training") or {}
    if training.get("task") == "anomaly":
        notes.append("An anomaly detector trained on normal studies only (no positive seen in training): it flags "
                     "what departs from the studies it learned, whatever the finding; it cannot tell one kind of "
                     "finding from another, and it also flags normal variants, devices and artefacts unlike its "
                     "training studies.")
        if training.get("data.unlabelled") == "normal":
            notes.append("Studies without a label were assumed normal (data.unlabelled: normal; the run's "
                         "manifest.csv marks them in label_assumed): they trained the model, and in the test set "
                         "a finding among them counts as a false positive.")
        if kind == "validation" and provenance.get("threshold_note"):
            notes.append(f"Threshold: {provenance['threshold_note']}.")
    n_patients = report.get("n_patients")
    if is_number(n_patients) and n_patients < 100:
        notes.append(f"Fewer than 100 patients (n={int(n_patients)}): wide confidence intervals.")
    if report.get("task") != "multiclass":
        for key, name in (("n_positive", "reference-positive"), ("n_negative", "reference-negative")):
            value = report.get(key)
            metric = "sensitivity" if key == "n_positive" else "specificity"
            if is_number(value) and value == 0:
                notes.append(f"No {name} sample: {metric} cannot be measured.")
            elif is_number(value) and value < 30:
                notes.append(f"Only {int(value)} {name} samples: {metric} is imprecise.")
    prevalence = report.get("prevalence")
    adjusted = report.get("prevalence_adjusted") or {}
    stated = adjusted.get("prevalence")
    if is_number(prevalence) and is_number(stated):
        if abs(prevalence - stated) > 0.02:
            relation = "higher" if prevalence > stated else "lower"
            notes.append(f"Prevalence in the test set {fmt_value(prevalence, 'pct')} is {relation} than the stated "
                         f"clinical prevalence {fmt_value(stated, 'pct')}: PPV and NPV adjusted (see the "
                         "prevalence-adjusted table).")
    elif is_number(prevalence) and prevalence >= 0.2:
        notes.append(f"Prevalence in the test set is {fmt_value(prevalence, 'pct')}; PPV and NPV depend on prevalence "
                     "and will differ in a clinical population (give --prevalence to adjust them).")
    for column, groups in (report.get("subgroups") or {}).items():
        for group in subgroup_rows(groups):
            if group.get("small"):
                detail = ""
                if is_number(group.get("n_positive")) and is_number(group.get("n_negative")):
                    detail = f", {int(group['n_positive'])} positive / {int(group['n_negative'])} negative"
                notes.append(f"Subgroup {column} = {group.get('group')} has n={fmt_count(group.get('n'))}{detail}: "
                             "too small to conclude.")
    ece = (report.get("metrics") or {}).get("ece") or {}
    if is_number(ece.get("value")) and ece["value"] > 0.1:
        notes.append(f"Expected calibration error {fmt_value(ece['value'])}: scores should not be read as "
                     "probabilities without recalibration.")
    reasons = report.get("excluded_reasons") or {}
    errors = reasons.get("error")
    if is_number(errors) and errors:
        notes.append(f"{int(errors)} sample{' was' if errors == 1 else 's were'} not scored (scoring error) and "
                     "excluded from the metrics; if the failures are not random the metrics may be biased.")
    unlabelled = reasons.get("no label")
    if is_number(unlabelled) and unlabelled:
        notes.append(f"{int(unlabelled)} scored sample{' has' if unlabelled == 1 else 's have'} no reference label "
                     "and are excluded.")
    if is_number(report.get("n_patients")) and is_number(report.get("n_samples")) \
            and report["n_patients"] < report["n_samples"]:
        notes.append("Some patients contribute several samples; the sample-level intervals account for this "
                     "(design-effect-adjusted proportions, Obuchowski's clustered AUC variance, a patient-clustered "
                     "bootstrap), and a patient-level analysis is given beside them.")
    lesion = report.get("lesion_level") or {}
    if lesion:
        n_lesions = lesion.get("n_lesions")
        if is_number(n_lesions) and n_lesions < 30:
            notes.append(f"Only {int(n_lesions)} annotated lesions in reference-positive studies: lesion-level "
                         "sensitivities and the CPM are imprecise.")
        left_out = lesion.get("n_positive_without_lesions")
        if is_number(left_out) and left_out:
            one = int(left_out) == 1
            notes.append(f"{int(left_out)} reference-positive stud{'y has' if one else 'ies have'} no annotated "
                         f"lesion and {'is' if one else 'are'} left out of the lesion-level results.")
        notes.append("Finding probabilities are uncalibrated per-voxel values; the FROC thresholds are not "
                     "comparable with the study-level operating threshold.")
        voxel = lesion.get("voxel_ap") or {}
        missing = voxel.get("studies_without_map")
        if is_number(voxel.get("value")) and is_number(missing) and missing:
            notes.append(f"The voxel-level average precision leaves out {int(missing)} analysed "
                         f"stud{'y' if int(missing) == 1 else 'ies'} without a finding map; it describes the others "
                         "only.")
    if (report.get("data_origin") or {}).get("synthetic"):
        notes.append("The scans are synthetic phantoms generated by 'medrec synth': these results test the software, "
                     "not the model's clinical performance.")
    context = report.get("context") or {}
    source = f" ({context['data_source']})" if context.get("data_source") else ""
    sites = f" from {context['sites']}" if context.get("sites") else ""
    notes.append(f"Retrospective analysis of one data set{source}{sites}; performance at another site, on other "
                 "scanners or in another population must be confirmed before clinical use.")
    return notes
