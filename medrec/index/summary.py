"""The index run's summary: the counts it returns, the rows of its console table, and the table itself."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from medrec.index.headers import DicomHeader
from medrec.index.labels import LabelMatch, LabelsTable
from medrec.index.nifti import NiftiSample


def _summary(
    paths: list[str],
    junk: int,
    headers: list[DicomHeader],
    niftis: list[NiftiSample],
    n_series: int,
    manifest: pd.DataFrame,
    qc: pd.DataFrame,
    label_match: LabelMatch | None,
    table: LabelsTable | None,
    out: Path,
) -> dict:
    summary: dict = {
        "files_seen": len(paths),
        "os_junk_skipped": junk,
        "dicom_readable": len(headers),
        "nifti_readable": len(niftis),
        "series_found": n_series,
        "samples_kept": int(len(manifest)),
        "files_excluded": int(len(qc)),
        "excluded_by_reason": dict(Counter(qc["code"]).most_common()) if len(qc) else {},
        "patients": int(manifest["patient_id"].nunique()) if len(manifest) else 0,
        "studies": int(manifest["study_uid"].nunique()) if len(manifest) else 0,
        "samples_with_warnings": int((manifest["warnings"] != "").sum()) if len(manifest) else 0,
        "manifest": str(out / "manifest.csv"),
        "qc": str(out / "qc.csv"),
    }
    if label_match is not None and table is not None:
        summary["labels"] = {
            "file": str(table.path),
            "match_on": label_match.match_on,
            "samples_labelled": int((manifest["label"] != "").sum()) if len(manifest) else 0,
            "samples_unlabelled": int((manifest["label"] == "").sum()) if len(manifest) else 0,
            "samples_conflicting": len(label_match.conflicts),
            "rows_unmatched": int(len(label_match.unmatched_rows)),
            "rows_without_label": label_match.empty_label_rows,
            "unmatched_file": str(out / "labels_unmatched.csv"),
        }
    return summary


def index_summary_rows(summary: dict) -> list[tuple[str, object]]:
    """The summary as (item, value) rows for a console table."""
    rows: list[tuple[str, object]] = [
        ("files seen", summary["files_seen"]),
        ("DICOM readable", summary["dicom_readable"]),
        ("NIfTI readable", summary["nifti_readable"]),
        ("series found", summary["series_found"]),
        ("samples kept", summary["samples_kept"]),
        ("samples with warnings", summary["samples_with_warnings"]),
        ("patients", summary["patients"]),
        ("studies", summary["studies"]),
        ("files excluded (qc.csv)", summary["files_excluded"]),
    ]
    rows += [(f"  excluded: {code}", count) for code, count in summary["excluded_by_reason"].items()]
    if summary["os_junk_skipped"]:
        rows.append(("OS junk skipped (.DS_Store, ...)", summary["os_junk_skipped"]))
    labels = summary.get("labels")
    if labels:
        rows += [
            (f"labels matched by {labels['match_on']}", labels["samples_labelled"]),
            ("samples without label", labels["samples_unlabelled"]),
            ("samples with conflicting labels (qc.csv)", labels["samples_conflicting"]),
            ("label rows matching no sample", labels["rows_unmatched"]),
        ]
    annotations = summary.get("annotations")
    if annotations:
        rows += [
            ("samples with lesion annotations", annotations["samples_annotated"]),
            ("  lesion-free (negative or empty mask)", annotations["samples_lesion_free"]),
            ("  positives with a label only", annotations["positives_label_only"]),
            ("annotation problems (annotations_qc.csv)", annotations["problems"]),
        ]
    return rows


def print_index_summary(summary: dict) -> None:
    """Print the index summary table to the console."""
    from medrec.console import console, print_summary

    print_summary("medrec index", index_summary_rows(summary))
    console.print(f"manifest: {summary['manifest']}\nqc:       {summary['qc']}")
    labels = summary.get("labels")
    if labels and labels["rows_unmatched"]:
        console.print(f"unmatched label rows: {labels['unmatched_file']}")
