"""Item 5: identifying header values never reach logs, run directories, predictions or reports.

A synthetic cohort carries canary strings in PatientName (family and given name), PatientID,
PatientBirthDate and InstitutionName. The fast tests index it and report on made-up predictions;
the slow ones push it through every command (``medrec run``: index, split, train, evaluate; then
index, split, train, score and report one by one) and search everything they leave behind: console output of each
command, every file name and every file's bytes (UTF-8, UTF-16 LE/BE, any case), and what is
packed inside files (gzip members, zip members, PNG text chunks, PDF streams, the PDF's text and
metadata).

Where the raw PatientID may appear (DESIGN.md): it is the join key of the data tables, so a
``.csv`` may hold it in its ``patient_id`` column (manifest, splits, predictions, unmatched
labels) and nowhere else; with ``--keep-identifiers`` a report holds it too. Name, birth date and
site appear nowhere, whatever the options.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import files_under

CANARY_NAME = "CANARYNAME"
CANARY_GIVEN = "CANARYGIVEN"
CANARY_PID = "CANARYPID"
CANARY_BIRTH = "19030507"
CANARY_SITE = "CANARYSITE"
BIRTH_FORMS = ["1903-05-07", "1903/05/07", "07.05.1903", "05/07/1903", "07/05/1903"]

NEVER = [CANARY_NAME, CANARY_GIVEN, CANARY_BIRTH, *BIRTH_FORMS, CANARY_SITE]
IDENTITY = {
    "patient_name": CANARY_NAME + "^" + CANARY_GIVEN + "{index:02d}",
    "patient_id": CANARY_PID + "{index:02d}",
    "birth_date": CANARY_BIRTH,
    "institution_name": CANARY_SITE,
}
_ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be")
_MAX_UNPACKED = 64 * 1024**2


def _synth(out: Path, patients: int, **kw) -> None:
    from medrec.synth import generate_cohort

    generate_cohort(out, kind="ct-lesion", patients=patients, seed=11, follow_up_fraction=0.0, identity=IDENTITY, **kw)
    dicoms = [p for p in out.rglob("*") if p.is_file() and p.suffix not in (".csv", ".json")]
    planted = b"".join(p.read_bytes()[:4096] for p in dicoms[:3])
    for canary in (CANARY_NAME, CANARY_GIVEN, CANARY_PID, CANARY_BIRTH, CANARY_SITE):
        assert canary.encode() in planted, f"synth did not write {canary} into the headers"


# --------------------------------------------------------------------------------------------
# the search: bytes in three encodings, any case, and what files pack inside them


def canaries_in(blob: bytes, canaries: list[str]) -> list[str]:
    """The canaries found in ``blob`` as UTF-8, UTF-16 LE or UTF-16 BE, ignoring ASCII case."""
    lowered = blob.lower()
    return [c for c in canaries if any(c.lower().encode(enc) in lowered for enc in _ENCODINGS)]


def _png_texts(data: bytes) -> Iterator[tuple[str, bytes]]:
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"tEXt" or kind == b"eXIf":
            yield kind.decode(), body
        elif kind == b"zTXt":
            keyword, _, rest = body.partition(b"\0")
            yield "zTXt", keyword + b"\0" + zlib.decompress(rest[1:])
        elif kind == b"iTXt":
            # keyword \0 flag method language \0 translated keyword \0 text
            keyword, _, rest = body.partition(b"\0")
            language, _, rest = rest[2:].partition(b"\0")
            translated, _, text = rest.partition(b"\0")
            text = zlib.decompress(text) if body[len(keyword) + 1 : len(keyword) + 2] == b"\x01" else text
            yield "iTXt", b"\0".join((keyword, language, translated, text))


def _pdf_views(data: bytes) -> Iterator[tuple[str, bytes]]:
    import pypdfium2 as pdfium

    for match in re.finditer(rb"stream\r?\n", data):
        start = match.end()
        end = data.find(b"endstream", start)
        if end < 0:
            continue
        try:
            yield "pdf stream", zlib.decompressobj().decompress(data[start:end], _MAX_UNPACKED)
        except zlib.error:
            pass
    pdf = pdfium.PdfDocument(data)
    try:
        text = "\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
        yield "pdf text", text.encode("utf-8")
        yield "pdf metadata", repr(pdf.get_metadata_dict()).encode("utf-8")
    finally:
        pdf.close()


def file_views(data: bytes) -> Iterator[tuple[str, bytes]]:
    """The file's bytes, then whatever it packs: gzip / zip members, PNG text chunks, PDF text."""
    yield "bytes", data
    if data[:2] == b"\x1f\x8b":
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as unpacked:
            yield "gunzip", unpacked.read(_MAX_UNPACKED)
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.infolist():
                yield f"zip:{member.filename}", member.filename.encode() + b"\0" + archive.read(member)[:_MAX_UNPACKED]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        yield from _png_texts(data)
    if data[:5] == b"%PDF-":
        yield from _pdf_views(data)


def _csv_outside_patient_id(path: Path, canaries: list[str]) -> list[str]:
    """Canaries in a CSV anywhere but its patient_id column."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = table.drop(columns=[c for c in table.columns if c == "patient_id"])
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    return canaries_in(buffer.getvalue().encode("utf-8"), canaries)


def leaks(folder: Path, canaries: list[str], *, join_key_csv: bool = False, skip: tuple[str, ...] = ()) -> list[str]:
    """Every (file, view, canary) under ``folder`` (names included).

    Args:
        join_key_csv: a CSV may hold the canaries in its ``patient_id`` column (the join key).
        skip: top-level names under ``folder`` not searched (the input scans).
    """
    found = []
    for path in files_under(folder):
        relative = path.relative_to(folder)
        if relative.parts[0] in skip:
            continue
        found += [f"{relative} (file name): {c}" for c in canaries_in(str(relative).encode(), canaries)]
        data = path.read_bytes()
        if join_key_csv and path.suffix == ".csv" and b"patient_id" in data.split(b"\n", 1)[0]:
            found += [f"{relative} (outside patient_id): {c}" for c in _csv_outside_patient_id(path, canaries)]
            continue
        for view, blob in file_views(data):
            found += [f"{relative} ({view}): {c}" for c in canaries_in(blob, canaries)]
    return found


def test_search_finds_canaries_however_they_are_packed(tmp_path: Path) -> None:
    """The search itself: a canary hidden in each supported way is found, a clean file is not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from reportlab.pdfgen import canvas

    (tmp_path / "clean.txt").write_text("nothing to see\n")
    (tmp_path / "utf16.txt").write_bytes(("x " + CANARY_SITE.lower()).encode("utf-16-le"))
    (tmp_path / "be.bin").write_bytes(b"\0\1" + CANARY_GIVEN.encode("utf-16-be"))
    (tmp_path / "log.gz").write_bytes(gzip.compress(f"born {BIRTH_FORMS[0]}".encode()))
    with zipfile.ZipFile(tmp_path / "cache.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.txt", CANARY_NAME * 3)
    figure = plt.figure(figsize=(1, 1))
    figure.savefig(tmp_path / "fig.png", metadata={"Title": CANARY_PID + "07"})
    plt.close(figure)
    pdf = canvas.Canvas(str(tmp_path / "doc.pdf"))  # reportlab compresses its page streams
    pdf.drawString(72, 72, "patient " + CANARY_NAME)
    pdf.save()
    assert CANARY_NAME.encode() not in (tmp_path / "doc.pdf").read_bytes()
    (tmp_path / ("x_" + CANARY_BIRTH + ".png")).write_bytes(b"")
    (tmp_path / "table.csv").write_text(f"sample_id,patient_id,error\ns1,{CANARY_PID}01,\ns2,x,{CANARY_PID}02 bad\n")
    found = leaks(tmp_path, [*NEVER, CANARY_PID], join_key_csv=True)
    for name in ("utf16.txt", "be.bin", "log.gz", "cache.npz", "fig.png", "doc.pdf", "(file name)", "table.csv"):
        assert any(name in line for line in found), (name, found)
    assert not any("clean.txt" in line for line in found)
    assert sum("table.csv" in line for line in found) == 1  # the patient_id column is the join key


# --------------------------------------------------------------------------------------------
# fast: index tables and a report on made-up predictions


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from medrec.cli import main

    root = tmp_path_factory.mktemp("phi")
    _synth(root / "scans", 4, image_size=24)
    index_out = root / "index"
    with pytest.raises(SystemExit) as done:
        main(["index", str(root / "scans"), "-o", str(index_out)])
    assert done.value.code in (0, None)
    manifest = pd.read_csv(index_out / "manifest.csv", dtype=str, keep_default_na=False)
    assert len(manifest) == 4, manifest
    rng = np.random.default_rng(0)
    predictions = pd.DataFrame(
        {
            "sample_id": manifest["sample_id"],
            "patient_id": manifest["patient_id"],
            "study_uid": manifest["study_uid"],
            "score": rng.random(len(manifest)).round(4),
            "label": ["positive", "negative", "positive", "negative"],
        }
    )
    predictions_csv = root / "predictions.csv"
    predictions.to_csv(predictions_csv, index=False)
    return {"root": root, "index": index_out, "predictions": predictions_csv}


def test_index_tables_hold_no_name_birth_date_or_site(indexed: dict[str, Path]) -> None:
    for name in ("manifest.csv", "qc.csv"):
        text = (indexed["index"] / name).read_bytes()
        for canary in NEVER:
            assert canary.encode() not in text, (name, canary)
    assert leaks(indexed["index"], NEVER) == []
    assert leaks(indexed["index"], [CANARY_PID], join_key_csv=True) == []


def _report(indexed: dict[str, Path], out: Path, run_cli, *extra: str) -> None:
    code, output = run_cli(
        ["report", indexed["predictions"], "-o", out, "--threshold", "0.5",
         "--manifest", indexed["index"] / "manifest.csv", *extra]
    )
    assert code == 0, output
    assert files_under(out), "report wrote nothing"
    assert canaries_in(output.encode(), [*NEVER, CANARY_PID]) == [], "console output"


def test_report_holds_no_canary(indexed: dict[str, Path], tmp_path: Path, run_cli) -> None:
    out = tmp_path / "report"
    _report(indexed, out, run_cli)
    assert leaks(out, [*NEVER, CANARY_PID]) == []


def test_report_keep_identifiers_still_hides_name_birth_date_site(
    indexed: dict[str, Path], tmp_path: Path, run_cli
) -> None:
    out = tmp_path / "report-ids"
    _report(indexed, out, run_cli, "--keep-identifiers")
    assert leaks(out, NEVER) == []
    assert CANARY_PID in (out / "report.json").read_text(), "--keep-identifiers should keep the raw patient ids"


# --------------------------------------------------------------------------------------------
# slow: every command of the pipeline on a tiny cohort

TINY = {
    "split": {"val": 0.34, "test": 0.34, "seed": 0, "check_pixels": False},
    "preprocessing": {"preset": "ct", "voxel_budget": 16 * 16 * 8, "augment": False},
    "model": {"name": "cnn_small", "kwargs": {"channels": [4, 8]}},
    "training": {"epochs": 2, "batch_size": 4, "device": "cpu", "cache_dir": "cache"},
}
RECIPE = {
    "name": "phi",
    "data": {"scans": "scans", "labels": "scans/labels.csv", "match_on": "study_uid"},
    **TINY,
    "evaluation": {"bootstrap": 200},
}


class Pipeline:
    """The work folder of the slow tests and the console output of each command run in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.outputs: dict[str, str] = {}

    def medrec(self, name: str, *args: object) -> str:
        # a wide console: a canary must not be hidden by a table cell wrapping in its middle
        env = {**os.environ, "COLUMNS": "400", "MEDREC_MAX_BYTES": "1GiB"}
        done = subprocess.run([sys.executable, "-m", "medrec", *map(str, args)], cwd=self.root, env=env,
                              capture_output=True, timeout=600)
        self.outputs[f"{name} stdout"] = done.stdout.decode("utf-8", "replace")
        self.outputs[f"{name} stderr"] = done.stderr.decode("utf-8", "replace")
        assert done.returncode == 0, (name, done.stderr.decode()[-3000:])
        return self.outputs[f"{name} stderr"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    root = tmp_path_factory.mktemp("phi-pipeline")
    _synth(root / "scans", 12, image_size=16, slice_thickness=10.0, lesion_diameter_mm=(60.0, 80.0),
           contrast=(150.0, 200.0))
    work = Pipeline(root)
    (root / "recipe.yaml").write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    work.medrec("run", "run", "recipe.yaml", "-o", "wf")

    work.medrec("index", "index", "scans", "--labels", "scans/labels.csv", "-o", "index")
    work.medrec("split", "split", "index/manifest.csv", "-o", "splits.csv", "--val", "0.34", "--test", "0.34",
                "--no-pixel-check")
    (root / "train.yaml").write_text(
        yaml.safe_dump({"data": {"manifest": "index/manifest.csv", "splits": "splits.csv"}, **TINY}), encoding="utf-8")
    work.medrec("train", "train", "train.yaml", "-o", "run")
    # one test study loses half a slice: its failure travels through score's error column and logs
    splits = pd.read_csv(root / "splits.csv", dtype=str)
    manifest = pd.read_csv(root / "index" / "manifest.csv", dtype=str, keep_default_na=False)
    broken = splits.loc[splits["split"] == "test", "sample_id"].iloc[0]
    from medrec.manifest import series_files

    victim = Path(series_files(manifest.set_index("sample_id").loc[broken].to_dict() | {"sample_id": broken})[3])
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])

    work.medrec("score", "score", "run", "index/manifest.csv", "-o", "scored/predictions.csv")
    work.medrec("score folder", "score", "run", "scans", "-o", "folder/patients.csv", "--level", "patient",
                "--explain", "folder/explain")
    work.medrec("report", "report", "scored/predictions.csv", "-o", "report", "--run", "run",
                "--bootstrap", "200")
    work.medrec("report ids", "report", "scored/predictions.csv", "-o", "report-ids", "--run", "run",
                "--bootstrap", "200", "--keep-identifiers")
    predictions = pd.read_csv(root / "scored" / "predictions.csv", dtype=str, keep_default_na=False)
    assert (predictions["error"] != "").sum() == 1, "the damaged study should fail, alone"
    return work


@pytest.mark.slow
def test_pipeline_wrote_what_is_searched(pipeline: Pipeline) -> None:
    root = pipeline.root
    for name in ("wf/workflow.json", "wf/train.log", "wf/model.safetensors", "wf/evaluation/report.pdf",
                 "run/train.log", "run/model.json", "run/config.yaml", "run/model.safetensors",
                 "scored/predictions.csv.json", "folder/patients.csv", "report/report.pdf", "report-ids/report.html",
                 "wf/evaluation/report.json"):
        assert (root / name).is_file(), name
    assert list((root / "cache").iterdir()), "the training cache should be searched too"
    assert list((root / "folder" / "explain").glob("*.png")), "Grad-CAM maps should be searched too"
    assert list((root / "report" / "figures").glob("*.png"))


@pytest.mark.slow
def test_no_name_birth_date_or_site_anywhere(pipeline: Pipeline) -> None:
    assert leaks(pipeline.root, NEVER, skip=("scans",)) == []
    for name, text in pipeline.outputs.items():
        assert canaries_in(text.encode(), NEVER) == [], name


@pytest.mark.slow
def test_raw_patient_id_only_in_the_join_key_column(pipeline: Pipeline) -> None:
    root = pipeline.root
    assert leaks(root, [CANARY_PID], join_key_csv=True, skip=("scans", "report-ids")) == []
    for name, text in pipeline.outputs.items():
        assert canaries_in(text.encode(), [CANARY_PID]) == [], name
    # the join key is really there: the tables stay linkable to the source
    for table in ("index/manifest.csv", "splits.csv", "scored/predictions.csv", "wf/evaluation/predictions.csv"):
        assert CANARY_PID in (root / table).read_text(), table


@pytest.mark.slow
def test_reports_use_pseudonyms_unless_keep_identifiers(pipeline: Pipeline) -> None:
    root = pipeline.root
    for report in ("report", "wf/evaluation"):
        assert leaks(root / report, [CANARY_PID], skip=("predictions.csv", "predictions.csv.json")) == [], report
        assert re.search(r"P-[0-9a-f]{8}", (root / report / "report.html").read_text()), report
    kept = root / "report-ids"
    assert leaks(kept, NEVER) == []
    for name in ("report.json", "report.html"):
        assert CANARY_PID in (kept / name).read_text(), f"--keep-identifiers should keep raw patient ids in {name}"
