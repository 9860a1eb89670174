"""Per-class results of a multi-class model: each class against the rest, and the confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping

from medrec.report.document.formatting import fmt_count, fmt_metric_short
from medrec.report.document.model import Figure, Section, Table


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
