"""Cohort and flow (STARD 2015 items 19-20): the participant flow, each stage in its own unit, worded
for the summary, the flow table and the flow diagram, and the cohort section that shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from medrec.report.document.formatting import fmt_count, fmt_value, is_number, scrub_paths
from medrec.report.document.model import Callout, Figure, Paragraph, Section, Table

# the predictions' level -> the unit its rows count (singular, plural)
LEVEL_UNITS: dict[str, tuple[str, str]] = {"series": ("series", "series"), "study": ("study", "studies"),
                                           "patient": ("patient", "patients")}
SPLIT_NAMES: dict[str, str] = {"train": "training", "val": "validation", "test": "test", "": "not in splits.csv"}


@dataclass
class FlowStage:
    """One stage of the participant flow and what left after it, each count with its unit.

    ``exclusions`` are ``(reason, n, unit, note)``: the units that left between this stage and the next.
    """

    label: str
    n: object
    unit: str
    note: str = ""
    exclusions: list[tuple[str, object, str, str]] = field(default_factory=list)


def _unit(n: object, unit: tuple[str, str]) -> str:
    return unit[0] if is_number(n) and int(n) == 1 else unit[1]


def flow_stages(report: Mapping) -> list[FlowStage]:
    """The STARD 2015 participant flow, each stage in its own unit: files -> readable files -> series ->
    series passing quality control -> selected series -> studies -> patients -> split -> scored -> analysed.

    The index stages come from manifest.csv and qc.csv (``cohort.index``); without them the flow
    starts at the manifest, or at the predictions.
    """
    cohort = report.get("cohort") or {}
    index = cohort.get("index") or {}
    level = LEVEL_UNITS.get(str(cohort.get("level") or "series"), LEVEL_UNITS["series"])
    files, series, studies, patients = ("file", "files"), ("series", "series"), ("study", "studies"), \
        ("patient", "patients")
    stages: list[FlowStage] = []
    if index:
        if is_number(index.get("n_files")):
            stages.append(FlowStage("Files found by indexing", index["n_files"], _unit(index["n_files"], files),
                                    exclusions=[(r["reason"], r["n_files"], _unit(r["n_files"], files), "")
                                                for r in index.get("file_exclusions") or []]))
            stages.append(FlowStage("Readable DICOM / NIfTI files", index.get("n_readable"),
                                    _unit(index.get("n_readable"), files),
                                    f"DICOM {fmt_count(index.get('n_files_dicom'))}, NIfTI "
                                    f"{fmt_count(index.get('n_files_nifti'))}"))
        elif index.get("file_exclusions"):
            stages.append(FlowStage("Files left out by indexing", sum(r["n_files"] for r in index["file_exclusions"]),
                                    "files", "the manifest does not list its DICOM files: total not known",
                                    [(r["reason"], r["n_files"], _unit(r["n_files"], files), "")
                                     for r in index["file_exclusions"]]))

        def series_exclusions(rows: Sequence[Mapping], prefix: str = "") -> list[tuple[str, object, str, str]]:
            return [(f"{prefix}{r['reason']}", r["n_series"], _unit(r["n_series"], series),
                     f"{fmt_count(r['n_files'])} file{'' if r['n_files'] == 1 else 's'}") for r in rows]

        stages.append(FlowStage("Series (DICOM series and NIfTI volumes)", index.get("n_series"), "series",
                                exclusions=series_exclusions(index.get("series_exclusions") or [])))
        stages.append(FlowStage("Series eligible and passing quality control", index.get("n_series_passing"),
                                "series", exclusions=series_exclusions(
                                    index.get("not_selected") or [], "not chosen (not a QC failure): ")))
        one_per_study = index.get("n_selected_per_study") == 1
        stages.append(FlowStage("Selected series" + (" (one per study)" if one_per_study else ""),
                                index.get("n_selected"), "series",
                                exclusions=series_exclusions(index.get("after_selection") or [])))
        if index.get("n_selected") != index.get("n_manifest"):
            stages.append(FlowStage("Series in the manifest", index.get("n_manifest"), "series"))
    elif is_number(cohort.get("n_manifest")):
        stages.append(FlowStage("Series in the manifest", cohort["n_manifest"], "series",
                                "no qc.csv: the flow before indexing is not known"))
    if is_number(cohort.get("n_manifest")):
        n_studies = index.get("n_studies", cohort.get("n_manifest_studies"))
        n_patients = index.get("n_patients", cohort.get("n_manifest_patients"))
        if is_number(n_studies):
            stages.append(FlowStage("Studies", n_studies, _unit(n_studies, studies)))
        if is_number(n_patients):
            stages.append(FlowStage("Patients", n_patients, _unit(n_patients, patients)))
    splits = cohort.get("splits") or []
    not_scored = cohort.get("n_not_scored")
    by_split = cohort.get("not_scored_by_split") or {}
    left = [(f"not scored: {SPLIT_NAMES.get(name, name)} split" if name else "not scored: not in splits.csv", n,
             _unit(n, series), "") for name, n in by_split.items()]
    if not left and is_number(not_scored) and not_scored:
        left = [("not in the predictions (not scored)", not_scored, _unit(not_scored, series), "")]
    if splits:
        detail = "; ".join(f"{SPLIT_NAMES.get(str(s.get('split')), s.get('split'))} {fmt_count(s.get('n_samples'))} "
                           f"({fmt_count(s.get('n_patients'))} patients)" for s in splits)
        total = sum(int(s.get("n_samples") or 0) for s in splits)
        stages.append(FlowStage("Split by patient (splits.csv)", total, _unit(total, series), detail, left))
    elif left and stages:
        stages[-1].exclusions.extend(left)
    n_rows = report.get("n_rows", cohort.get("n_predictions"))
    in_run = cohort.get("n_in_run_splits") or {}
    exclusions = []
    for reason, count in (report.get("excluded_reasons") or {}).items():
        note = ""
        if reason == "error" and cohort.get("error_reasons"):
            reason, note = "scoring error", "reasons below"
        elif in_run and "training / validation" in reason:
            note = ", ".join(f"{fmt_count(n)} {SPLIT_NAMES.get(name, name)}" for name, n in in_run.items())
        exclusions.append((reason, count, _unit(count, level), note))
    stages.append(FlowStage("Scored (rows of the predictions file)", n_rows, _unit(n_rows, level),
                            exclusions=exclusions))
    n_studies = cohort.get("n_studies")
    stages.append(FlowStage("Analysed", report.get("n_samples"), _unit(report.get("n_samples"), level),
                            f"{fmt_count(report.get('n_patients'))} patients"
                            + (f", {fmt_count(n_studies)} studies" if is_number(n_studies) else "")))
    return stages


def flow_sentence(report: Mapping) -> str:
    """The participant flow in one sentence for the summary, every count with its unit."""
    stages = flow_stages(report)
    if len(stages) <= 2:
        return ""
    by_label = {stage.label.split(" (")[0]: stage for stage in stages}
    parts = []
    for label in ("Files found by indexing", "Series", "Series eligible and passing quality control",
                  "Selected series", "Series in the manifest", "Studies", "Patients", "Scored", "Analysed"):
        stage = by_label.get(label)
        if stage is None or not is_number(stage.n):
            continue
        what = {"Files found by indexing": "found", "Series eligible and passing quality control": "passing QC",
                "Selected series": "selected", "Series in the manifest": "in the manifest", "Scored": "scored",
                "Analysed": "analysed"}.get(label, "")
        parts.append(f"{fmt_count(stage.n)} {stage.unit}" + (f" {what}" if what else ""))
    return "Flow: " + " \u2192 ".join(parts) + " (see the cohort flow)."


def flow_outcomes(report: Mapping) -> list[tuple[str, object, str, str]]:
    """The index test's results by reference standard (STARD's last boxes): ``(reference, n, unit, results)``."""
    confusion = report.get("confusion_matrix")
    if report.get("task") == "multiclass" or not isinstance(confusion, Mapping):
        return []
    level = LEVEL_UNITS.get(str((report.get("cohort") or {}).get("level") or "series"), LEVEL_UNITS["series"])
    tp, fp, tn, fn = (int(confusion.get(k, 0) or 0) for k in ("tp", "fp", "tn", "fn"))
    classes = report.get("classes") or ["", ""]
    positive = f" ({classes[-1]})" if len(classes) == 2 else ""
    negative = f" ({classes[0]})" if len(classes) == 2 else ""
    return [
        (f"Reference positive{positive}", tp + fn, _unit(tp + fn, level),
         f"index test positive {tp} (TP), negative {fn} (FN)"),
        (f"Reference negative{negative}", fp + tn, _unit(fp + tn, level),
         f"index test positive {fp} (FP), negative {tn} (TN)"),
    ]


def flow_figure_input(report: Mapping) -> tuple[list[dict], list[dict]]:
    """The stages and outcome boxes of :func:`medrec.report.figures.flow_diagram`, worded as the flow table."""
    stages: list[dict] = []
    for stage in flow_stages(report):
        count = f"{fmt_count(stage.n)} {stage.unit}"
        if stage.label in ("Studies", "Patients") and stages:
            # the selected series, their studies and their patients: one set, counted in three units
            stages[-1]["count"] += f" \u00b7 {count}"
            continue
        stages.append({"title": stage.label, "count": count, "note": stage.note,
                       "exclusions": [f"{reason}: {fmt_count(n)} {unit}" + (f" ({note})" if note else "")
                                      for reason, n, unit, note in stage.exclusions]})
    outcomes = [{"title": f"{reference}: {fmt_count(n)} {unit}", "lines": [results]}
                for reference, n, unit, results in flow_outcomes(report)]
    return stages, outcomes


FLOW_CAPTION = ("STARD flow diagram: each box counts its own unit (files, series, studies, patients, prediction "
                "rows); exclusions to the right, with their reasons; at the bottom the index test's results by "
                "reference standard at the operating threshold.")


def cohort_section(report: Mapping, figures: Mapping[str, bytes] | None = None) -> Section:
    """Cohort and flow (STARD 2015 items 19-20): who was eligible, who left and why, who was analysed."""
    cohort = report.get("cohort") or {}
    section = Section("cohort", "Cohort and flow")
    if figures and "flow.png" in figures:
        section.blocks.append(Figure("flow.png", figures["flow.png"], FLOW_CAPTION, width=0.72))
    flow: list[list[str]] = []
    strong, muted = set(), set()
    for stage in flow_stages(report):
        if stage.label == "Analysed":
            strong.add(len(flow))
        flow.append([stage.label, fmt_count(stage.n), stage.unit, stage.note])
        for reason, n, unit, note in stage.exclusions:
            muted.add(len(flow))
            flow.append([f"\u2192 Excluded: {scrub_paths(reason)}", fmt_count(n), unit, note])
    for reference, n, unit, results in flow_outcomes(report):
        flow.append([reference, fmt_count(n), unit, results])
    section.blocks.append(Table(["Stage", "n", "Unit", "Note"], flow, caption="Participant flow (STARD 2015)",
                                strong_rows=frozenset(strong), muted_rows=frozenset(muted),
                                note="Grey rows leave the flow after the stage above them. A NIfTI volume counts as "
                                     "one series; 'not chosen' series passed quality control but another series of "
                                     "the same study was used."))
    if not (cohort.get("index") or {}):
        reasons = [[scrub_paths(r), fmt_count(n)] for r, n in (cohort.get("qc_reasons") or {}).items()]
        if reasons:
            section.blocks.append(Table(["Exclusion reason (qc.csv)", "Files"], reasons,
                                        caption="Exclusions at indexing (files)"))
    errors = [[scrub_paths(r), fmt_count(n)] for r, n in (cohort.get("error_reasons") or {}).items()]
    if errors:
        section.blocks.append(Table(["Scoring error (file paths removed)", "n"], errors,
                                    caption="Samples that could not be scored"))
    if report.get("task") == "multiclass":
        counts = ", ".join(f"{name}: {fmt_count(n)}" for name, n in (report.get("n_per_class") or {}).items())
        text = f"Analysed set: {fmt_count(report.get('n_samples'))} samples from " \
               f"{fmt_count(report.get('n_patients'))} patients; per class {counts}."
    else:
        unit = LEVEL_UNITS.get(str(cohort.get("level") or "series"), LEVEL_UNITS["series"])[1]
        text = (f"Analysed set: {fmt_count(report.get('n_samples'))} samples ({unit}) from "
                f"{fmt_count(report.get('n_patients'))} patients; {fmt_count(report.get('n_positive'))} "
                f"reference-positive and {fmt_count(report.get('n_negative'))} reference-negative "
                f"(prevalence {fmt_value(report.get('prevalence'), 'pct')}).")
        if report.get("positive_label"):
            text += f" Positive class: label '{report['positive_label']}'."
        mapping = report.get("label_mapping") or {}
        if mapping:
            pairs = ", ".join(f"'{label}' as '{name}'" for label, name in sorted(mapping.items(), key=lambda i: i[1]))
            text += (f" The reference labels are not the run's class names; they were matched to the run's classes "
                     f"by polarity: {pairs}.")
    section.blocks.append(Paragraph(text))
    splits = cohort.get("splits") or []
    if splits:
        rows = [[str(s.get("split")), fmt_count(s.get("n_samples")), fmt_count(s.get("n_patients")),
                 fmt_count(s.get("n_studies")), fmt_count(s.get("n_positive")),
                 fmt_value(s.get("prevalence"), "pct")] for s in splits]
        section.blocks.append(Table(["Split", "Samples", "Patients", "Studies", "Positive", "Prevalence"], rows,
                                    caption="Patients, studies and prevalence per split (splits.csv and manifest)"))
    for warning in report.get("warnings") or []:
        section.blocks.append(Callout(scrub_paths(warning, limit=300), "note"))
    return section
