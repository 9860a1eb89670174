"""Lesion-level results of a finding-map run: top-finding hit rate, FROC and CPM, sensitivity by size
and contrast, the lesion table's accounting, and the sentence for the methods list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from medrec.report.document.curves import FIGURE_CAPTIONS
from medrec.report.document.formatting import (
    _count_cell,
    fmt_ci,
    fmt_count,
    fmt_mm,
    fmt_threshold,
    fmt_value,
    is_number,
)
from medrec.report.document.model import Figure, Paragraph, Section, Table


def _fmt_probability_threshold(value: object) -> str:
    if not is_number(value):
        return "n/a"
    return fmt_threshold(value) if math.isfinite(float(value)) else "above all"


def lesion_method_sentence(lesion: Mapping) -> str:
    """How the lesion-level numbers were obtained (one sentence for the methods list)."""
    voxel = ""
    if is_number((lesion.get("voxel_ap") or {}).get("value")):
        voxel = ("; voxel-level average precision: every voxel of the analysed studies' finding maps pooled (score: "
                 "the map's probability; label: inside a lesion sphere of the lesion table), AP as scikit-learn "
                 "defines it (step-wise sum of recall increments times precision, not interpolated)")
    return (
        f"a finding hits a lesion when its distance to the lesion's centre is at most the lesion's radius plus "
        f"{fmt_mm(lesion.get('tolerance_mm'))} ({lesion.get('tolerance_source') or 'tolerance'}); hit rate: "
        "true-positive studies whose top finding hits a lesion, over those with an annotated lesion; FROC: lesion "
        "sensitivity (lesions of reference-positive studies hit by a candidate finding at or above the probability "
        "threshold) against mean candidates hitting no lesion per study, read at 1/8 to 8 false positives per "
        "study at the lowest threshold whose rate does not exceed the target, CPM = their mean; positive studies "
        f"without an annotated lesion are left out{voxel}"
    )


def voxel_ap_row(voxel: Mapping) -> list[str]:
    """The table row of the voxel-level average precision (n/a, with the reason in the note, when not computed)."""
    computed = is_number(voxel.get("value"))
    count = (f"{fmt_count(voxel.get('lesion_voxels'))} of {fmt_count(voxel.get('voxels'))} voxels in lesions"
             if computed else "")
    return ["Voxel-level average precision (all voxels pooled)", fmt_value(voxel.get("value")), "", count,
            "no CI (voxels are not independent)" if computed else "not computed"]


def voxel_ap_note(voxel: Mapping) -> str:
    """What the voxel-level AP pools and leaves out, or why it was not computed."""
    if not is_number(voxel.get("value")):
        return f"Voxel-level average precision was not computed: {voxel.get('reason') or 'no reason recorded'}."
    left = [(voxel.get("studies_without_map"), "without a finding map"),
            (voxel.get("studies_with_unreadable_map"), "with an unreadable finding map"),
            (voxel.get("positive_without_lesions"), "positive without an annotated lesion"),
            (voxel.get("positive_lesions_off_map"), "positive with their lesions on none of their maps' voxels")]
    out = "; ".join(f"{int(n)} {text}" for n, text in left if is_number(n) and n)
    folders = ", ".join(str(name) for name in voxel.get("folders") or []) or "n/a"
    return (f"Voxel-level average precision pools every voxel of the finding maps ({voxel.get('source')}, folder "
            f"{folders}) of {fmt_count(voxel.get('studies'))} studies ({fmt_count(voxel.get('positive_studies'))} "
            f"reference-positive, {fmt_count(voxel.get('maps'))} maps); score: the map's probability, label: inside a "
            f"lesion sphere; AP as scikit-learn's average_precision_score."
            + (f" Left out: {out}." if out else "")
            + (f" Unreadable: {'; '.join(str(m) for m in voxel['unreadable_maps'])}." if voxel.get("unreadable_maps")
               else ""))


def _band_table(rows: Sequence[Mapping], first: str, caption: str) -> Table:
    body = [[str(r.get("band")), fmt_count(r.get("n_lesions")), fmt_count(r.get("n_detected")),
             fmt_value(r.get("value"), "pct"), fmt_ci(r.get("ci95"), "pct")] for r in rows]
    return Table([first, "Lesions", "Detected", "Sensitivity", "95% CI"], body, caption=caption)


def lesion_section(report: Mapping, figures: Mapping[str, bytes]) -> Section | None:
    """Lesion-level results of a finding-map run: top-finding hit rate, FROC and CPM, sensitivity by size."""
    lesion = report.get("lesion_level")
    if not lesion:
        return None
    section = Section("lesions", "Lesion-level results")
    candidates = ""
    if is_number(lesion.get("candidate_min_probability")):
        candidates = (f" (regions of the finding map above probability "
                      f"{fmt_threshold(lesion['candidate_min_probability'])}, at most "
                      f"{fmt_count(lesion.get('candidate_max_per_sample'))} per sample)")
    section.blocks.append(Paragraph(
        f"Findings of the model against the lesion table {lesion.get('lesion_table')}: "
        f"{fmt_count(lesion.get('n_lesions'))} lesions in the {fmt_count(lesion.get('n_positive_studies'))} "
        f"reference-positive studies, among {fmt_count(lesion.get('n_studies'))} analysed studies. Tolerance: a "
        f"finding hits a lesion when its distance to the lesion's centre is at most the lesion's radius plus "
        f"{fmt_mm(lesion.get('tolerance_mm'))} ({lesion.get('tolerance_source')}). Candidate findings come "
        f"from {lesion.get('findings_file')}{candidates}; their probabilities are uncalibrated per-voxel values."))
    hit_rate = lesion.get("hit_rate") or {}
    rows = [["Top finding inside a lesion (true-positive studies)", fmt_value(hit_rate.get("value"), "pct"),
             fmt_ci(hit_rate.get("ci95"), "pct"), _count_cell(hit_rate), str(hit_rate.get("method", ""))]]
    note = (f"{fmt_count(hit_rate.get('n_true_positive_studies'))} true-positive studies; "
            f"{fmt_count(hit_rate.get('n_without_lesions'))} without an annotated lesion and "
            f"{fmt_count(hit_rate.get('n_without_location'))} without a finding location are not counted.")
    caption = f"Hit rate of the top finding at the operating threshold {fmt_threshold(report.get('threshold'))}"
    voxel = lesion.get("voxel_ap")
    if voxel:
        rows.append(voxel_ap_row(voxel))
        note = f"{note} {voxel_ap_note(voxel)}"
        caption += ", and voxel-level average precision"
    section.blocks.append(Table(["Measure", "Value", "95% CI", "Count", "CI method"], rows, caption=caption,
                                note=note))
    froc = lesion.get("froc") or {}
    rows = [[f"{point.get('fp_per_study_target'):g}" if is_number(point.get("fp_per_study_target")) else "n/a",
             fmt_value(point.get("sensitivity"), "pct"), fmt_count(point.get("n_detected")),
             _fmt_probability_threshold(point.get("threshold")), fmt_value(point.get("fp_per_study"))]
            for point in froc.get("points") or []]
    rows.append(["CPM (mean of the seven)", fmt_value(froc.get("cpm")), "", "", ""])
    section.blocks.append(Table(
        ["FP per study", "Lesion sensitivity", "Lesions detected", "Probability threshold", "FP per study (actual)"],
        rows, strong_rows=frozenset({len(rows) - 1}),
        caption=f"FROC points ({fmt_count(lesion.get('n_lesions'))} lesions, "
                f"{fmt_count(lesion.get('n_froc_studies'))} studies, {fmt_count(lesion.get('n_candidates'))} "
                f"candidates of which {fmt_count(lesion.get('n_false_positive_candidates'))} hit no lesion)",
        note=f"The curve ends at {fmt_value(froc.get('max_fp_per_study'))} FP per study (all candidates); higher "
             "targets take its last sensitivity."))
    if "froc.png" in figures:
        caption, width = FIGURE_CAPTIONS["froc.png"]
        section.blocks.append(Figure("froc.png", figures["froc.png"], caption, width=width))
    operating = lesion.get("operating_point") or {}
    at = (f"at the FROC point of {operating.get('fp_per_study_target'):g} FP per study (probability threshold "
          f"{_fmt_probability_threshold(operating.get('threshold'))}, actual "
          f"{fmt_value(operating.get('fp_per_study'))} FP per study)" if is_number(operating.get("fp_per_study_target"))
          else "")
    overall = lesion.get("lesion_sensitivity") or {}
    diameter_rows = [*(lesion.get("by_diameter") or []),
                     {"band": "all", "n_lesions": overall.get("denominator"), "n_detected": overall.get("numerator"),
                      **overall}]
    section.blocks.append(_band_table(diameter_rows, "Diameter", f"Lesion sensitivity by diameter {at}"))
    if lesion.get("by_contrast"):
        missing = lesion.get("n_lesions_without_contrast")
        table = _band_table(lesion["by_contrast"], "Contrast tertile", f"Lesion sensitivity by contrast {at}")
        if is_number(missing) and missing:
            table.note = f"{int(missing)} lesion(s) without a contrast value are not in this table."
        section.blocks.append(table)
    counts = lesion.get("lesion_rows") or {}
    accounting = [
        ["Rows of the lesion table", fmt_count(counts.get("total"))],
        ["Analysed (reference-positive studies)", fmt_count(counts.get("analysed"))],
        ["Ignored: study not in the predictions", fmt_count(counts.get("not_in_predictions"))],
        ["Ignored: reference-negative study", fmt_count(counts.get("in_negative_studies"))],
        ["Ignored: study excluded from the analysis", fmt_count(counts.get("in_studies_not_analysed"))],
        ["Ignored: unusable row (no UID, position or diameter)", fmt_count(counts.get("bad"))],
    ]
    section.blocks.append(Table(["Lesion rows", "n"], accounting, caption="Lesion table accounting",
                                note=f"{fmt_count(lesion.get('n_positive_without_lesions'))} reference-positive "
                                     "studies have no annotated lesion and are left out of the lesion-level results."))
    return section
