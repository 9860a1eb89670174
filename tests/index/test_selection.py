"""One series per study: eligibility and ranking, with the reasons written down."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from medrec.index import SelectionRules, index_folder

from .builders import uid, write_series

CORONAL = (1, 0, 0, 0, 0, -1)


def _run(scans: Path, tmp_path: Path, rules: SelectionRules | None = None):
    return index_folder(scans, tmp_path / "out", rules=rules, show_progress=False)


def test_localizer_excluded_and_best_series_chosen(scans: Path, tmp_path: Path) -> None:
    study = uid("sel-study")
    write_series(scans / "loc", n=6, study_uid=study, series_uid=uid("loc"), image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    write_series(scans / "thin", n=12, study_uid=study, series_uid=uid("thin"), spacing=1.0)
    write_series(scans / "thick", n=6, study_uid=study, series_uid=uid("thick"), spacing=2.0)
    result = _run(scans, tmp_path)
    assert list(result.manifest["series_uid"]) == [uid("thin")]
    assert "best of 2 eligible series" in result.manifest["selection"].iloc[0]
    reasons = result.qc.groupby("series_uid")["reason"].first().to_dict()
    assert reasons[uid("loc")].startswith("not selected: localizer")
    assert reasons[uid("thick")] == (
        f"not selected: study {study} has a better series {uid('thin')} (more slices: 12 vs 6)"
    )
    assert len(result.qc) == 12


def test_preferred_orientation_beats_more_slices(scans: Path, tmp_path: Path) -> None:
    study = uid("orient-study")
    write_series(scans / "ax", n=6, study_uid=study, series_uid=uid("ax"))
    write_series(scans / "cor", n=10, study_uid=study, series_uid=uid("cor"), orientation=CORONAL)
    result = _run(scans, tmp_path)
    assert list(result.manifest["series_uid"]) == [uid("ax")]
    assert "preferred orientation axial vs coronal" in result.qc["reason"].iloc[0]
    no_preference = _run(scans, tmp_path, SelectionRules(preferred_orientation=None))
    assert list(no_preference.manifest["series_uid"]) == [uid("cor")]


def test_all_series_and_modality_filter(scans: Path, tmp_path: Path) -> None:
    study = uid("all-study")
    write_series(scans / "a", n=6, study_uid=study, series_uid=uid("a"))
    write_series(scans / "b", n=7, study_uid=study, series_uid=uid("b"))
    write_series(scans / "mr", n=7, series_uid=uid("mr"), modality="MR")
    kept = _run(scans, tmp_path, SelectionRules(all_series=True, modalities=("ct",)))
    assert sorted(kept.manifest["series_uid"]) == sorted([uid("a"), uid("b")])
    assert set(kept.qc["code"]) == {"modality_not_allowed"}


def test_derived_and_min_slices(scans: Path, tmp_path: Path) -> None:
    write_series(scans / "d", n=6, image_type="DERIVED\\SECONDARY\\MPR")
    assert len(_run(scans, tmp_path).manifest) == 1
    derived = _run(scans, tmp_path, SelectionRules(exclude_derived=True))
    assert set(derived.qc["code"]) == {"derived"}
    few = _run(scans, tmp_path, SelectionRules(min_slices=10))
    assert set(few.qc["code"]) == {"below_min_slices"}


def test_rules_are_frozen_and_validated() -> None:
    rules = SelectionRules()
    with pytest.raises(ValidationError):
        rules.min_slices = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SelectionRules(preferred_orientation="diagonal")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        SelectionRules(unknown_rule=1)  # type: ignore[call-arg]


def _copy_pydicom_files(scans: Path, *names: str) -> dict[str, str]:
    import shutil

    from pydicom.data import get_testdata_file

    copied = {}
    for name in names:
        target = scans / name
        shutil.copyfile(str(get_testdata_file(name)), target)
        copied[name] = str(target)
    return copied


def test_non_image_objects_are_left_out_unless_asked(scans: Path, tmp_path: Path) -> None:
    copied = _copy_pydicom_files(scans, "liver.dcm", "rtdose.dcm", "CT_small.dcm")
    result = _run(scans, tmp_path)
    assert list(result.manifest["modality"]) == ["CT"]
    code_of = dict(zip(result.qc["path"], result.qc["code"], strict=True))
    reason_of = dict(zip(result.qc["path"], result.qc["reason"], strict=True))
    assert code_of == {copied["liver.dcm"]: "non_image_object", copied["rtdose.dcm"]: "non_image_object"}
    assert reason_of[copied["liver.dcm"]] == (
        "not selected: non-image object Segmentation Storage (modality SEG); "
        "pass --include-non-image (index rule include_non_image: true) to index it as a sample"
    )
    assert "RT Dose Storage (modality RTDOSE)" in reason_of[copied["rtdose.dcm"]]

    kept = _run(scans, tmp_path, SelectionRules(include_non_image=True))
    assert sorted(kept.manifest["modality"]) == ["CT", "RTDOSE", "SEG"]


def test_non_image_modality_decides_when_the_sop_class_is_unknown(scans: Path, tmp_path: Path) -> None:
    import pydicom
    from pydicom.uid import CTImageStorage

    private_sop_class = "1.2.826.0.1.3680043.10.9999.77"
    for name, modality, sop_class in (("seg", "SEG", private_sop_class), ("ct", "SEG", CTImageStorage),
                                      ("pr", "PR", private_sop_class)):
        path = write_series(scans / name, n=1, modality=modality)[0]
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.save_as(path)
    result = _run(scans, tmp_path)
    # a CT Image Storage object is an image whatever its Modality says
    assert list(result.manifest["path"].map(lambda p: Path(p).name)) == ["ct"]
    assert set(result.qc["code"]) == {"non_image_object"}
    assert sorted(result.qc["reason"].str.extract(r"\(modality (\w+)\)")[0]) == ["PR", "SEG"]
    assert result.qc["reason"].str.contains(f"SOP class {private_sop_class}", regex=False).all()
