"""NIfTI loading: values with scaling, RAS affine as stored, refusals, size bombs."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medrec.errors import NiftiError, ResourceBudgetError
from medrec.loader import content_hash, load_sample

RNG = np.random.default_rng(1)


def oblique_affine() -> np.ndarray:
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 2.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    return affine


def test_float_volume_and_affine_round_trip(nifti_file, make_nifti_row):
    volume = RNG.normal(100, 30, size=(7, 6, 5)).astype(np.float32)
    affine = oblique_affine()
    image = load_sample(make_nifti_row(nifti_file(volume, affine)))
    assert tuple(image.shape) == (1, 7, 6, 5) and image.dtype == torch.float32
    np.testing.assert_array_equal(image[0].numpy(), volume)
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-6)
    np.testing.assert_allclose(image.meta["spacing"], [0.9, 1.1, 2.0], atol=1e-6)
    assert image.meta["space"] == "RAS" and image.meta["format"] == "nifti" and image.meta["modality"] == "MR"


def test_scl_slope_and_inter_are_applied(nifti_file, make_nifti_row):
    stored = RNG.integers(-500, 3000, size=(5, 4, 3)).astype(np.int16)
    path = nifti_file(stored, dtype=np.int16, slope=0.5, inter=-10.0, name="scaled.nii.gz")
    image = load_sample(make_nifti_row(path))
    np.testing.assert_array_equal(image[0].numpy(), (stored.astype(np.float64) * 0.5 - 10.0).astype(np.float32))


def test_a_flipped_affine_is_kept_not_reoriented(nifti_file, make_nifti_row):
    volume = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    image = load_sample(make_nifti_row(nifti_file(volume, affine)))
    np.testing.assert_array_equal(image[0].numpy(), volume)
    np.testing.assert_allclose(image.affine.numpy(), affine)


def test_single_slice_is_a_2d_image(nifti_file, make_nifti_row):
    plane = RNG.normal(size=(9, 8, 1)).astype(np.float32)
    image = load_sample(make_nifti_row(nifti_file(plane)))
    assert tuple(image.shape) == (1, 9, 8)
    np.testing.assert_array_equal(image[0].numpy(), plane[:, :, 0])
    assert len(image.meta["spacing"]) == 2


def test_non_finite_voxels_are_refused(nifti_file, make_nifti_row):
    volume = np.ones((3, 3, 3), dtype=np.float32)
    volume[1, 1, 1] = np.nan
    with pytest.raises(NiftiError, match="1 voxels are NaN or infinite"):
        load_sample(make_nifti_row(nifti_file(volume)))


@pytest.mark.parametrize("bad", [0.0, -1.0, np.inf])
def test_bad_pixdim_is_refused(tmp_path, make_nifti_row, nifti_patcher, bad):
    path = tmp_path / "bad.nii"
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4)), str(path))
    nifti_patcher(path, 76 + 4 * 2, "<f", bad)  # pixdim[2]
    with pytest.raises(NiftiError, match="pixdim"):
        load_sample(make_nifti_row(str(path)))


def test_four_d_with_several_volumes_is_refused(nifti_file, make_nifti_row):
    with pytest.raises(NiftiError, match="holds 2 volumes"):
        load_sample(make_nifti_row(nifti_file(np.ones((3, 3, 3, 2), np.float32))))


def test_terabyte_header_is_refused_before_reading(tmp_path, make_nifti_row, nifti_patcher):
    path = tmp_path / "bomb.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)), str(path))
    nifti_patcher(path, 40, "<4h", 3, 32767, 32767, 32767)  # dim[0..3]
    data = path.read_bytes()
    claimed = 32767**3 * 4
    with pytest.raises(ResourceBudgetError, match=f"bomb.nii: header claims {claimed} bytes"):
        load_sample(make_nifti_row(str(path)))
    gz = tmp_path / "bomb.nii.gz"
    gz.write_bytes(gzip.compress(data))
    with pytest.raises(ResourceBudgetError):
        load_sample(make_nifti_row(str(gz)))


def test_corrupt_and_missing_files(tmp_path, make_nifti_row):
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti at all")
    with pytest.raises(NiftiError, match="corrupt.nii.gz"):
        load_sample(make_nifti_row(str(corrupt)))
    with pytest.raises(NiftiError, match="does not exist"):
        load_sample(make_nifti_row(str(tmp_path / "gone.nii.gz")))
    short = tmp_path / "short.nii"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(short))
    short.write_bytes(Path(short).read_bytes()[:600])
    with pytest.raises(NiftiError, match="short.nii"):
        load_sample(make_nifti_row(str(short)))


def test_same_pixels_same_hash_across_formats(nifti_file, make_nifti_row, ct_series, make_dicom_row):
    volume = RNG.integers(-1000, 1000, size=(4, 4, 3)).astype(np.float64)
    files, affine = ct_series(volume)
    nifti = nifti_file(volume.astype(np.float32), affine)
    assert content_hash(make_dicom_row(files)) == content_hash(make_nifti_row(nifti))
