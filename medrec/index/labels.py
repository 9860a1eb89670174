"""Labels files: read a CSV/TSV, find its key column, match rows to samples.

* The delimiter is sniffed (comma, tab, semicolon, pipe); ``.tsv`` falls back to tab.
* The key is ``patient_id``, ``study_uid``, ``accession`` or ``path`` (common spellings such as
  ``PatientID`` or ``StudyInstanceUID`` are recognised). Without ``match_on`` every key column
  present is tried and the one matching most samples wins (ties: study_uid, accession, path,
  patient_id: the most specific first).
* ``path`` values may be absolute, relative to the scan folder or relative to the labels file;
  a sample matches through its file, its series folder or any of its DICOM files. Bare file
  names match when they are unique among the samples.
* A sample whose matching rows disagree gets no label and is excluded (qc code
  ``label_conflict``, listing the labels); a sample no row matches stays in the manifest with
  label ''; rows that match no sample are counted and written to ``labels_unmatched.csv``.
* A row matched by path may also carry the sample's identity: its ``patient_id``, ``study_uid`` and
  ``series_uid`` cells are collected per sample (NIfTI files have no UIDs of their own).
* Samples read back from a table (a manifest CSV, a predictions file) are matched with
  :func:`match_samples`, which tries only the keys those samples have values for.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medrec.errors import LabelsError
from medrec.manifest import series_files

MATCH_KEYS: tuple[str, ...] = ("study_uid", "accession", "path", "patient_id")  # most specific first
KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "patient_id": ("patient_id", "patientid", "patient", "subject_id", "subject", "case_id", "pid"),
    "study_uid": ("study_uid", "studyinstanceuid", "study_instance_uid", "studyuid", "study_id"),
    "accession": ("accession", "accessionnumber", "accession_number", "accession_no", "acc"),
    "path": ("path", "file", "filename", "file_name", "filepath", "file_path", "image", "image_path", "folder"),
}
SERIES_UID_ALIASES: tuple[str, ...] = ("series_uid", "seriesinstanceuid", "series_instance_uid", "seriesuid")


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.strip().lower())


@dataclass
class LabelsTable:
    """A labels file read as strings, with its key columns found."""

    path: Path
    frame: pd.DataFrame
    label_column: str
    key_columns: dict[str, str]


@dataclass
class LabelMatch:
    """Outcome of matching a labels table to samples."""

    match_on: str
    labels: dict[str, str] = field(default_factory=dict)  # sample_id -> label
    conflicts: dict[str, str] = field(default_factory=dict)  # sample_id -> reason
    patient_ids: dict[str, str] = field(default_factory=dict)  # sample_id -> patient_id from the labels
    study_uids: dict[str, str] = field(default_factory=dict)  # sample_id -> study_uid, when its rows agree on one
    series_uids: dict[str, str] = field(default_factory=dict)  # sample_id -> series_uid, when its rows agree on one
    # sample_id -> {column: value} for the labels file's other columns (lesion_type, site, ...), when its rows agree
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    unmatched_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    empty_label_rows: int = 0


def read_labels(path: str | Path, label_column: str = "label") -> LabelsTable:
    """Read a labels CSV/TSV with every value kept as a string.

    Raises:
        LabelsError: the file is missing or unreadable, has no label column or no key column.
    """
    source = Path(path)
    if not source.is_file():
        raise LabelsError(f"{source}: labels file not found; pass an existing CSV/TSV with --labels")
    try:
        sample = source.read_text(encoding="utf-8-sig", errors="replace")[:65536]
    except OSError as e:
        raise LabelsError(f"{source}: cannot read labels file ({e.strerror})") from e
    delimiter = sniff_delimiter(sample, source)
    try:
        frame = pd.read_csv(
            source, sep=delimiter, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise LabelsError(f"{source}: not a readable CSV/TSV labels file ({' '.join(str(e).split())})") from e
    frame.columns = [str(c).strip() for c in frame.columns]
    found = ", ".join(frame.columns) if len(frame.columns) else "(none)"
    by_normal = {_normalise(c): c for c in frame.columns}
    actual_label = by_normal.get(_normalise(label_column))
    if actual_label is None:
        raise LabelsError(
            f"{source}: no '{label_column}' column; columns found: {found}. Rename the column holding the "
            f"labels to '{label_column}' or pass --label-column NAME"
        )
    key_columns: dict[str, str] = {}
    for key, aliases in KEY_ALIASES.items():
        for alias in aliases:
            column = by_normal.get(_normalise(alias))
            if column is not None and column != actual_label:
                key_columns[key] = column
                break
    if not key_columns:
        raise LabelsError(
            f"{source}: no column to match samples on; columns found: {found}. Add one of "
            f"patient_id, study_uid, accession or path"
        )
    frame = frame.apply(lambda column: column.str.strip())
    return LabelsTable(source, frame, actual_label, key_columns)


def find_column(frame: pd.DataFrame, aliases: Sequence[str]) -> str | None:
    """The first column of ``frame`` whose normalised name is one of ``aliases`` (None when absent)."""
    by_normal = {_normalise(str(c)): str(c) for c in frame.columns}
    for alias in aliases:
        column = by_normal.get(_normalise(alias))
        if column is not None:
            return column
    return None


def sniff_delimiter(sample: str, source: Path) -> str:
    """The delimiter of a small table (comma, tab, semicolon or pipe); by extension when unsure."""
    fallback = "\t" if source.suffix.lower() in (".tsv", ".tab") else ","
    lines = [line for line in sample.splitlines() if line.strip()][:50]
    if not lines:
        return fallback
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",\t;|").delimiter
    except csv.Error:
        return fallback


def _sample_keys(row: dict, key: str) -> list[str]:
    """The values under which a manifest row can be found for one key kind."""
    if key != "path":
        value = str(row.get(key, "") or "").strip()
        return [value] if value else []
    values = [row["path"]]
    if row.get("format") == "dicom":
        values.extend(row.get("_files", []))
    return [Path(value).absolute().as_posix() for value in values]


def _row_paths(value: str, scans_root: Path, labels_dir: Path) -> list[str]:
    """Absolute interpretations of a path cell (absolute, or relative to the scans / labels folder)."""
    if not value:
        return []
    candidate = Path(value)
    if candidate.is_absolute():
        return [candidate.absolute().as_posix()]
    return [(scans_root / candidate).absolute().as_posix(), (labels_dir / candidate).absolute().as_posix()]


def _normalise_path(text: str) -> str:
    return Path(text).resolve().as_posix() if text else text


def match_labels(
    table: LabelsTable, rows: Sequence[dict], scans_root: Path, match_on: str | None = None
) -> LabelMatch:
    """Match the labels table to manifest rows.

    Args:
        table: the labels file.
        rows: manifest rows (dicts with sample_id, patient_id, study_uid, accession, path, format,
            and ``_files``, the DICOM file list).
        scans_root: the indexed folder (relative path cells are resolved against it).
        match_on: key kind, or None to auto-detect.

    Raises:
        LabelsError: ``match_on`` names a key the file has no column for.
    """
    if match_on is not None and match_on not in table.key_columns:
        available = ", ".join(f"{k} (column '{c}')" for k, c in table.key_columns.items())
        raise LabelsError(
            f"{table.path}: --match-on {match_on} but the file has no {match_on} column; "
            f"keys available: {available}"
        )
    candidates = [match_on] if match_on else [k for k in MATCH_KEYS if k in table.key_columns]
    best: LabelMatch | None = None
    for key in candidates:
        result = _match_on_key(table, rows, scans_root, key)
        matched = len(result.labels) + len(result.conflicts)
        if best is None or matched > len(best.labels) + len(best.conflicts):
            best = result
    if best is None:
        raise LabelsError(f"{table.path}: no column to match samples on")
    return best


def _match_on_key(table: LabelsTable, rows: Sequence[dict], scans_root: Path, key: str) -> LabelMatch:
    column = table.key_columns[key]
    labels_dir = table.path.parent.absolute()
    sample_index: dict[str, set[str]] = defaultdict(set)
    basename_index: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        for value in _sample_keys(row, key):
            normal = _normalise_path(value) if key == "path" else value
            sample_index[normal].add(row["sample_id"])
            if key == "path":
                basename_index[Path(value).name].add(row["sample_id"])

    found: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))  # sample -> label -> rows
    patient_of: dict[str, str] = {}
    unmatched: list[int] = []
    empty_labels = 0
    patient_column = table.key_columns.get("patient_id")
    # identity cells are only trusted when the row names the sample itself (its file or folder)
    identity_columns = {
        "study_uid": table.key_columns.get("study_uid") if key == "path" else None,
        "series_uid": find_column(table.frame, SERIES_UID_ALIASES) if key == "path" else None,
    }
    identities: dict[str, dict[str, set[str]]] = {"study_uid": defaultdict(set), "series_uid": defaultdict(set)}
    for index, (value, label) in enumerate(zip(table.frame[column], table.frame[table.label_column], strict=True)):
        if not label:
            empty_labels += 1
            continue
        hits: set[str] = set()
        if key == "path":
            for text in _row_paths(value, scans_root, labels_dir):
                hits |= sample_index.get(_normalise_path(text), set())
            if not hits and value and "/" not in value and "\\" not in value:
                named = basename_index.get(value, set())
                if len(named) == 1:
                    hits = set(named)
        elif value:
            hits = sample_index.get(value, set())
        if not hits:
            unmatched.append(index)
            continue
        for sample_id in hits:
            found[sample_id][label].append(index + 2)  # +2: header line and 1-based line numbers
            if patient_column and table.frame[patient_column].iat[index]:
                patient_of[sample_id] = table.frame[patient_column].iat[index]
            for name, identity_column in identity_columns.items():
                if identity_column and table.frame[identity_column].iat[index]:
                    identities[name][sample_id].add(table.frame[identity_column].iat[index])

    result = LabelMatch(match_on=key, empty_label_rows=empty_labels, patient_ids=patient_of)
    result.attributes = _attributes(table, found)
    result.study_uids = _unique_values(identities["study_uid"])
    result.series_uids = _unique_values(identities["series_uid"])
    for sample_id, by_label in found.items():
        if len(by_label) == 1:
            result.labels[sample_id] = next(iter(by_label))
        else:
            listed = ", ".join(
                f"'{label}' (line {', '.join(map(str, lines))})" for label, lines in sorted(by_label.items()))
            result.conflicts[sample_id] = f"label conflict: {table.path.name} gives {listed} for this sample by {key}"
    unmatched_frame = table.frame.iloc[unmatched].copy()
    unmatched_frame.insert(0, "line", [i + 2 for i in unmatched])
    result.unmatched_rows = unmatched_frame
    return result


def _unique_values(values_by_sample: Mapping[str, set[str]]) -> dict[str, str]:
    """The samples given exactly one value (an identity two label rows disagree on is not trusted)."""
    return {sample: next(iter(values)) for sample, values in values_by_sample.items() if len(values) == 1}


# Columns of a labels file that are never carried into the manifest as attributes.
_NOT_ATTRIBUTES = frozenset({"mask", "files", "format", "sample_id", "series_uid"})


def attribute_columns(table: LabelsTable) -> list[str]:
    """The labels file's columns other than its keys, label and mask (e.g. ``lesion_type``, ``site``)."""
    taken = {*table.key_columns.values(), table.label_column}
    return [c for c in table.frame.columns if c not in taken and _normalise(c) not in _NOT_ATTRIBUTES]


def _attributes(table: LabelsTable, found: Mapping[str, Mapping[str, list[int]]]) -> dict[str, dict[str, str]]:
    """Each matched sample's values of the attribute columns, where all its labels rows agree on one."""
    columns = attribute_columns(table)
    out: dict[str, dict[str, str]] = {}
    if not columns:
        return out
    for sample_id, by_label in found.items():
        lines = [line for rows in by_label.values() for line in rows]
        values = {}
        for column in columns:
            cells = {str(table.frame[column].iat[line - 2]).strip() for line in lines} - {""}
            if len(cells) == 1:
                values[column] = next(iter(cells))
        if values:
            out[sample_id] = values
    return out


def match_samples(
    table: LabelsTable, samples: pd.DataFrame, match_on: str | None = None, scans_root: Path | None = None
) -> LabelMatch:
    """Match a labels table to samples read back from a table (a manifest CSV, or prediction rows).

    The indexer matches the samples it has just built (:func:`match_labels`); here they come from a
    CSV: a DICOM sample's files are read from its ``files`` column, and only the keys the samples
    have values for are tried (prediction rows carry ``patient_id`` and ``study_uid`` but no path).

    Args:
        table: the labels file.
        samples: one row per sample with ``sample_id`` and any of ``patient_id``, ``study_uid``,
            ``accession``, ``path`` (plus ``format`` and ``files`` for DICOM series).
        match_on: key kind, or None to pick the one that matches most samples.
        scans_root: the folder relative path cells are resolved against (default: the samples'
            common folder; the labels file's folder is always tried too).

    Returns:
        The :class:`LabelMatch` (labels and conflicts by ``sample_id``).

    Raises:
        LabelsError: ``match_on`` names a key the labels file or the samples lack, or they share none.
    """
    available = [key for key in MATCH_KEYS if key in samples.columns
                 and samples[key].astype(str).str.strip().ne("").any()]
    if match_on is not None and match_on not in available:
        raise LabelsError(
            f"{table.path}: cannot match by {match_on}: the samples have no {match_on} values (they have "
            f"{', '.join(available) or 'no key'})"
        )
    shared = [key for key in available if key in table.key_columns]
    if match_on is None and not shared:
        raise LabelsError(
            f"{table.path}: its key column(s) {', '.join(table.key_columns)} are not known for the samples "
            f"(they have {', '.join(available) or 'no key'})"
        )
    rows = []
    for record in samples.to_dict("records"):
        row = {key: "" if value is None or (isinstance(value, float) and value != value) else value
               for key, value in record.items()}
        row["sample_id"] = str(row["sample_id"])
        row["_files"] = series_files(row) if row.get("format") == "dicom" else []
        rows.append(row)
    if scans_root is None:
        paths = [str(row["path"]) for row in rows if row.get("path")]
        scans_root = Path(os.path.commonpath(paths)) if paths else table.path.parent
        if scans_root.is_file():
            scans_root = scans_root.parent
    if match_on is not None:
        return match_labels(table, rows, scans_root, match_on)
    results = [match_labels(table, rows, scans_root, key) for key in shared]
    return max(results, key=lambda result: len(result.labels) + len(result.conflicts))  # ties: the first key
