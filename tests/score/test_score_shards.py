from __future__ import annotations

import pytest
from score_helpers import write_nifti_cohort

from medrec.errors import ConfigError, InputError, OutputError
from medrec.score import ScoreOptions, merge_parts, read_rows, read_sidecar, score_manifest, select_part, shard_of


def test_shard_of_is_stable_and_covers_all_parts():
    assert shard_of("abc", 4) == shard_of("abc", 4)
    parts = [shard_of(f"sample{i}", 4) for i in range(400)]
    assert set(parts) == {0, 1, 2, 3}
    assert min(parts.count(p) for p in range(4)) > 60
    with pytest.raises(ConfigError):
        shard_of("a", 0)


def test_parts_partition_the_manifest(cohort):
    parts = [select_part(cohort, 3, i) for i in range(3)]
    ids = [sid for part in parts for sid in part["sample_id"]]
    assert sorted(ids) == sorted(cohort["sample_id"])
    with pytest.raises(ConfigError, match="part-id"):
        select_part(cohort, 3, 3)


def test_study_level_parts_keep_studies_whole(tmp_path):
    manifest = write_nifti_cohort(tmp_path / "scans", n=8, studies_per_patient=2)
    for i in range(3):
        part = select_part(manifest, 3, i, level="study")
        for study in set(part["study_uid"]):
            assert (part["study_uid"] == study).sum() == (manifest["study_uid"] == study).sum()


@pytest.mark.parametrize("level", ["series", "study"])
def test_merged_parts_equal_one_unsharded_run(tmp_path, stand_in_run, level):
    manifest = write_nifti_cohort(tmp_path / "scans", n=8, studies_per_patient=2)
    whole = tmp_path / "whole.csv"
    score_manifest(stand_in_run, manifest, whole, ScoreOptions(level=level), model_sha256="m", show_progress=False)
    parts = []
    for i in range(3):
        part = tmp_path / f"part{i}.csv"
        score_manifest(stand_in_run, manifest, part, ScoreOptions(level=level, num_parts=3, part_id=i),
                       model_sha256="m", show_progress=False)
        parts.append(part)
    merged = tmp_path / "merged.csv"
    result = merge_parts(list(reversed(parts)), merged)
    assert result.rows == read_sidecar(whole)["counts"]["rows"]
    columns_whole, rows_whole = read_rows(whole)
    columns_merged, rows_merged = read_rows(merged)
    assert columns_whole == columns_merged
    by_id = {row["sample_id"]: row for row in rows_whole}
    assert sorted(by_id) == [row["sample_id"] for row in rows_merged]
    for row in rows_merged:
        expected = by_id[row["sample_id"]]
        assert float(row["score"]) == pytest.approx(float(expected["score"]), abs=1e-6)
        assert {k: v for k, v in row.items() if k != "score"} == {k: v for k, v in expected.items() if k != "score"}
    record = read_sidecar(merged)
    assert record["num_parts"] == 1 and record["original_num_parts"] == 3 and record["status"] == "complete"
    # the merged file resumes like an unsharded run: nothing left to do
    again = score_manifest(stand_in_run, manifest, merged, ScoreOptions(level=level), model_sha256="m",
                           show_progress=False)
    assert again.scored == 0 and again.rows == result.rows


def test_merge_refuses_mixed_models_missing_parts_and_overlaps(tmp_path, cohort, stand_in_run):
    paths = []
    for i, model in enumerate(["m", "other"]):
        path = tmp_path / f"part{i}.csv"
        score_manifest(stand_in_run, cohort, path, ScoreOptions(num_parts=2, part_id=i), model_sha256=model,
                       show_progress=False)
        paths.append(path)
    with pytest.raises(InputError, match="another model"):
        merge_parts(paths, tmp_path / "out.csv")
    with pytest.raises(InputError, match="missing"):
        merge_parts(paths[:1], tmp_path / "out.csv")
    merge_parts(paths[:1], tmp_path / "out.csv", allow_incomplete=True)
    assert read_sidecar(tmp_path / "out.csv")["missing_parts"] == [1]
    with pytest.raises(OutputError, match="exists"):
        merge_parts(paths[:1], tmp_path / "out.csv", allow_incomplete=True)
    with pytest.raises(InputError, match="twice"):
        merge_parts([paths[0], paths[0]], tmp_path / "out2.csv")
    # two parts holding the same sample
    copy = tmp_path / "copy.csv"
    copy.write_bytes(paths[0].read_bytes())
    record = read_sidecar(paths[0])
    record["part_id"] = 1
    from medrec.score.writer import write_sidecar

    write_sidecar(copy, record)
    rows = read_rows(paths[0])[1]
    if rows:
        with pytest.raises(InputError, match="appears in both"):
            merge_parts([paths[0], copy], tmp_path / "out3.csv")
