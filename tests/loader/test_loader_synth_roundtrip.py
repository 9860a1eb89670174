"""synth -> index -> load: voxels, spacing and affine equal what the generator wrote."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from medrec.loader import content_hash, load_sample

synth = pytest.importorskip("medrec.synth")
index = pytest.importorskip("medrec.index")

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

CASES = [
    ("ct-lesion", "dicom", False),
    ("ct-lesion", "dicom", True),
    ("ct-lesion", "nifti", False),
    ("mri-tumor", "dicom", False),
    ("mri-tumor", "nifti", False),
    ("xr-nodule", "dicom", False),
    ("xr-nodule", "nifti", False),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: "-".join(map(str, case)))
def indexed_cohort(request, tmp_path_factory):
    kind, fmt, quirks = request.param
    root = tmp_path_factory.mktemp(f"{kind}-{fmt}-{quirks}")
    cohort = synth.generate_cohort(root / "scans", kind=kind, patients=2, fmt=fmt, seed=3, quirks=quirks,
                                   image_size=32, follow_up_fraction=0.0, return_volumes=True)
    result = index.index_folder(root / "scans", root / "index", labels=cohort.labels_csv)
    return fmt, cohort, result.manifest


def _row_of(manifest, study, fmt: str):
    if fmt == "dicom":
        rows = manifest[manifest["series_uid"] == study.series_uid]
    else:
        rows = manifest[manifest["path"].map(lambda p: Path(p).resolve()) == Path(study.files[0]).resolve()]
    assert len(rows) == 1, f"expected one manifest row for the main series, found {len(rows)}"
    return rows.iloc[0]


def test_voxels_spacing_and_affine_equal_the_generator(indexed_cohort):
    fmt, cohort, manifest = indexed_cohort
    for study in cohort.studies:
        image = load_sample(_row_of(manifest, study, fmt))
        expected = np.asarray(study.volume)
        assert tuple(image.shape) == (1, *expected.shape)
        np.testing.assert_array_equal(image[0].numpy(), expected.astype(np.float32))
        np.testing.assert_allclose(image.meta["spacing"], study.spacing[: expected.ndim], rtol=1e-6)
        np.testing.assert_allclose(image.affine.numpy(), LPS_TO_RAS @ np.asarray(study.affine_lps), atol=1e-4)
        assert image.meta["space"] == "RAS" and image.meta["format"] == fmt


def test_dicom_file_order_does_not_matter(indexed_cohort):
    fmt, cohort, manifest = indexed_cohort
    if fmt != "dicom":
        pytest.skip("DICOM only")
    study = cohort.studies[0]
    row = dict(_row_of(manifest, study, fmt))
    files = json.loads(row["files"])
    random.Random(0).shuffle(files)
    image = load_sample({**row, "files": json.dumps(files)})
    np.testing.assert_array_equal(image[0].numpy(), np.asarray(study.volume).astype(np.float32))
    np.testing.assert_allclose(image.affine.numpy(), LPS_TO_RAS @ np.asarray(study.affine_lps), atol=1e-4)


def test_studies_hash_differently(indexed_cohort):
    fmt, cohort, manifest = indexed_cohort
    hashes = {content_hash(_row_of(manifest, study, fmt)) for study in cohort.studies}
    assert len(hashes) == len(cohort.studies)
