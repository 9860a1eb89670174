"""The failure review of the report: each flagged case on the slice of its annotated lesion (circled), else
of the model's top finding (crossed), else the middle slice; and the patient's other studies beside it.

Two sources of images: a hand-made NIfTI volume with a bright sphere at a known voxel (an anisotropic,
x-flipped affine, so that the slice follows from the affine and not from the array's middle), and a small
``medrec synth`` CT cohort (lesion table, lesion masks, patients with a follow-up study) for the mask and
end-to-end checks. Expected slices are computed here from the affine (or read from the cohort's
``center_k``), never through the code under test.
"""

from __future__ import annotations

import json
import warnings

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from medrec.annotations import Lesion
from medrec.loader import load_volume
from medrec.loader.volume import LPS_TO_RAS
from medrec.report import figures
from medrec.report.case_pictures import draw_thumbnails
from medrec.report.document import Case, failure_section
from medrec.report.failures import other_studies, review_picture, review_slice, voxel_of

SHAPE = (40, 36, 24)
# voxel -> RAS mm: x flipped, anisotropic in-plane pixels (0.8 x 0.9 mm), 2.5 mm slices
AFFINE = np.array([[-0.8, 0.0, 0.0, 30.0], [0.0, 0.9, 0.0, -20.0], [0.0, 0.0, 2.5, -40.0], [0.0, 0.0, 0.0, 1.0]])
SPHERE_VOXEL = (25.3, 11.8, 17.2)  # the bright sphere's centre, off the voxel grid on purpose
SPHERE_DIAMETER_MM = 12.0
LESION_COLOUR = np.array(to_rgb(figures.LESION_MARK), dtype=np.float32)
FINDING_COLOUR = np.array(to_rgb(figures.FINDING_MARK), dtype=np.float32)


def _lps_of_voxel(voxel: tuple[float, float, float]) -> tuple[float, float, float]:
    x, y, z = (AFFINE @ np.array([*voxel, 1.0]))[:3]
    return round(float(-x), 3), round(float(-y), 3), round(float(z), 3)


def _voxel_of_lps(point: tuple[float, float, float]) -> tuple[int, int, int]:
    """The voxel holding an LPS point, computed independently: RAS, the inverse affine, the nearest index."""
    index = np.linalg.solve(AFFINE, np.array([-point[0], -point[1], point[2], 1.0]))[:3]
    return tuple(int(v) for v in np.floor(index + 0.5))  # type: ignore[return-value]


SPHERE_LPS = _lps_of_voxel(SPHERE_VOXEL)
LESION = Lesion(SPHERE_LPS, SPHERE_DIAMETER_MM, "lesions.csv line 2")
FAR_FINDING_LPS = _lps_of_voxel((5.0, 30.0, 3.0))  # a top finding away from the lesion, on slice k = 3


@pytest.fixture(scope="module")
def sphere_row(tmp_path_factory) -> dict[str, str]:
    """A manifest row of a NIfTI volume: noise around 100 and a sphere of 1000 at ``SPHERE_LPS``."""
    folder = tmp_path_factory.mktemp("sphere")
    rng = np.random.default_rng(0)
    volume = rng.normal(100.0, 5.0, size=SHAPE).astype(np.float32)
    grid = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in SHAPE), indexing="ij"), axis=-1)
    world = grid @ AFFINE[:3, :3].T + AFFINE[:3, 3]
    centre = AFFINE[:3, :3] @ np.array(SPHERE_VOXEL) + AFFINE[:3, 3]
    volume[np.linalg.norm(world - centre, axis=-1) <= SPHERE_DIAMETER_MM / 2] = 1000.0
    path = folder / "sphere.nii.gz"
    nib.save(nib.Nifti1Image(volume, AFFINE), path)
    return {"sample_id": "s1", "patient_id": "p1", "study_uid": "1.2.3.1", "series_uid": "1.2.3.1.1", "label": "1",
            "format": "nifti", "path": str(path), "files": "", "modality": "MR"}


def _coloured(picture: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.all(np.abs(picture[..., :3] - colour) < 1e-3, axis=-1)


# ------------------------------------------------------------------------------------------------
# The slice and its marks
# ------------------------------------------------------------------------------------------------


def test_the_lesion_slice_is_the_slice_of_its_centre(sphere_row) -> None:
    scan = load_volume(sphere_row)
    i, j, k = _voxel_of_lps(SPHERE_LPS)
    assert (i, j, k) == (25, 12, 17)
    bright_per_slice = (scan.array > 500).sum(axis=(0, 1))
    assert int(np.argmax(bright_per_slice)) == k  # the sphere is largest on its centre's slice

    choice = review_slice(scan.array.shape, scan.affine_ras, [LESION])
    assert (choice.kind, choice.index, choice.n_slices) == ("lesion", k, SHAPE[2])
    assert choice.note == f"lesion slice {k + 1}/{SHAPE[2]}, annotated lesion 12 mm"
    (row, col, radius_rows, radius_cols), = choice.circles
    assert (row, col) == (j, i)  # display rows follow j, columns i
    assert (radius_rows, radius_cols) == pytest.approx((6.0 / 0.9, 6.0 / 0.8))
    assert voxel_of(SPHERE_LPS, SHAPE, AFFINE) == (i, j, k)


def test_the_circle_is_drawn_on_the_lesion_rim(sphere_row) -> None:
    scan = load_volume(sphere_row)
    i, j, _ = _voxel_of_lps(SPHERE_LPS)
    picture = review_picture(scan, review_slice(scan.array.shape, scan.affine_ras, [LESION]))
    assert picture.shape == (SHAPE[1], SHAPE[0], 3)
    rows, cols = np.nonzero(_coloured(picture, LESION_COLOUR))
    distance_mm = np.hypot((rows - j) * 0.9, (cols - i) * 0.8)
    assert len(rows) >= 30 and np.all(np.abs(distance_mm - SPHERE_DIAMETER_MM / 2) <= 0.5)
    # all round the lesion, centred on it
    assert {(r > j, c > i) for r, c in zip(rows, cols, strict=True)} == {(a, b) for a in (0, 1) for b in (0, 1)}
    assert abs(rows.mean() - j) < 0.5 and abs(cols.mean() - i) < 0.5
    # the lesion itself stays unmarked: bright and grey at its centre
    assert np.allclose(picture[j, i], picture[j, i, 0]) and picture[j, i, 0] == pytest.approx(1.0)
    assert not _coloured(picture, FINDING_COLOUR).any()


def test_the_crosshair_is_drawn_on_the_top_finding(sphere_row) -> None:
    scan = load_volume(sphere_row)
    i, j, k = _voxel_of_lps(FAR_FINDING_LPS)
    choice = review_slice(scan.array.shape, scan.affine_ras, finding=FAR_FINDING_LPS)
    assert (choice.kind, choice.index) == ("finding", k) and k == 3
    assert choice.note == f"slice of the top finding {k + 1}/{SHAPE[2]} (+)"
    picture = review_picture(scan, choice)
    rows, cols = np.nonzero(_coloured(picture, FINDING_COLOUR))
    assert len(rows) >= 8
    assert np.all((rows == j) | (cols == i)) and (rows == j).any() and (cols == i).any()  # one row, one column
    assert abs(rows.mean() - j) < 1 and abs(cols.mean() - i) < 1
    assert np.min(np.hypot(rows - j, cols - i)) >= 2  # the centre stays open
    assert not _coloured(picture, LESION_COLOUR).any()


@pytest.mark.parametrize(("lesions", "finding", "kind", "note"), [
    ([LESION], SPHERE_LPS, "lesion", "lesion slice 18/24, annotated lesion 12 mm; top finding (+) on this slice"),
    ([LESION], FAR_FINDING_LPS, "lesion", "lesion slice 18/24, annotated lesion 12 mm; top finding on slice 4"),
    ([], FAR_FINDING_LPS, "finding", "slice of the top finding 4/24 (+)"),
    ([Lesion((500.0, 0.0, 0.0), 10.0, "outside")], FAR_FINDING_LPS, "finding", "slice of the top finding 4/24 (+)"),
    ([Lesion((500.0, 0.0, 0.0), 10.0, "outside")], None, "middle", "middle slice 13/24"),
    ([], (500.0, 0.0, 0.0), "middle", "middle slice 13/24"),
    ([], None, "middle", "middle slice 13/24"),
])
def test_the_lesion_comes_before_the_top_finding_before_the_middle(lesions, finding, kind, note) -> None:
    choice = review_slice(SHAPE, AFFINE, lesions, finding=finding)
    assert (choice.kind, choice.note) == (kind, note)
    expected_index = {"lesion": 17, "finding": 3, "middle": SHAPE[2] // 2}[kind]
    assert choice.index == expected_index
    # the top finding is crossed only on its own slice
    on_slice = finding is not None and voxel_of(finding, SHAPE, AFFINE) is not None \
        and voxel_of(finding, SHAPE, AFFINE)[2] == expected_index
    assert bool(choice.crosses) == on_slice


def test_the_largest_of_several_lesions_chooses_the_slice() -> None:
    small = Lesion(_lps_of_voxel((8.0, 8.0, 17.0)), 4.0, "small, same slice")
    elsewhere = Lesion(_lps_of_voxel((30.0, 30.0, 5.0)), 6.0, "other slice")
    choice = review_slice(SHAPE, AFFINE, [small, elsewhere, LESION])
    assert choice.index == 17 and choice.note == "lesion slice 18/24, annotated lesion 12 mm (largest of 3)"
    assert sorted((row, col) for row, col, *_ in choice.circles) == [(8, 8), (12, 25)]  # both lesions of slice 17


# ------------------------------------------------------------------------------------------------
# Through draw_thumbnails: lesion table, reference-negative cases, overlay order, other studies
# ------------------------------------------------------------------------------------------------


def test_thumbnails_use_the_lesion_table_and_the_top_findings(sphere_row, tmp_path) -> None:
    rows = {sample: {**sphere_row, "sample_id": sample, "study_uid": f"1.2.3.{n}", "series_uid": f"1.2.3.{n}.1"}
            for n, sample in enumerate(("s1", "s2", "s3"), start=1)}
    lesions = tmp_path / "lesions.csv"
    pd.DataFrame([{"study_uid": study, "center_x": SPHERE_LPS[0], "center_y": SPHERE_LPS[1],
                   "center_z": SPHERE_LPS[2], "diameter_mm": SPHERE_DIAMETER_MM} for study in ("1.2.3.1", "1.2.3.2")]
                 ).to_csv(lesions, index=False)
    explain = tmp_path / "explain"
    explain.mkdir()
    for sample in ("s1", "s3"):  # overlays: the lesion wins over s1's, s3 has nothing better
        (explain / f"{sample}.png").write_bytes(figures.thumbnail_figure(np.eye(8), "overlay"))
    report = {"classes": ["0", "1"], "flagged": {
        "false_negatives": [{"sample_id": "S-1", "patient_id": "P-1", "score": 0.1},
                            {"sample_id": "S-3", "patient_id": "P-3", "score": 0.2}],
        "false_positives": [{"sample_id": "S-2", "patient_id": "P-2", "score": 0.9}]}}
    analysed = pd.DataFrame({"sample_id": ["S-1", "S-2", "S-3", "S-4"], "patient_id": ["P-1", "P-2", "P-3", "P-1"],
                             "score": [0.1, 0.9, 0.2, 0.8], "label": ["1", "0", "1", "1"], "error": ""})
    cases = draw_thumbnails(report, {"S-1": "s1", "S-2": "s2", "S-3": "s3"}, rows, explain, lesions=lesions,
                            findings={"s2": FAR_FINDING_LPS, "s1": FAR_FINDING_LPS}, analysed=analysed)
    missed, alarm = cases["false_negatives"], cases["false_positives"][0]
    assert missed[0].picture_note == "lesion slice 18/24, annotated lesion 12 mm; top finding on slice 4"
    assert missed[1].picture_note == "saliency overlay"
    # s2 is reference-negative: its lesion row is not a lesion of it, so its top finding is shown
    assert alarm.picture_note == "slice of the top finding 4/24 (+)"
    assert [c.figure.name for c in (*missed, alarm)] == ["fn_01.png", "fn_02.png", "fp_01.png"]
    assert missed[0].other_studies == (("S-4", 0.8, "1"),)
    assert missed[1].other_studies == () and alarm.other_studies == ()
    # without the analysed rows nothing is claimed
    plain = draw_thumbnails(report, {"S-1": "s1"}, rows, explain)
    assert plain["false_negatives"][0].other_studies is None


def test_other_studies_list_the_patients_analysed_rows() -> None:
    shown = pd.DataFrame({
        "sample_id": ["S-a", "S-b", "S-c", "S-d", "S-e", "S-f", "S-g", "S-h"],
        "patient_id": ["P-1", "P-1", "P-1", "P-1", "P-1", "P-2", "", ""],
        "score": [0.1, 0.7, np.nan, 0.4, 0.2, 0.9, 0.3, 0.6],
        "label": ["1", "1", "1", "", "0", "0", "1", "1"],
        "error": ["", "", "unreadable", "", "", "", "", ""],
    })
    # S-c failed, S-d has no reference label: not analysed, so not listed
    assert other_studies(shown, "S-a", "P-1") == (("S-b", 0.7, "1"), ("S-e", 0.2, "0"))
    assert other_studies(shown, "S-f", "P-2") == ()
    assert other_studies(shown, "S-g", "sample:S-g") == ()  # no patient id: a patient of its own

    cases = {"false_negatives": [Case("FN 1", "S-a", "P-1", 0.1, "1", "middle slice 3/5", None,
                                      other_studies(shown, "S-a", "P-1"))],
             "false_positives": [Case("FP 1", "S-f", "P-2", 0.9, "0", "middle slice 3/5", None, ()),
                                 Case("FP 2", "S-x", "P-9", 0.8, "0", "not in the manifest")]}
    section = failure_section({"task": "binary", "flagged": {}}, cases)
    tables = [block for block in section.blocks if block.kind == "table"]
    assert [table.columns[-1] for table in tables] == ["Patient's other studies"] * 2
    assert tables[0].rows[0][-1] == "S-b: score 0.700, reference 1; S-e: score 0.200, reference 0"
    assert [row[-1] for row in tables[1].rows] == ["none", "n/a"]
    assert "annotated lesion" in section.blocks[0].text and "top finding" in section.blocks[0].text


# ------------------------------------------------------------------------------------------------
# A medrec synth cohort: lesion masks, and medrec report --lesions end to end
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_ct(tmp_path_factory) -> dict:
    """Six CT patients (32 x 32 pixels, 10 mm slices), half of them with a follow-up study, with lesion masks."""
    from medrec.index import index_folder
    from medrec.synth import generate_cohort

    root = tmp_path_factory.mktemp("synth_ct")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = generate_cohort(root / "scans", kind="ct-lesion", patients=6, fmt="nifti", seed=4, image_size=32,
                                 slice_thickness=10.0, follow_up_fraction=0.5, prevalence=0.5, masks=True)
        index_folder(root / "scans", root / "index", labels=cohort.labels_csv, show_progress=False)
    manifest = pd.read_csv(root / "index" / "manifest.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(cohort.ground_truth_csv, dtype={"study_uid": str})
    return {"root": root, "cohort": cohort, "manifest": manifest, "truth": truth}


def test_a_lesion_mask_of_the_labels_file_gives_the_slice(synth_ct) -> None:
    manifest, cohort = synth_ct["manifest"], synth_ct["cohort"]
    rows = {row["sample_id"]: row for row in manifest.to_dict("records")}
    study = next(s for s in cohort.studies if s.mask_path is not None)
    sample = manifest.loc[manifest["study_uid"] == study.study_uid, "sample_id"].iloc[0]
    report = {"classes": ["0", "1"], "flagged": {
        "false_negatives": [{"sample_id": "S-1", "patient_id": "P-1", "score": 0.1}], "false_positives": []}}
    case = draw_thumbnails(report, {"S-1": sample}, rows, [], masks=cohort.labels_csv)["false_negatives"][0]
    # the mask is on the scan's grid: the slice where it is largest, read straight from the file
    area = (np.asarray(nib.load(study.mask_path).dataobj) > 0.5).sum(axis=(0, 1))
    k = int(np.argmax(area))
    assert case.picture_note == f"lesion slice {k + 1}/{len(area)}, annotated lesion (mask outline)"
    assert case.figure is not None


def test_report_shows_false_negatives_on_their_lesion_slice(synth_ct, tmp_path, run_medrec) -> None:
    manifest, truth, root = synth_ct["manifest"], synth_ct["truth"], synth_ct["root"]
    studies_of = manifest.groupby("patient_id")["sample_id"].count()
    with_lesions = manifest[manifest["study_uid"].isin(truth["study_uid"])]
    missed = with_lesions.sort_values("patient_id", key=lambda p: -p.map(studies_of)).iloc[0]  # a follow-up patient
    single = studies_of[studies_of == 1].index
    alarm = manifest[(manifest["label"] == "0") & manifest["patient_id"].isin(single)].iloc[0]
    assert studies_of[missed["patient_id"]] == 2
    scan = load_volume(alarm.to_dict())
    alarm_finding = tuple(round(float(v), 3) for v in (LPS_TO_RAS @ scan.affine_ras @ [10.0, 20.0, 7.0, 1.0])[:3])

    predictions = manifest[["sample_id", "patient_id", "study_uid", "label"]].copy()
    predictions["score"] = np.where(predictions["label"] == "1", 0.9, 0.1)
    predictions.loc[predictions["sample_id"] == missed["sample_id"], "score"] = 0.2
    predictions.loc[predictions["sample_id"] == alarm["sample_id"], "score"] = 0.8
    predictions["prediction"] = (predictions["score"] >= 0.5).astype(int).astype(str)
    predictions["error"] = ""
    for axis, column in enumerate(("finding_x", "finding_y", "finding_z")):
        predictions[column] = ""
        predictions.loc[predictions["sample_id"] == alarm["sample_id"], column] = str(alarm_finding[axis])
    scores = root / "scores"
    scores.mkdir(exist_ok=True)
    predictions.to_csv(scores / "pred.csv", index=False)
    pd.DataFrame([{"sample_id": alarm["sample_id"], "study_uid": alarm["study_uid"], "patient_id": alarm["patient_id"],
                   "rank": 1, "x": alarm_finding[0], "y": alarm_finding[1], "z": alarm_finding[2], "diameter_mm": 10.0,
                   "probability": 0.8}]).to_csv(scores / "pred.findings.csv", index=False)
    (scores / "pred.csv.json").write_text(json.dumps({"level": "series", "model_sha256": "0" * 64,
                                                      "findings_file": "pred.findings.csv", "findings_voxel_mm": 10.0}))
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, output = run_medrec(["report", str(scores / "pred.csv"), "-o", str(out), "--threshold", "0.5",
                                   "--manifest", str(root / "index" / "manifest.csv"),
                                   "--lesions", str(synth_ct["cohort"].ground_truth_csv), "--bootstrap", "50"])
    assert code == 0, output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    (missed_entry,), (alarm_entry,) = report["flagged"]["false_negatives"], report["flagged"]["false_positives"]

    lesions = truth[truth["study_uid"] == missed["study_uid"]]
    largest = lesions.sort_values("diameter_mm", ascending=False, kind="stable").iloc[0]
    k = int(np.floor(largest["center_k"] + 0.5))  # the generator's own voxel index of the lesion centre
    n_slices = load_volume(missed.to_dict()).array.shape[2]
    diameter = f"{largest['diameter_mm']:.1f}".rstrip("0").rstrip(".")
    assert missed_entry["picture"].startswith(f"lesion slice {k + 1}/{n_slices}, annotated lesion {diameter} mm")
    assert alarm_entry["picture"] == f"slice of the top finding {7 + 1}/{scan.array.shape[2]} (+)"
    # the other study of the follow-up patient, by its pseudonym, with its score and reference
    (other,) = missed_entry["other_studies"]
    assert other["score"] == 0.9 and other["label"] == "1" and other["sample_id"].startswith("S-")
    assert other["sample_id"] != missed_entry["sample_id"] and alarm_entry["other_studies"] == []

    fn_picture = mpimg.imread(out / "figures" / "fn_01.png")[..., :3]
    assert np.any(np.all(np.abs(fn_picture - LESION_COLOUR) < 0.02, axis=-1))  # the circle survives rendering
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Patient&#39;s other studies" in html and f"{other['sample_id']}: score 0.900, reference 1" in html
    assert missed["patient_id"] not in html and missed["sample_id"] not in html

