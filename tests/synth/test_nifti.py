"""NIfTI output: RAS affine, qform / sform, units, data."""

from __future__ import annotations

import nibabel as nib
import numpy as np

RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def test_nifti_affine_and_data(mr_nifti):
    for study in mr_nifti.studies:
        (path,) = study.files
        assert path.name == f"{study.study_uid}.nii.gz"
        image = nib.load(path)
        expected = RAS @ study.affine_lps
        np.testing.assert_allclose(image.affine, expected, atol=1e-5)
        np.testing.assert_allclose(image.get_qform(), expected, atol=1e-4)
        np.testing.assert_allclose(image.get_sform(), expected, atol=1e-5)
        assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
        assert image.header.get_xyzt_units()[0] == "mm"
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), study.volume)
        assert image.header.get_zooms() == tuple(np.float32(s) for s in study.spacing)


def test_nifti_gzip_header_is_deterministic(mr_nifti):
    raw = mr_nifti.studies[0].files[0].read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
