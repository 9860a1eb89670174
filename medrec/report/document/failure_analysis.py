"""The failure analysis section: the worst false negatives and false positives, with their pictures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medrec.report.document.formatting import fmt_value
from medrec.report.document.model import Case, Gallery, Paragraph, Section, Table


def failure_section(report: Mapping, cases: Mapping[str, Sequence[Case]]) -> Section | None:
    """The worst false negatives and false positives: a table, and a picture of each where possible."""
    if report.get("task") == "multiclass" or not isinstance(report.get("flagged"), Mapping):
        return None
    section = Section("failures", "Failure analysis")
    section.blocks.append(Paragraph(
        "The missed positives with the lowest scores and the false alarms with the highest scores. Each picture shows"
        " one slice of the sample's scan (from the manifest), chosen in this order: the slice through the centre of "
        "its annotated lesion (a lesion of the --lesions table, the largest one, circled in yellow at its radius; or "
        "a lesion mask named by the labels file, outlined in yellow where it is largest); else the slice of the "
        "model's top finding (finding_x/y/z of the predictions, a blue cross); else its saliency overlay when one was"
        " exported by 'medrec score --explain'; else the middle slice. A top finding that lies on a lesion's slice is"
        " marked there too. The note under each picture names the slice shown and what is marked; a "
        "reference-negative case has no annotated lesion. The last column lists the same patient's other analysed "
        "rows with their scores and reference labels. Identifiers are pseudonyms unless the report was made with "
        "--keep-identifiers."))
    titles = {"false_negatives": "False negatives (lowest scores first)",
              "false_positives": "False positives (highest scores first)"}

    def others_text(others: Sequence[tuple[str, float | None, str]] | None) -> str:
        if others is None:
            return "n/a"
        return "; ".join(f"{sample}: score {fmt_value(score)}, reference {reference}"
                         for sample, score, reference in others) or "none"

    for key, title in titles.items():
        items = list(cases.get(key) or [])
        if not items:
            section.blocks.append(Paragraph(f"{title}: none at the operating threshold."))
            continue
        rows = [[c.label, c.sample_id, c.patient_id, fmt_value(c.score), c.reference,
                 f"shown below: {c.picture_note}" if c.figure is not None else c.picture_note,
                 others_text(c.other_studies)] for c in items]
        section.blocks.append(Table(["Case", "Sample", "Patient", "Score", "Reference", "Picture",
                                     "Patient's other studies"], rows, caption=title))
        pictured = [c.figure for c in items if c.figure is not None]
        if pictured:
            section.blocks.append(Gallery(pictured))
    return section
