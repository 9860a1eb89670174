"""The report as a document: sections of paragraphs, tables and figures, built from the analysis.

The HTML and the PDF renderers both walk the same :class:`Document`, so the two files say the
same thing in the same order. All wording that depends on the numbers (the summary, the
cohort flow, the limitations) is produced here, from the report dict, and nowhere else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from medrec.report.reference import PREDICTIONS_REFERENCE

# ------------------------------------------------------------------------------------------------
# Document model
# ------------------------------------------------------------------------------------------------

# A number as this module formats it: 12, 1,234, 0.875, 87.5%, +3.1 points, <0.001, 14/16, 80.0-92.0%,
# optionally followed by "(95% CI ...)".
_NUMERIC_CELL = re.compile(
    r"^(?:[<>]?[-+\u2212]?\d[\d,]*(?:\.\d+)?(?:%| points)?(?: \([^)]*\))?"
    r"|\d[\d.]*\u2013\d[\d.]*%?|\d+ ?/ ?\d+)$"
)


@dataclass
class Paragraph:
    text: str
    kind: str = "paragraph"


@dataclass
class Callout:
    """A boxed message; ``level`` is ``warning`` (exploratory threshold, leakage) or ``note``."""

    text: str
    level: str = "note"
    kind: str = "callout"


@dataclass
class BulletList:
    items: list[str]
    kind: str = "list"


@dataclass
class Table:
    """A table of already formatted strings; the first column is a row header."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    note: str = ""
    strong_rows: frozenset[int] = frozenset()  # rows drawn bold (totals, the analysed set)
    muted_rows: frozenset[int] = frozenset()  # rows drawn grey (small subgroups)
    kind: str = "table"

    @property
    def numeric_columns(self) -> list[bool]:
        """Per column: True when every filled cell is a number (such columns are right-aligned)."""
        flags = []
        for index in range(len(self.columns)):
            cells = [row[index] for row in self.rows if index < len(row) and row[index] not in ("", "n/a")]
            flags.append(index > 0 and bool(cells) and all(_NUMERIC_CELL.match(c) for c in cells))
        return flags


@dataclass
class Figure:
    """One PNG; ``name`` is its file name under ``figures/``; ``width`` is a fraction of the page."""

    name: str
    png: bytes
    caption: str
    width: float = 0.75
    kind: str = "figure"


@dataclass
class FigureRow:
    """Figures of equal rank side by side (the ROC and precision-recall curves)."""

    figures: list[Figure]
    kind: str = "figrow"


@dataclass
class Gallery:
    """Small figures side by side (the failure-analysis thumbnails)."""

    figures: list[Figure]
    caption: str = ""
    kind: str = "gallery"


@dataclass
class Case:
    """A flagged case of the failure analysis (identifiers already pseudonymised when required)."""

    label: str  # "FN 1", "FP 2"
    sample_id: str
    patient_id: str
    score: float | None
    reference: str
    picture_note: str  # which slice the picture shows and what is marked on it, or why there is none
    figure: Figure | None = None
    # the patient's other analysed rows: (sample id, score, reference label); None when not looked up
    other_studies: tuple[tuple[str, float | None, str], ...] | None = None


Block = Paragraph | Callout | BulletList | Table | Figure | FigureRow | Gallery


@dataclass
class Section:
    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    date: str
    summary: str
    banner: str | None
    sections: list[Section]
    footer: str
    key_figures: list[tuple[str, str, str]] = field(default_factory=list)  # (name, value, 95% CI)
    alert: str | None = None  # the red banner above everything else (synthetic data)

    def texts(self) -> Iterable[str]:
        """Every string the renderers will print (used to check for identifiers before writing)."""
        yield from (self.title, self.date, self.summary, self.banner or "", self.alert or "", self.footer)
        for figure in self.key_figures:
            yield from figure
        for section in self.sections:
            yield section.title
            for block in section.blocks:
                yield from _block_texts(block)


def _block_texts(block: Block) -> Iterable[str]:
    if isinstance(block, Paragraph | Callout):
        yield block.text
    elif isinstance(block, BulletList):
        yield from block.items
    elif isinstance(block, Table):
        yield from (block.caption, block.note, *block.columns)
        for row in block.rows:
            yield from row
    elif isinstance(block, Figure):
        yield from (block.name, block.caption)
    elif isinstance(block, Gallery | FigureRow):
        yield getattr(block, "caption", "")
        for figure in block.figures:
            yield from (figure.name, figure.caption)


# ------------------------------------------------------------------------------------------------
# Number formatting (one place, so the HTML, the PDF and the console agree)
# ------------------------------------------------------------------------------------------------

# name -> (display name, "pct" for proportions shown as percentages, "dec" for plain decimals)
METRICS: dict[str, tuple[str, str]] = {
    "sensitivity": ("Sensitivity (recall)", "pct"),
    "specificity": ("Specificity", "pct"),
    "ppv": ("PPV (precision)", "pct"),
    "npv": ("NPV", "pct"),
    "accuracy": ("Accuracy", "pct"),
    "balanced_accuracy": ("Balanced accuracy", "pct"),
    "f1": ("F1 score", "dec"),
    "mcc": ("Matthews correlation", "dec"),
    "auc": ("ROC AUC", "dec"),
    "pr_auc": ("Average precision (PR AUC)", "dec"),
    "brier": ("Brier score (lower is better)", "dec"),
    "ece": ("Expected calibration error (lower is better)", "dec"),
}
KEY_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "auc", "balanced_accuracy")



def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(float(value))


def fmt_value(value: object, style: str = "dec") -> str:
    """``0.875`` -> ``87.5%`` (style ``pct``) or ``0.875`` (style ``dec``); missing -> ``n/a``."""
    if not is_number(value):
        return "n/a"
    number = float(value)
    return f"{100 * number:.1f}%" if style == "pct" else f"{number:.3f}"


def fmt_ci(ci: Sequence | None, style: str = "dec") -> str:
    """``[0.80, 0.92]`` -> ``80.0-92.0%`` or ``0.800-0.920``; missing -> ``n/a``.

    Bounds that differ are never printed alike: up to three more decimals are added until they
    differ (``[0.9996, 1.0]`` -> ``0.9996-1.0000``, not ``1.000-1.000``, which reads as no uncertainty).
    """
    if not ci or len(ci) != 2 or not (is_number(ci[0]) and is_number(ci[1])):
        return "n/a"
    lower, upper = float(ci[0]), float(ci[1])
    scale, suffix, decimals = (100.0, "%", 1) if style == "pct" else (1.0, "", 3)
    limit = decimals + 3
    while decimals < limit and lower != upper and f"{scale * lower:.{decimals}f}" == f"{scale * upper:.{decimals}f}":
        decimals += 1
    return f"{scale * lower:.{decimals}f}\u2013{scale * upper:.{decimals}f}{suffix}"


def prevalence_note(metric: Mapping | None) -> str:
    """``at prevalence 48.0% (test set (observed))`` for a PPV / NPV that carries its prevalence; else ``''``."""
    if not isinstance(metric, Mapping) or not is_number(metric.get("prevalence")):
        return ""
    source = str(metric.get("prevalence_source") or "").strip()
    return f"at prevalence {fmt_value(metric['prevalence'], 'pct')}" + (f" ({source})" if source else "")


def _metric_label(name: str, metric: Mapping | None, label: str) -> str:
    note = prevalence_note(metric) if name in ("ppv", "npv") else ""
    return f"{label}, {note}" if note else label


def fmt_metric(metric: Mapping | None, name: str) -> str:
    """``sensitivity`` -> ``87.5% (95% CI 80.0-92.0%)``."""
    style = METRICS.get(name, (name, "dec"))[1]
    if not metric:
        return "n/a"
    return f"{fmt_value(metric.get('value'), style)} (95% CI {fmt_ci(metric.get('ci95'), style)})"


def fmt_metric_short(metric: Mapping | None, name: str) -> str:
    """``sensitivity`` -> ``87.5% (80.0-92.0%)``, for tables whose caption says the brackets hold the 95% CI."""
    style = METRICS.get(name, (name, "dec"))[1]
    if not metric:
        return "n/a"
    return f"{fmt_value(metric.get('value'), style)} ({fmt_ci(metric.get('ci95'), style)})"


def fmt_count(value: object) -> str:
    return f"{int(value):,}" if is_number(value) else "n/a"


def fmt_threshold(value: object) -> str:
    return f"{float(value):.4g}" if is_number(value) else "n/a"


def fmt_mm(value: object) -> str:
    """``5.625`` -> ``5.62 mm``."""
    return f"{float(value):.3g} mm" if is_number(value) else "n/a"


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s:;,'\"]+)+")


def scrub_paths(text: str, limit: int = 90) -> str:
    """Replace file paths in a message by ``<path>`` (folder names can carry patient names)."""
    cleaned = _PATH.sub("<path>", str(text)).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "\u2026"


# ------------------------------------------------------------------------------------------------
# Composition (the report dict follows the schema in medrec.report.analysis)
# ------------------------------------------------------------------------------------------------

DEFAULT_TITLE = "Clinical validation report"
THRESHOLD_KINDS: tuple[str, ...] = ("validation", "user-given", "exploratory", "argmax")


def threshold_kind(report: Mapping) -> str:
    """``validation``, ``user-given``, ``exploratory`` or ``argmax``: where the threshold came from."""
    kind = report.get("threshold_kind")
    if kind in THRESHOLD_KINDS:
        return str(kind)
    source = str(report.get("threshold_source") or "").strip().lower()
    for candidate in THRESHOLD_KINDS:
        if source.startswith(candidate):
            return candidate
    return "exploratory" if "exploratory" in source else ("argmax" if "argmax" in source else "validation")


def threshold_sentence(report: Mapping) -> str:
    source = str(report.get("threshold_source") or "unknown source")
    if threshold_kind(report) == "argmax":
        return f"Multi-class: the predicted class is the one with the highest score ({source})."
    return f"Operating threshold {fmt_threshold(report.get('threshold'))} (a sample is positive when its score " \
           f"is at least the threshold). Source: {source}."


def _short_source(report: Mapping) -> str:
    return {
        "validation": "chosen on validation, frozen",
        "user-given": "user-given",
        "exploratory": "EXPLORATORY, chosen on the test data",
        "argmax": "argmax",
    }[threshold_kind(report)]


def summary_paragraph(report: Mapping) -> str:
    """The one-paragraph summary at the top of the report."""
    metrics = report.get("metrics") or {}
    first = (f"This report validates the classifier on {fmt_count(report.get('n_samples'))} samples "
             f"from {fmt_count(report.get('n_patients'))} patients")
    if is_number(report.get("prevalence")):
        first += f" (prevalence {fmt_value(report['prevalence'], 'pct')})"
    parts = [first + "."]
    if is_number(report.get("n_excluded")) and report["n_excluded"]:
        n = int(report["n_excluded"])
        parts.append(f"{n} row{' was' if n == 1 else 's were'} excluded from the analysis (see the cohort flow).")
    flow = flow_sentence(report)
    if flow:
        parts.append(flow)
    if report.get("task") == "multiclass":
        parts.append(f"Across {len(report.get('classes') or [])} classes, accuracy was "
                     f"{fmt_metric(metrics.get('accuracy'), 'accuracy')} and the macro-averaged sensitivity "
                     f"{fmt_metric(metrics.get('sensitivity'), 'sensitivity')}.")
    elif report.get("threshold") is not None:
        parts.append(
            f"At the operating threshold {fmt_threshold(report.get('threshold'))} ({_short_source(report)}), "
            f"sensitivity was {fmt_metric(metrics.get('sensitivity'), 'sensitivity')} and specificity "
            f"{fmt_metric(metrics.get('specificity'), 'specificity')}."
        )
    if metrics.get("auc") and report.get("task") != "multiclass":
        parts.append(f"The ROC AUC was {fmt_metric(metrics.get('auc'), 'auc')}.")
    adjusted = report.get("prevalence_adjusted")
    if adjusted and is_number(adjusted.get("prevalence")):
        source = f" ({adjusted['prevalence_source']})" if adjusted.get("prevalence_source") else ""
        parts.append(
            f"At the stated clinical prevalence of {fmt_value(adjusted['prevalence'], 'pct')}{source}, the expected "
            f"PPV is {fmt_metric(adjusted.get('ppv'), 'ppv')} and NPV {fmt_metric(adjusted.get('npv'), 'npv')}."
        )
    patient = report.get("patient_level") or {}
    if patient.get("metrics"):
        pm = patient["metrics"]
        parts.append(
            f"Per patient ({fmt_count(patient.get('n_patients'))} patients), sensitivity was "
            f"{fmt_metric(pm.get('sensitivity'), 'sensitivity')} and specificity "
            f"{fmt_metric(pm.get('specificity'), 'specificity')}."
        )
    lesion = report.get("lesion_level") or {}
    if lesion:
        hit_rate = lesion.get("hit_rate") or {}
        parts.append(
            f"Per lesion, the top finding lay inside a reference lesion in {_count_cell(hit_rate) or 'n/a'} "
            f"true-positive studies ({fmt_value(hit_rate.get('value'), 'pct')}, 95% CI "
            f"{fmt_ci(hit_rate.get('ci95'), 'pct')}) and the FROC CPM was "
            f"{fmt_value((lesion.get('froc') or {}).get('cpm'))} over {fmt_count(lesion.get('n_lesions'))} lesions."
        )
    acceptance = report.get("acceptance")
    if isinstance(acceptance, Mapping) and acceptance.get("criteria"):
        parts.append(f"Pre-specified acceptance criteria ({acceptance.get('source')}): {acceptance.get('n_pass')} of "
                     f"{len(acceptance['criteria'])} met, overall {acceptance.get('overall')}.")
    if threshold_kind(report) == "exploratory":
        parts.append("The threshold was chosen on these data: the threshold-dependent results are exploratory.")
    if (report.get("data_origin") or {}).get("synthetic"):
        parts.append("The scans are synthetic (medrec synth).")
    return " ".join(parts)


def _metric_cell(metric: Mapping | None, name: str) -> tuple[str, str]:
    style = METRICS.get(name, (name, "dec"))[1]
    if not metric:
        return "n/a", "n/a"
    return fmt_value(metric.get("value"), style), fmt_ci(metric.get("ci95"), style)


def _count_cell(metric: Mapping) -> str:
    numerator, denominator = metric.get("numerator"), metric.get("denominator")
    if is_number(numerator) and is_number(denominator):
        return f"{int(numerator)}/{int(denominator)}"
    return ""


def short_method(method: str) -> str:
    """A CI method's name without its details ("Wilson score interval; 57 samples ..." -> "Wilson score interval")."""
    head = method.split(";")[0].strip()
    if "," in head:
        head = head.split(",")[0].strip()
    if " (" in head and not head.endswith(")"):
        head = head.split(" (")[0]
    return head


def metrics_table(metrics: Mapping, caption: str = "") -> Table:
    """Value, 95% CI, the counts behind each proportion and the CI method, for every metric present.

    The method column names each method briefly with a footnote number; the full sentences are
    the table's note, each once.
    """
    rows, footnotes = [], {}

    def method_cell(metric: Mapping) -> str:
        full = str(metric.get("method", "")).strip()
        if not full:
            return ""
        number = footnotes.setdefault(full, len(footnotes) + 1)
        return f"{short_method(full)} [{number}]"

    for name, (label, style) in METRICS.items():
        metric = metrics.get(name)
        if isinstance(metric, Mapping):
            rows.append([_metric_label(name, metric, label), fmt_value(metric.get("value"), style),
                         fmt_ci(metric.get("ci95"), style), _count_cell(metric), method_cell(metric)])
    for name, metric in metrics.items():  # metrics this renderer does not know by name still appear
        if name not in METRICS and isinstance(metric, Mapping) and "value" in metric:
            rows.append([name, fmt_value(metric.get("value")), fmt_ci(metric.get("ci95")), _count_cell(metric),
                         method_cell(metric)])
    note = "\n".join(f"[{number}] {text}." for text, number in footnotes.items())
    return Table(["Metric", "Value", "95% CI", "Count", "CI method"], rows, caption=caption, note=note)


def confusion_table(confusion: Mapping, classes: Sequence[str] = (), caption: str = "") -> Table:
    """The 2x2 table with margins (rows: reference standard; columns: model)."""
    tp, fp, tn, fn = (int(confusion.get(k, 0) or 0) for k in ("tp", "fp", "tn", "fn"))
    negative, positive = (f" ({classes[0]})", f" ({classes[1]})") if len(classes) == 2 else ("", "")
    rows = [
        [f"Reference positive{positive}", str(tp), str(fn), str(tp + fn)],
        [f"Reference negative{negative}", str(fp), str(tn), str(fp + tn)],
        ["Total", str(tp + fp), str(fn + tn), str(tp + fp + tn + fn)],
    ]
    return Table(["", "Model positive", "Model negative", "Total"], rows, caption=caption,
                 strong_rows=frozenset({2}))


def subgroup_rows(groups: object) -> list[Mapping]:
    """Subgroup entries as a list whatever the container (list of dicts or dict keyed by group)."""
    if isinstance(groups, Mapping):
        return [{"group": name, **entry} for name, entry in groups.items() if isinstance(entry, Mapping)]
    if isinstance(groups, list):
        return [g for g in groups if isinstance(g, Mapping)]
    return []


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
    n_patients = report.get("n_patients")
    if is_number(n_patients) and n_patients < 100:
        notes.append(f"Fewer than 100 patients (n={int(n_patients)}): wide confidence intervals.")
    if report.get("task") != "multiclass":
        for key, name in (("n_positive", "reference-positive"), ("n_negative", "reference-negative")):
            value = report.get(key)
            if is_number(value) and value < 30:
                metric = "sensitivity" if key == "n_positive" else "specificity"
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
    if (report.get("data_origin") or {}).get("synthetic"):
        notes.append("The scans are synthetic phantoms generated by 'medrec synth': these results test the software, "
                     "not the model's clinical performance.")
    context = report.get("context") or {}
    source = f" ({context['data_source']})" if context.get("data_source") else ""
    sites = f" from {context['sites']}" if context.get("sites") else ""
    notes.append(f"Retrospective analysis of one data set{source}{sites}; performance at another site, on other "
                 "scanners or in another population must be confirmed before clinical use.")
    return notes


# StudyContext fields (medrec.config) as page 1 names them
CONTEXT_LABELS: dict[str, str] = {
    "intended_use": "Intended use",
    "target_condition": "Target condition",
    "reference_standard": "Reference standard (who / how)",
    "data_source": "Data source",
    "sites": "Sites",
    "dates": "Dates",
}


def synthetic_alert(report: Mapping) -> str | None:
    """The red banner of a report on scans that 'medrec synth' generated, or None."""
    origin = report.get("data_origin") or {}
    if not origin.get("synthetic"):
        return None
    return (f"SYNTHETIC DATA: the scans are phantoms generated by 'medrec synth' ({origin.get('evidence')}). These "
            "results show that the software works end to end; they say nothing about clinical performance.")


def context_section(report: Mapping) -> Section:
    """What the validation is about (recipe ``context:``): intended use, target condition, reference standard,
    data source, sites, dates; and the data's origin when it is synthetic."""
    section = Section("context", "Study context")
    context = report.get("context") or {}
    rows = [[label, str(context[key])] for key, label in CONTEXT_LABELS.items() if context.get(key)]
    origin = report.get("data_origin") or {}
    if origin.get("synthetic"):
        rows.append(["Data", f"SYNTHETIC: {origin.get('evidence')}"])
    missing = [label for key, label in CONTEXT_LABELS.items() if not context.get(key)]
    note = (f"Not stated: {', '.join(label.split(' (')[0].lower() for label in missing)} (recipe section "
            "'context:')." if missing else "")
    if rows:
        section.blocks.append(Table(["Item", "Stated"], rows, caption="What this validation is about", note=note))
    else:
        section.blocks.append(Paragraph(f"No study context was given: {note[len('Not stated: '):]}"))
    return section


def _bound_text(name: str, required: Mapping) -> str:
    style = METRICS.get(name, (name, "dec"))[1]
    parts = []
    if is_number(required.get("value")):
        parts.append(f"point estimate \u2265 {fmt_value(required['value'], style)}")
    if is_number(required.get("lower_ci")):
        parts.append(f"lower 95% CI bound \u2265 {fmt_value(required['lower_ci'], style)}")
    return " and ".join(parts)


def _sample_size_cell(entry: Mapping) -> tuple[str, str]:
    """(needed for 80% power, in the test set) for one criterion."""
    size = entry.get("sample_size")
    if not isinstance(size, Mapping):
        return "n/a (no lower-CI criterion)", ""
    needed = size.get("n_needed")
    have = f"{fmt_count(size.get('n_in_test_set'))} {size.get('unit')}" if size.get("unit") else ""
    if entry.get("metric") == "auc":
        have = (f"{fmt_count(size.get('n_in_test_set'))} positive + "
                f"{fmt_count(size.get('n_negative_in_test_set'))} negative")
    if not is_number(needed):
        return f"n/a ({size.get('note') or 'no formula'})", have
    if entry.get("metric") == "auc":
        text = f"{fmt_count(needed)} positive + {fmt_count(size.get('n_negative_needed'))} negative samples"
    else:
        text = f"{fmt_count(needed)} {size.get('unit')}"
        if is_number(size.get("total_needed")) and size.get("total_needed") != needed:
            text += f" (\u2248{fmt_count(size['total_needed'])} samples in all)"
    if size.get("enough") is False:
        have += ": too few"
    return text, have


def acceptance_section(report: Mapping) -> Section | None:
    """Pre-specified acceptance criteria: PASS / FAIL each, and the sample size that would show each lower bound."""
    acceptance = report.get("acceptance")
    if not isinstance(acceptance, Mapping) or not acceptance.get("criteria"):
        return None
    section = Section("acceptance", "Pre-specified acceptance criteria")
    overall = acceptance.get("overall")
    counts = (f"{acceptance.get('n_pass')} of {len(acceptance['criteria'])} criteria met"
              + (f", {acceptance.get('n_not_evaluable')} not evaluable" if acceptance.get("n_not_evaluable") else ""))
    section.blocks.append(Callout(
        f"Overall: {overall} ({counts}). Criteria from {acceptance.get('source')}; judged on the sample-level "
        "metrics of this report." + (f" Note: {acceptance['caveat']}." if acceptance.get("caveat") else ""),
        "note" if overall == "PASS" else "warning"))
    rows, failed = [], set()
    for entry in acceptance["criteria"]:
        name = str(entry.get("metric"))
        style = METRICS.get(name, (name, "dec"))[1]
        observed = f"{fmt_value(entry.get('observed'), style)} ({fmt_ci(entry.get('ci95'), style)})"
        needed, have = _sample_size_cell(entry)
        if entry.get("verdict") != "PASS":
            failed.add(len(rows))
        rows.append([f"{METRICS.get(name, (name, ''))[0]}: {_bound_text(name, entry.get('required') or {})}",
                     observed, str(entry.get("verdict")), needed, have])
    methods = {str(entry["sample_size"].get("method")) for entry in acceptance["criteria"]
               if isinstance(entry.get("sample_size"), Mapping) and entry["sample_size"].get("method")}
    power = 100 * float(acceptance.get("power", 0.8))
    note = (f"Sample size: the number that shows the lower 95% CI bound with {power:.0f}% power if the true value is "
            "the one observed. " + " ".join(f"{m[0].upper()}{m[1:]}." for m in sorted(methods)))
    section.blocks.append(Table(
        ["Criterion", "Observed (95% CI)", "Result", "Needed for 80% power", "This test set"], rows,
        caption="Acceptance criteria, PASS / FAIL", strong_rows=frozenset(failed), note=note))
    return section


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


def performance_section(report: Mapping) -> Section:
    section = Section("performance", "Diagnostic performance")
    section.blocks.append(Paragraph(threshold_sentence(report)))
    if threshold_kind(report) == "exploratory":
        section.blocks.append(Callout("EXPLORATORY threshold: the numbers below that depend on the threshold were "
                                      "obtained with a threshold tuned on the same data.", "warning"))
    confusion = report.get("confusion_matrix")
    if isinstance(confusion, Mapping):
        section.blocks.append(confusion_table(confusion, report.get("classes") or (),
                                              caption="2x2 table at the operating threshold (samples)"))
    section.blocks.append(metrics_table(report.get("metrics") or {},
                                        caption="Sample-level metrics" + (" at the operating threshold"
                                                                          if report.get("threshold") is not None
                                                                          else "")))
    patient = report.get("patient_level") or {}
    if patient.get("metrics"):
        rows = []
        for name in METRICS:
            study_metric = (report.get("metrics") or {}).get(name)
            patient_metric = patient["metrics"].get(name)
            if not study_metric and not patient_metric:
                continue
            rows.append([METRICS[name][0], *_metric_cell(study_metric, name), *_metric_cell(patient_metric, name)])
        notes = [f"Patient level: {patient['aggregation']}." if patient.get("aggregation") else "",
                 f"Patient-level calibration {patient['calibration_omitted']}."
                 if str(patient.get("calibration_omitted") or "").startswith("omitted") else "",
                 "PPV and NPV hold at each level's own prevalence."]
        section.blocks.append(Table(
            ["Metric", "Sample level", "95% CI", "Patient level", "95% CI"], rows,
            caption=f"Sample level ({fmt_count(report.get('n_samples'))} samples) beside patient level "
                    f"({fmt_count(patient.get('n_patients'))} patients, prevalence "
                    f"{fmt_value(patient.get('prevalence'), 'pct')})",
            note=" ".join(note for note in notes if note),
        ))
        if isinstance(patient.get("confusion_matrix"), Mapping):
            section.blocks.append(confusion_table(patient["confusion_matrix"], report.get("classes") or (),
                                                  caption="2x2 table per patient"))
    adjusted = report.get("prevalence_adjusted")
    if adjusted and is_number(adjusted.get("prevalence")):
        rows = [[METRICS[name][0], *_metric_cell(adjusted[name], name), str(adjusted[name].get("method", ""))]
                for name in ("ppv", "npv") if adjusted.get(name)]
        where = f"{adjusted['prevalence_source']}; " if adjusted.get("prevalence_source") else ""
        section.blocks.append(Table(
            ["Metric", "Value", "95% CI", "Method"], rows,
            caption=f"Predictive values at the stated clinical prevalence {fmt_value(adjusted['prevalence'], 'pct')} "
                    f"({where}the test set has {fmt_value(report.get('prevalence'), 'pct')})",
        ))
    calibration = calibration_table(report.get("calibration"))
    if calibration is not None:
        section.blocks.append(calibration)
    validation = validation_table(report)
    if validation is not None:
        section.blocks.append(validation)
    return section


def validation_table(report: Mapping) -> Table | None:
    """The run's validation split beside this report's data (:mod:`medrec.report.validation_split`)."""
    validation = report.get("validation_split")
    if not isinstance(validation, Mapping) or not validation.get("metrics"):
        return None
    metrics = report.get("metrics") or {}
    rows = [[METRICS[name][0], *_metric_cell(validation["metrics"].get(name), name),
             *_metric_cell(metrics.get(name), name)] for name in ("auc", "sensitivity", "specificity")]
    return Table(
        ["Metric", "Validation split", "95% CI", "These data", "95% CI"], rows,
        caption=f"The run's validation split ({fmt_count(validation.get('n'))} samples, "
                f"{fmt_count(validation.get('n_positive'))} positive) beside these data, at the same threshold "
                f"{fmt_threshold(validation.get('threshold'))}",
        note="Training chose the best epoch, the calibration and the threshold on the validation split, so its "
             "figures are optimistic; the difference shows how much of them was tuning. Validation intervals count "
             "samples (its file names no patients).",
    )


CALIBRATION_ROWS: dict[str, str] = {
    "intercept": "Calibration intercept (in the large; 0 is ideal)",
    "slope": "Calibration slope (1 is ideal)",
    "oe_ratio": "Observed / expected events (1 is ideal)",
    "scaled_brier": "Scaled Brier score (1 is ideal, 0 no skill)",
}


def calibration_table(calibration: Mapping | None) -> Table | None:
    """Intercept, slope, observed / expected and scaled Brier with their intervals and methods."""
    if not isinstance(calibration, Mapping):
        return None
    rows = []
    for key, label in CALIBRATION_ROWS.items():
        entry = calibration.get(key)
        if isinstance(entry, Mapping):
            rows.append([label, fmt_value(entry.get("value")), fmt_ci(entry.get("ci95")),
                         str(entry.get("method", ""))])
    if not rows:
        return None
    return Table(["Measure", "Value", "95% CI", "Method"], rows,
                 caption=f"Calibration of the sample-level probabilities ({fmt_count(calibration.get('n_samples'))} "
                         "samples)")


FIGURE_CAPTIONS: dict[str, tuple[str, float]] = {
    "roc.png": ("ROC curve. The marker is the operating point; its error bars are the 95% CIs of sensitivity "
                "(vertical) and specificity (horizontal).", 0.6),
    "pr.png": ("Precision-recall curve; the dotted line is the precision without skill (the prevalence). The "
               "marker is the operating point with the 95% CIs of sensitivity and PPV.", 0.6),
    "calibration.png": ("Reliability diagram: observed fraction of positives per bin of predicted probability "
                        "(marker area: samples in the bin); perfect calibration lies on the diagonal; the dashed "
                        "curve is the logistic recalibration fit, whose slope and calibration-in-the-large "
                        "intercept are printed with their 95% CIs.", 0.5),
    "decision.png": ("Decision curve (Vickers & Elkin 2006): net benefit of acting on the model's score at each "
                     "threshold probability, against treating every patient and treating none. The model helps "
                     "where its curve lies above both; only the range of threshold probabilities a clinician would "
                     "accept matters. Read it only if the scores are calibrated probabilities.", 0.7),
    "scores.png": ("Distribution of the scores by reference class, with the operating threshold.", 0.75),
    "roc_multiclass.png": ("One-vs-rest ROC curve of each class.", 0.6),
    "froc.png": ("FROC curve: lesion sensitivity against mean false-positive findings per study, sweeping the "
                 "candidates' probability threshold; markers at 1/8 to 8 FP per study, whose mean sensitivity is "
                 "the CPM.", 0.6),
}


def curves_section(report: Mapping, figures: Mapping[str, bytes]) -> Section:
    section = Section("curves", "ROC, precision-recall, calibration and decision curve")
    for names in (("roc.png", "pr.png"), ("calibration.png", "decision.png")):
        pair = [Figure(n, figures[n], FIGURE_CAPTIONS[n][0], width=0.5) for n in names if n in figures]
        if len(pair) == 2:
            section.blocks.append(FigureRow(pair))
        else:
            section.blocks.extend(Figure(f.name, f.png, f.caption, width=FIGURE_CAPTIONS[f.name][1]) for f in pair)
    for name in ("scores.png", "roc_multiclass.png"):
        if name in figures:
            caption, width = FIGURE_CAPTIONS[name]
            section.blocks.append(Figure(name, figures[name], caption, width=width))
    return section


def subgroup_section(report: Mapping, figures: Mapping[str, bytes]) -> Section | None:
    subgroups = report.get("subgroups") or {}
    if not any(subgroup_rows(groups) for groups in subgroups.values()):
        return None
    section = Section("subgroups", "Subgroups")
    if "subgroups.png" in figures:
        section.blocks.append(Figure(
            "subgroups.png", figures["subgroups.png"],
            "Sensitivity and specificity per subgroup with 95% CIs; the dotted line is the whole set. Hollow "
            "markers and grey italic labels: small groups (too few positives or negatives to conclude).",
            width=0.95))
    names = [n for n in METRICS if any(n in (g.get("metrics") or {}) for gs in subgroups.values()
                                       for g in subgroup_rows(gs))]
    rows, muted = [], set()
    for column, groups in subgroups.items():
        for group in subgroup_rows(groups):
            metrics = group.get("metrics") or {}
            if group.get("small"):
                muted.add(len(rows))
            counts = group.get("n_per_class")
            balance = (", ".join(f"{k}: {v}" for k, v in counts.items()) if isinstance(counts, Mapping)
                       else f"{fmt_count(group.get('n_positive'))} / {fmt_count(group.get('n_negative'))}")
            rows.append([f"{column} = {group.get('group')}", fmt_count(group.get("n")), balance,
                         fmt_count(group.get("n_patients")),
                         *(fmt_metric_short(metrics.get(n), n) if metrics.get(n) else "n/a" for n in names)])
    balance_name = "Per class" if report.get("task") == "multiclass" else "Pos / neg"
    section.blocks.append(Table(["Subgroup", "n", balance_name, "Patients", *(METRICS[n][0] for n in names)], rows,
                                caption="Metrics per subgroup: value (95% CI)", muted_rows=frozenset(muted),
                                note="Grey rows: small groups, too small to conclude." if muted else ""))
    return section


def threshold_section(report: Mapping) -> Section | None:
    table = report.get("threshold_table") or []
    if not table:
        return None
    rows, strong = [], set()
    for row in table:
        note = str(row.get("note") or "")
        if "operating threshold" in note:
            strong.add(len(rows))
        rows.append([fmt_threshold(row.get("threshold")),
                     *(fmt_value(row.get(n), "pct") for n in ("sensitivity", "specificity", "ppv", "npv")),
                     *(fmt_count(row.get(n)) for n in ("tp", "fp", "tn", "fn")), note])
    section = Section("thresholds", "Other thresholds")
    section.blocks.append(Table(
        ["Threshold", "Sensitivity", "Specificity", "PPV", "NPV", "TP", "FP", "TN", "FN", "Note"], rows,
        caption="Metrics at other thresholds, for orientation only (no confidence intervals); the operating "
                "threshold is in bold. Thresholds found on these data are exploratory. PPV and NPV are at the "
                f"test set's prevalence {fmt_value(report.get('prevalence'), 'pct')}, not at a clinical one.",
        strong_rows=frozenset(strong)))
    return section


def _fmt_p(value: object) -> str:
    if not is_number(value):
        return "n/a"
    return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"


def comparison_section(report: Mapping, figures: Mapping[str, bytes]) -> Section | None:
    comparison = report.get("comparison")
    if not comparison:
        return None
    section = Section("comparison", "Model comparison")
    other = report.get("compare_name") or "the comparison model"
    section.blocks.append(Paragraph(
        f"This model is compared with {other} on the {fmt_count(comparison.get('n_samples'))} samples both scored "
        f"(paired analysis; the comparison model's threshold is {fmt_threshold(comparison.get('threshold_b'))})."))
    rows = []
    auc = comparison.get("auc")
    if isinstance(auc, Mapping):
        rows.append(["ROC AUC", fmt_value(auc.get("auc_a")), fmt_value(auc.get("auc_b")),
                     fmt_value(auc.get("difference")), fmt_ci(auc.get("ci95")), _fmt_p(auc.get("p_value")),
                     str(auc.get("method", ""))])
    for name in ("sensitivity", "specificity"):
        entry = comparison.get(name)
        if isinstance(entry, Mapping):
            a, b = entry.get("value_a"), entry.get("value_b")
            difference = float(a) - float(b) if is_number(a) and is_number(b) else None
            rows.append([METRICS[name][0], fmt_value(a, "pct"), fmt_value(b, "pct"),
                         f"{100 * difference:+.1f} points" if difference is not None else "n/a", "n/a",
                         _fmt_p(entry.get("p_value")),
                         f"{entry.get('method', '')} (discordant pairs b={entry.get('b')}, c={entry.get('c')})"])
    section.blocks.append(Table(["Metric", "This model", "Comparison", "Difference", "95% CI", "p", "Test"], rows,
                                caption="Paired comparison (difference = this model minus the comparison model)"))
    if "roc.png" in figures:
        section.blocks.append(Paragraph("Both ROC curves are drawn in the ROC figure."))
    return section


def multiclass_section(report: Mapping, figures: Mapping[str, bytes]) -> Section | None:
    multiclass = report.get("multiclass")
    if not multiclass:
        return None
    section = Section("multiclass", "Per-class results")
    rows = []
    for entry in multiclass.get("per_class") or []:
        metrics = entry.get("metrics") or {}
        rows.append([str(entry.get("class")), fmt_count(entry.get("n")),
                     *(fmt_metric_short(metrics.get(n), n) if metrics.get(n) else "n/a"
                       for n in ("sensitivity", "specificity", "ppv", "f1", "auc"))])
    if rows:
        section.blocks.append(Table(["Class", "n", "Sensitivity", "Specificity", "PPV", "F1", "AUC"], rows,
                                    caption="Per-class metrics, each class against the rest: value (95% CI)"))
    if "confusion_multiclass.png" in figures:
        section.blocks.append(Figure("confusion_multiclass.png", figures["confusion_multiclass.png"],
                                     "Confusion matrix: counts, coloured by the fraction of each true class.",
                                     width=0.6))
    matrix = multiclass.get("confusion_matrix")
    classes = multiclass.get("classes") or []
    if matrix and classes:
        section.blocks.append(Table(["True \\ predicted", *map(str, classes)],
                                    [[str(c), *(str(v) for v in r)] for c, r in zip(classes, matrix, strict=False)],
                                    caption="Confusion matrix (rows: reference class, columns: predicted class)"))
    return section


def _fmt_probability_threshold(value: object) -> str:
    if not is_number(value):
        return "n/a"
    return fmt_threshold(value) if math.isfinite(float(value)) else "above all"


def lesion_method_sentence(lesion: Mapping) -> str:
    """How the lesion-level numbers were obtained (one sentence for the methods list)."""
    return (
        f"a finding hits a lesion when its distance to the lesion's centre is at most the lesion's radius plus "
        f"{fmt_mm(lesion.get('tolerance_mm'))} ({lesion.get('tolerance_source') or 'tolerance'}); hit rate: "
        "true-positive studies whose top finding hits a lesion, over those with an annotated lesion; FROC: lesion "
        "sensitivity (lesions of reference-positive studies hit by a candidate finding at or above the probability "
        "threshold) against mean candidates hitting no lesion per study, read at 1/8 to 8 false positives per "
        "study at the lowest threshold whose rate does not exceed the target, CPM = their mean; positive studies "
        "without an annotated lesion are left out"
    )


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
    section.blocks.append(Table(
        ["Measure", "Value", "95% CI", "Count", "CI method"],
        [["Top finding inside a lesion (true-positive studies)", fmt_value(hit_rate.get("value"), "pct"),
          fmt_ci(hit_rate.get("ci95"), "pct"), _count_cell(hit_rate), str(hit_rate.get("method", ""))]],
        caption=f"Hit rate of the top finding at the operating threshold {fmt_threshold(report.get('threshold'))}",
        note=f"{fmt_count(hit_rate.get('n_true_positive_studies'))} true-positive studies; "
             f"{fmt_count(hit_rate.get('n_without_lesions'))} without an annotated lesion and "
             f"{fmt_count(hit_rate.get('n_without_location'))} without a finding location are not counted."))
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


def compose(
    report: Mapping,
    figures: Mapping[str, bytes],
    cases: Mapping[str, Sequence[Case]],
    title: str,
    date: str,
) -> Document:
    """Build the document that both renderers print.

    Args:
        report: the report dict (analysis, plus ``cohort``, ``provenance`` and ``limitations``).
        figures: file name -> PNG bytes of the plots.
        cases: ``false_negatives`` / ``false_positives`` -> the flagged cases with their pictures.
        title: the report title.
        date: the report date (ISO).
    """
    banner = None
    if threshold_kind(report) == "exploratory":
        banner = (f"EXPLORATORY THRESHOLD ({report.get('threshold_method') or 'chosen on these data'}): the operating "
                  "threshold was chosen on the analysed data themselves. Threshold-dependent metrics are "
                  "optimistic and are not a validation result.")
    sections = [
        context_section(report),
        acceptance_section(report),
        cohort_section(report, figures),
        performance_section(report),
        curves_section(report, figures),
        subgroup_section(report, figures),
        threshold_section(report),
        comparison_section(report, figures),
        multiclass_section(report, figures),
        lesion_section(report, figures),
        failure_section(report, cases),
        Section("limitations", "Limitations", [BulletList(list(report.get("limitations") or []))]),
        methods_section(report),
        provenance_section(report.get("provenance") or {}),
    ]
    return Document(
        title=title,
        date=date,
        summary=summary_paragraph(report),
        banner=banner,
        sections=[s for s in sections if s is not None and s.blocks],
        footer=f"{title} \u00b7 {date}",
        key_figures=key_figures(report),
        alert=synthetic_alert(report),
    )


def subtitle(document: Document) -> str:
    """The line under the title: what the document is, its date and the software version."""
    from medrec import __version__

    kind = "" if document.title == DEFAULT_TITLE else "Clinical validation report \u00b7 "
    return f"{kind}{document.date} \u00b7 medrec {__version__}"


def key_figures(report: Mapping) -> list[tuple[str, str, str]]:
    """The headline numbers shown in boxes under the summary: (name, value, 95% CI)."""
    metrics = report.get("metrics") or {}
    shown = {"sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV", "npv": "NPV",
             "auc": "ROC AUC"}
    if report.get("task") == "multiclass":
        shown = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "f1": "Macro F1",
                 "auc": "Macro AUC"}
    result = []
    for name, label in shown.items():
        metric = metrics.get(name)
        if metric:
            value, ci = _metric_cell(metric, name)
            if name in ("ppv", "npv") and is_number(metric.get("prevalence")):
                where = "test set" if str(metric.get("prevalence_source", "")).startswith("test set") else "stated"
                label = f"{label} at {fmt_value(metric['prevalence'], 'pct')} prevalence ({where})"
            result.append((label, value, ci))
    return result
