"""The index stage end to end: walk, read headers, build series, select, label, write."""

from __future__ import annotations

import fnmatch
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medrec.atomicio import write_csv
from medrec.errors import InputError
from medrec.index.headers import DicomHeader, ReadOptions, read_headers, resolve_workers, walk_files
from medrec.index.labels import LabelMatch, LabelsTable, attribute_columns, match_labels, read_labels
from medrec.index.nifti import NiftiSample
from medrec.index.problems import FileProblem
from medrec.index.selection import SelectionRules, select_candidates
from medrec.index.series import Candidate, build_dicom_candidates
from medrec.index.summary import _summary
from medrec.manifest import MANIFEST_COLUMNS, QC_COLUMNS, write_manifest, write_qc

if TYPE_CHECKING:
    from medrec.annotations import Annotations

QC_EXTRA_COLUMNS: tuple[str, ...] = ("code",)
MATCH_ON_CHOICES: tuple[str, ...] = ("patient_id", "study_uid", "accession", "path")


@dataclass(frozen=True)
class IndexResult:
    """What :func:`index_folder` wrote: the manifest, the qc table and a summary of counts."""

    manifest: pd.DataFrame
    qc: pd.DataFrame
    summary: dict


def index_folder(
    scans: str | Path,
    out_dir: str | Path,
    labels: str | Path | None = None,
    match_on: str | None = None,
    rules: SelectionRules | None = None,
    workers: int | None = None,
    *,
    label_column: str = "label",
    check_nifti_values: bool = True,
    show_progress: bool = True,
    lesions: str | Path | None = None,
    extra_problems: Sequence[FileProblem] = (),
) -> IndexResult:
    """Index a folder of DICOM and NIfTI files; write ``out_dir/manifest.csv`` and ``out_dir/qc.csv``.

    Args:
        scans: the scan folder (any nesting, any file names) or a single file.
        out_dir: where manifest.csv, qc.csv (and labels_unmatched.csv) are written.
        labels: optional CSV/TSV with a label column and a patient_id / study_uid / accession / path column.
        match_on: the labels key; ``None`` picks the column that matches most samples.
        rules: geometry and series-selection rules (defaults: :class:`SelectionRules`).
        workers: header-reading processes; ``None`` is serial for small inputs, parallel for large.
        label_column: name of the labels column.
        check_nifti_values: scan floating-point NIfTI voxels for NaN / inf.
        show_progress: show a progress bar while reading headers.
        lesions: optional lesion table (``study_uid`` / ``series_uid``, ``center_x/y/z`` LPS mm,
            ``diameter_mm``). With it, or with a ``mask`` column in ``labels``, the manifest gains an
            ``annotation`` column (:func:`annotation_kinds`), the summary counts the annotated samples
            and ``out_dir/annotations_qc.csv`` lists every annotation that could not be used.
        extra_problems: qc rows found before indexing (e.g. series a PACS could not deliver).

    Returns:
        :class:`IndexResult` with the manifest and qc frames and a summary dict.

    Raises:
        InputError: ``scans`` does not exist or holds no files.
        LabelsError: the labels file is unusable (missing label or key column).
    """
    root = Path(scans).absolute()
    if not root.exists():
        raise InputError(f"{root}: scan folder not found; pass a folder of DICOM/NIfTI files")
    if match_on is not None and match_on not in MATCH_ON_CHOICES:
        raise InputError(f"match_on must be one of {', '.join(MATCH_ON_CHOICES)}, got {match_on!r}")
    rules = rules or SelectionRules()
    out = Path(out_dir).absolute()
    # read the labels first: a broken labels file should fail before minutes of header reading
    table: LabelsTable | None = read_labels(labels, label_column) if labels is not None else None
    if lesions is not None:  # likewise a lesion table
        from medrec.annotations import check_lesion_table

        check_lesion_table(lesions)

    outputs = [out / name for name in ("manifest.csv", "qc.csv", "labels_unmatched.csv", "annotations_qc.csv")]
    skip = [out, *outputs] + [Path(f).absolute() for f in (labels, lesions) if f is not None]
    paths, junk = walk_files(root, skip)
    if not paths:
        skipped = f" (only {junk} OS junk file{'' if junk == 1 else 's'}: .DS_Store, Thumbs.db, ...)" if junk else ""
        raise InputError(f"{root}: no files found{skipped}; point SCANS at the folder holding the scans")
    scans_root = root if root.is_dir() else root.parent
    paths, pattern_problems = filter_by_patterns(paths, scans_root, rules.include, rules.exclude)
    paths, mask_problems = _leave_out_masks(paths, table)
    pattern_problems += mask_problems
    options = ReadOptions(check_nifti_values=check_nifti_values, scans_root=str(scans_root))
    results = _read_with_progress(paths, options, workers, show_progress)

    headers = [r for r in results if isinstance(r, DicomHeader)]
    niftis = [r for r in results if isinstance(r, NiftiSample)]
    problems: list[FileProblem] = [*extra_problems, *pattern_problems]
    problems += [r for r in results if isinstance(r, FileProblem)]

    dicom_candidates, series_problems, n_series = build_dicom_candidates(headers, rules)
    problems.extend(series_problems)
    candidates = dicom_candidates + [_nifti_candidate(sample) for sample in niftis]
    kept, selection_problems = select_candidates(candidates, rules)
    problems.extend(selection_problems)

    label_match = None
    if table is not None:
        kept, label_problems, label_match = _apply_labels(kept, table, scans_root, match_on)
        problems.extend(label_problems)

    manifest = pd.DataFrame([c.manifest_row() for c in kept], columns=list(MANIFEST_COLUMNS))
    if label_match is not None and table is not None:
        manifest = _with_attributes(manifest, label_match, attribute_columns(table))
    manifest = manifest.sort_values(["patient_id", "study_uid", "sample_id"], kind="stable").reset_index(drop=True)
    qc = pd.DataFrame(
        [{"path": p.path, "series_uid": p.series_uid, "reason": p.reason, "code": p.code} for p in problems],
        columns=list(QC_COLUMNS) + list(QC_EXTRA_COLUMNS),
    )
    qc = qc.sort_values(["path"], kind="stable").reset_index(drop=True)

    annotations = None
    has_masks = table is not None and "mask" in table.frame.columns
    if lesions is not None or has_masks:
        manifest, annotations = _annotate(manifest, lesions, table.path if has_masks else None)

    write_manifest(manifest, out / "manifest.csv")
    write_qc(qc, out / "qc.csv")
    annotation_summary = None
    if annotations is not None:
        annotation_summary = _annotation_summary(manifest, annotations, lesions, table, out)
    else:  # an earlier run's list does not describe this index
        (out / "annotations_qc.csv").unlink(missing_ok=True)
    summary = _summary(paths, junk, headers, niftis, n_series, manifest, qc, label_match, table, out)
    if annotation_summary is not None:
        summary["annotations"] = annotation_summary
    if label_match is not None and table is not None:
        write_csv(out / "labels_unmatched.csv", label_match.unmatched_rows)
    else:  # an earlier run's list does not describe this index
        (out / "labels_unmatched.csv").unlink(missing_ok=True)
    return IndexResult(manifest=manifest, qc=qc, summary=summary)


def _leave_out_masks(paths: list[str], table: LabelsTable | None) -> tuple[list[str], list[FileProblem]]:
    """Lesion masks that the labels file's ``mask`` column names are annotations, not scans (qc.csv says so)."""
    if table is None or "mask" not in table.frame.columns:
        return paths, []
    base = table.path.absolute().parent
    masks = {os.path.realpath(base / cell) for cell in table.frame["mask"].astype(str).str.strip() if cell}
    kept: list[str] = []
    problems: list[FileProblem] = []
    for path in paths:
        if os.path.realpath(path) in masks:
            problems.append(FileProblem(path, "lesion_mask", f"lesion mask named in {table.path.name}'s mask column"))
        else:
            kept.append(path)
    return kept, problems


def annotation_kinds(annotations: Annotations, sample_ids: Sequence[str]) -> list[str]:
    """What dense target each sample carries: ``lesions`` (lesion table rows), ``mask``,
    ``lesions+mask``, ``lesion-free`` (a negative study, or an empty mask cell), ``label-only`` (a
    positive without a usable annotation) or empty (no label). Masks are checked against their
    image when a model trains (the index reads no pixels)."""
    kinds = []
    for sample_id in sample_ids:
        table = bool(annotations.lesions.get(sample_id))
        mask = annotations.masks.get(sample_id) is not None
        if table or mask:
            kinds.append("lesions+mask" if table and mask else "lesions" if table else "mask")
        elif sample_id in annotations.lesion_free:
            kinds.append("lesion-free")
        elif sample_id in annotations.positives:
            kinds.append("label-only")
        else:
            kinds.append("")
    return kinds


def _annotate(
    manifest: pd.DataFrame, lesions: str | Path | None, masks: Path | None
) -> tuple[pd.DataFrame, Annotations]:
    """Match the lesion table / mask column to the samples; the manifest gains the kind per sample."""
    from medrec.annotations import read_annotations

    annotations = read_annotations(manifest, lesions=lesions, masks=masks)
    manifest = manifest.assign(annotation=annotation_kinds(annotations, list(manifest["sample_id"].astype(str))))
    return manifest, annotations


def _annotation_summary(manifest: pd.DataFrame, annotations: Annotations, lesions: str | Path | None,
                        table: LabelsTable | None, out: Path) -> dict:
    """Write ``annotations_qc.csv`` and count the annotated samples for the summary."""
    from medrec.annotations import write_problems

    write_problems(out / "annotations_qc.csv", annotations)
    kinds = Counter(manifest["annotation"])
    masks = table.path if table is not None and "mask" in table.frame.columns else None
    summary = {
        "lesion_table": str(Path(lesions).absolute()) if lesions is not None else None,
        "masks_file": str(masks) if masks is not None else None,
        "samples_annotated": int(kinds["lesions"] + kinds["mask"] + kinds["lesions+mask"]),
        "samples_lesion_free": int(kinds["lesion-free"]),
        "positives_label_only": int(kinds["label-only"]),
        "lesion_rows_used": int(sum(len(found) for found in annotations.lesions.values())),
        "problems": len(annotations.problems),
        "problems_file": str(out / "annotations_qc.csv"),
    }
    return summary


def filter_by_patterns(
    paths: list[str], scans_root: Path, include: Sequence[str], exclude: Sequence[str]
) -> tuple[list[str], list[FileProblem]]:
    """Keep the files that match an ``include`` pattern (when any) and no ``exclude`` pattern.

    A pattern matches the file name or the path relative to ``scans_root`` (``fnmatch`` rules, so
    ``*`` also crosses folder separators). Files left out are returned as qc problems.
    """
    if not include and not exclude:
        return paths, []
    kept: list[str] = []
    problems: list[FileProblem] = []
    for path in paths:
        name = Path(path).name
        try:
            relative = Path(path).relative_to(scans_root).as_posix()
        except ValueError:
            relative = name
        hit = _first_match(exclude, name, relative)
        if hit is not None:
            problems.append(FileProblem(path, "excluded_by_pattern", f"excluded by pattern {hit!r}"))
        elif include and _first_match(include, name, relative) is None:
            problems.append(FileProblem(path, "not_included",
                                        f"matches none of the include patterns {', '.join(map(repr, include))}"))
        else:
            kept.append(path)
    return kept, problems


def _first_match(patterns: Sequence[str], name: str, relative: str) -> str | None:
    """The first pattern that matches the file name or its relative path (``fnmatch`` rules), else None."""
    return next((p for p in patterns if fnmatch.fnmatch(name, p) or fnmatch.fnmatch(relative, p)), None)


def _read_with_progress(paths: list[str], options: ReadOptions, workers: int | None, show: bool) -> list[object]:
    if not show or not paths:
        return read_headers(paths, options, workers)
    from medrec.console import progress

    n_workers = resolve_workers(workers, len(paths))
    status = f"{n_workers} processes" if n_workers > 1 else "serial"
    with progress() as bar:
        task = bar.add_task("Reading headers", total=len(paths), status=status)
        return read_headers(paths, options, workers, on_progress=lambda n: bar.advance(task, n))


def _nifti_candidate(sample: NiftiSample) -> Candidate:
    cols, rows, n_slices = sample.shape[0], sample.shape[1], sample.shape[2]
    return Candidate(
        sample_key=sample.relative_path,
        series_uid=sample.study_uid,
        study_uid=sample.study_uid,
        patient_id=sample.patient_id,
        accession="",
        modality=sample.modality,
        format="nifti",
        path=sample.path,
        files=[],
        n_slices=n_slices,
        rows=rows,
        cols=cols,
        spacing_x=sample.spacing[0],
        spacing_y=sample.spacing[1],
        spacing_z=sample.spacing[2],
        slice_thickness=None,
        orientation=sample.orientation,
        manufacturer=sample.manufacturer,
        sex=sample.sex,
        age=sample.age,
        series_description=sample.series_description,
        warnings=list(sample.warnings),
    )


def _apply_labels(
    kept: list[Candidate], table: LabelsTable, scans_root: Path, match_on: str | None
) -> tuple[list[Candidate], list[FileProblem], LabelMatch]:
    rows = []
    for candidate in kept:
        row = candidate.manifest_row()
        row["_files"] = candidate.files
        rows.append(row)
    result = match_labels(table, rows, scans_root, match_on)
    problems: list[FileProblem] = []
    labelled: list[Candidate] = []
    for candidate in kept:
        if candidate.sample_id in result.conflicts:
            problems.extend(candidate.problems("label_conflict", result.conflicts[candidate.sample_id]))
            continue
        candidate.label = result.labels.get(candidate.sample_id, "")
        if result.match_on == "path" and candidate.format == "nifti":
            # NIfTI has no UIDs: the labels row's identity replaces the placeholders (sample_id is kept)
            candidate.patient_id = result.patient_ids.get(candidate.sample_id, candidate.patient_id)
            candidate.study_uid = result.study_uids.get(candidate.sample_id, candidate.study_uid)
            candidate.series_uid = result.series_uids.get(candidate.sample_id, candidate.series_uid)
        labelled.append(candidate)
    return labelled, problems, result


def _with_attributes(manifest: pd.DataFrame, match: LabelMatch, columns: list[str]) -> pd.DataFrame:
    """The labels file's other columns (``lesion_type``, ``site``, ...) as manifest columns, for subgroups.

    A column the manifest already has is filled only where the scan left it empty (a NIfTI file's
    ``sex`` or ``age``); identifiers and geometry are never taken from a labels file.
    """
    protected = {"sample_id", "patient_id", "study_uid", "series_uid", "accession", "modality", "format", "path",
                 "files", "label", "n_slices", "rows", "cols", "spacing_x", "spacing_y", "spacing_z",
                 "slice_thickness", "orientation", "selection", "warnings"}
    manifest = manifest.copy()
    ids = manifest["sample_id"].astype(str)
    for column in columns:
        if column in protected:
            continue
        values = ids.map(lambda sample_id, column=column: match.attributes.get(sample_id, {}).get(column, ""))
        if column in manifest.columns:
            empty = manifest[column].isna() | manifest[column].astype(str).str.strip().eq("")
            if column == "age":
                values = pd.to_numeric(values, errors="coerce")
            manifest.loc[empty, column] = values[empty]
        else:
            manifest[column] = values
    return manifest
