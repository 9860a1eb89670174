from __future__ import annotations

import pytest

from medrec.errors import OutputError
from medrec.score.writer import PredictionsWriter, format_row, read_rows, read_sidecar, write_sidecar

COLUMNS = ["sample_id", "score", "error"]


def test_header_written_once_and_rows_round_trip(tmp_path):
    path = tmp_path / "p.csv"
    writer = PredictionsWriter(path, COLUMNS)
    assert writer.start() == {}
    writer.append([{"sample_id": "a", "score": 0.1, "error": ""}, {"sample_id": "b", "score": None,
                                                                    "error": "bad, file\nline two"}])
    again = PredictionsWriter(path, COLUMNS).start()
    assert set(again) == {"a", "b"}
    text = path.read_text()
    assert text.count("sample_id") == 1
    assert len(text.splitlines()) == 3  # the error's newline was collapsed
    columns, rows = read_rows(path)
    assert columns == COLUMNS
    assert float(rows[0]["score"]) == 0.1
    assert rows[1]["error"] == "bad, file line two"


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    path = tmp_path / "p.csv"
    writer = PredictionsWriter(path, COLUMNS)
    writer.start()
    writer.append([{"sample_id": "a", "score": 0.5, "error": ""}])
    with open(path, "a") as handle:  # what a SIGKILL during a write leaves behind
        handle.write("b,0.7")
    done = PredictionsWriter(path, COLUMNS).start()
    assert list(done) == ["a"]
    writer.append([{"sample_id": "b", "score": 0.7, "error": ""}])
    assert path.read_text().splitlines() == ["sample_id,score,error", "a,0.5,", "b,0.7,"]


def test_retry_errors_drops_error_rows(tmp_path):
    path = tmp_path / "p.csv"
    writer = PredictionsWriter(path, COLUMNS)
    writer.start()
    writer.append([{"sample_id": "a", "score": 0.5, "error": ""}, {"sample_id": "b", "error": "unreadable"}])
    assert set(PredictionsWriter(path, COLUMNS).start()) == {"a", "b"}
    assert set(PredictionsWriter(path, COLUMNS).start(retry_errors=True)) == {"a"}
    assert [row["sample_id"] for row in read_rows(path)[1]] == ["a"]


def test_other_header_is_refused(tmp_path):
    path = tmp_path / "p.csv"
    writer = PredictionsWriter(path, COLUMNS)
    writer.start()
    writer.append([{"sample_id": "a", "score": 0.5, "error": ""}])
    with pytest.raises(OutputError, match="--overwrite"):
        PredictionsWriter(path, COLUMNS + ["uncertainty"]).start()


def test_float_precision_round_trips():
    value = 0.1234567890123456789
    assert float(format_row(["score"], {"score": value})) == value


def test_sidecar_round_trip(tmp_path):
    output = tmp_path / "p.csv"
    assert read_sidecar(output) is None
    path = write_sidecar(output, {"model_sha256": "x", "threshold": 0.3})
    assert path.name == "p.csv.json"
    assert read_sidecar(output) == {"model_sha256": "x", "threshold": 0.3}
