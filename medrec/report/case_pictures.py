"""Pictures of the report's flagged cases (false negatives, false positives).

Each case is shown on the slice of its annotated lesion or of the model's top finding, by its
saliency overlay, or by its middle slice (:mod:`medrec.report.failures`), as a thumbnail with the
patient's other studies; a study or patient row is pictured by its highest-scoring member sample.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medrec.annotations import Annotations
from medrec.errors import MedrecError
from medrec.report import document as doc_model
from medrec.report import failures
from medrec.report import figures as figs
from medrec.report.inputs import _read_optional_csv
from medrec.report.pseudonym import is_safe_file_token

MAX_THUMBNAILS = 6  # per kind (false negatives, false positives)
THUMBNAIL_MAX_BYTES = 512 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _representative_members(predictions: pd.DataFrame, samples_file: Path | None,
                            manifest_rows: Mapping[str, Mapping]) -> dict[str, str]:
    """Study / patient row id -> the member sample to picture: the highest-scoring member in the manifest."""
    if "sample_ids" not in predictions.columns:
        return {}
    member_scores: dict[str, float] = {}
    members_frame = _read_optional_csv(samples_file)
    if members_frame is not None and {"sample_id", "score"} <= set(members_frame.columns):
        values = pd.to_numeric(members_frame["score"], errors="coerce")
        member_scores = {s: float(v) for s, v in zip(members_frame["sample_id"].astype(str), values, strict=True)
                         if np.isfinite(v)}
    chosen: dict[str, str] = {}
    for group, cell in zip(predictions["sample_id"].astype(str), predictions["sample_ids"].astype(str), strict=True):
        members = [m for m in cell.split(";") if m in manifest_rows]
        if members:
            chosen[group] = max(members, key=lambda m: member_scores.get(m, -np.inf))
    return chosen


def _explain_folders(predictions_path: Path, record: Mapping | None) -> list[Path]:
    """Where the maps of ``medrec score --explain`` may lie: the folder its sidecar names (as given,
    or beside the predictions), then ``explain/`` beside the predictions."""
    folders = []
    named = (record or {}).get("explain_dir")
    if named:
        folders += [Path(named)] if Path(named).is_absolute() else [predictions_path.parent / named, Path(named)]
    folders.append(predictions_path.parent / "explain")
    return folders


def _case_picture(
    raw_sample_id: str | None,
    manifest_rows: Mapping[str, Mapping],
    explain_dirs: Sequence[Path],
    member: str | None = None,
    *,
    annotations: Annotations | None = None,
    finding: failures.Point | None = None,
) -> tuple[np.ndarray | None, str]:
    """The picture of one flagged case and a note on where it came from (never a path).

    In this order (:mod:`medrec.report.failures`): the slice of the sample's annotated lesion, the
    slice of the model's top finding (``finding``, LPS mm), both marked; the saliency overlay
    ``<sample id>.png`` of an explain folder; the middle slice. A study or patient row
    (``raw_sample_id`` a study / patient id) is shown by the scan and the map of ``member``, its
    highest-scoring sample, when the row itself has none.
    """
    row = manifest_rows.get(raw_sample_id or "")
    scan, reason = None, ""  # reason: why the scan could not be loaded, once it was tried
    pictured = str(row.get("sample_id", "")) if row is not None else ""
    lesions = failures.case_lesions(annotations, pictured)
    masked = failures.has_mask(annotations, pictured)
    if row is not None and (lesions or masked or finding is not None):
        scan, reason = failures.load_scan(row, THUMBNAIL_MAX_BYTES)
        if scan is not None:
            mask = failures.case_mask(annotations, pictured, scan) if masked else None
            choice = failures.review_slice(scan.array.shape, scan.affine_ras, lesions, mask, finding)
            if choice.kind != "middle":
                return failures.review_picture(scan, choice), choice.note
    names = [name for name in (raw_sample_id, member) if name and is_safe_file_token(name)]
    for overlay in (folder / f"{name}.png" for name in names for folder in explain_dirs):
        if overlay.is_file():
            try:
                if overlay.read_bytes()[:8] == PNG_SIGNATURE:
                    import matplotlib.image as mpimg

                    return np.asarray(mpimg.imread(overlay)), "saliency overlay"
            except (OSError, ValueError, SyntaxError):
                pass
    if row is None:
        return None, "not in the manifest"
    if scan is None and not reason:
        scan, reason = failures.load_scan(row, THUMBNAIL_MAX_BYTES)
    if scan is None:
        return None, reason
    choice = failures.review_slice(scan.array.shape, scan.affine_ras)
    return failures.review_picture(scan, choice), choice.note


def draw_thumbnails(
    report: Mapping,
    shown_to_raw: Mapping[str, str],
    manifest_rows: Mapping[str, Mapping],
    explain_dirs: Path | Sequence[Path],
    representatives: Mapping[str, str] | None = None,
    *,
    lesions: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | None = None,
    findings: Mapping[str, failures.Point] | None = None,
    analysed: pd.DataFrame | None = None,
) -> dict[str, list[doc_model.Case]]:
    """The flagged cases, each with its picture when one can be made and the patient's other studies.

    Args:
        report: the report dict (``flagged``, ``classes``).
        shown_to_raw: sample id as shown in the report (pseudonym) -> raw sample id.
        manifest_rows: raw sample id -> manifest row (for :func:`medrec.loader.load_volume`).
        explain_dirs: the folder(s) of saliency / finding-map overlays ``<raw sample id>.png``.
        representatives: study / patient id -> its highest-scoring sample (whose overlay stands for it).
        lesions: the lesion table (``--lesions``): a false negative is shown on its lesion's slice.
        masks: a labels file with a ``mask`` column: lesion masks, used as the lesion table is.
        findings: raw row id -> the model's top finding (LPS mm), shown when no lesion is.
        analysed: the predictions as the report shows them (pseudonymised): the patient's other rows
            are listed from them; None leaves them unlisted.

    Returns:
        ``{"false_negatives": [Case, ...], "false_positives": [...]}`` in the order of ``flagged``;
        a case's ``figure`` (``fn_01.png`` ...) is None when no picture could be made.
    """
    flagged = report.get("flagged") or {}
    classes = report.get("classes") or ["", ""]
    truth = {"false_negatives": classes[-1], "false_positives": classes[0]}
    folders = [explain_dirs] if isinstance(explain_dirs, Path) else list(explain_dirs)
    entries = {key: list(flagged.get(key) or [])[:MAX_THUMBNAILS] for key in truth}
    references: dict[str, str] = {}  # pictured sample -> reference label: only a positive may carry a lesion
    for key, items in entries.items():
        for entry in items:
            row = manifest_rows.get(shown_to_raw.get(str(entry.get("sample_id", ""))) or "")
            if row is not None:
                references[str(row["sample_id"])] = truth[key]
    annotations = None
    if references and (lesions is not None or masks is not None):
        try:
            annotations = failures.case_annotations(
                (row for sample_id, row in manifest_rows.items() if str(row.get("sample_id")) == sample_id),
                references, truth["false_negatives"], lesions=lesions, masks=masks)
        except MedrecError:
            annotations = None  # the lesion-level results report a bad lesion table; pictures fall back
    result: dict[str, list[doc_model.Case]] = {}
    for key, prefix in (("false_negatives", "fn"), ("false_positives", "fp")):
        cases = []
        for index, entry in enumerate(entries[key], start=1):
            shown_id = str(entry.get("sample_id", ""))
            patient = str(entry.get("patient_id") or "")
            raw = shown_to_raw.get(shown_id)
            picture, note = _case_picture(raw, manifest_rows, folders, (representatives or {}).get(raw or ""),
                                          annotations=annotations, finding=(findings or {}).get(raw or ""))
            score = entry.get("score")
            label = f"{prefix.upper()} {index}"
            figure = None
            if picture is not None:
                png = figs.thumbnail_figure(picture, f"{label} \u00b7 score {doc_model.fmt_value(score)}", note)
                caption = f"{label}: sample {shown_id}, score {doc_model.fmt_value(score)} ({note})"
                figure = doc_model.Figure(f"{prefix}_{index:02d}.png", png, caption, width=0.24)
            others = failures.other_studies(analysed, shown_id, patient) if analysed is not None else None
            cases.append(doc_model.Case(label, shown_id, patient, score, str(entry.get("label", truth[key])), note,
                                        figure, others))
        result[key] = cases
    return result
