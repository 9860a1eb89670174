"""LoadSampled as the first transform of MONAI chains (no EnsureChannelFirstd needed)."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import (
    Compose,
    CropForegroundd,
    Orientationd,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
)

from medrec.loader import LoadSampled


def phantom(shape=(10, 8, 6)) -> np.ndarray:
    volume = np.full(shape, -1000.0)
    volume[3:7, 2:6, 1:5] = 400.0
    volume[3, 2, 1] = 1000.0  # a marker voxel
    return volume


def test_orientation_and_spacing_geometry(ct_series, make_dicom_row):
    volume = phantom()
    files, affine_ras = ct_series(volume)  # axial, LPS origin (-20, -30, 40), spacing (0.8, 0.7, 2.5)
    row = make_dicom_row(files)
    loaded = LoadSampled(keys="image")(row)
    assert set(row) <= set(loaded) and loaded["sample_id"] == "s1" and loaded["label"] == "1"
    oriented = Orientationd(keys="image", axcodes="RAS", labels=None)(loaded)["image"]
    # LPS-acquired axial slices have i along -R and j along -A: RAS flips the first two axes
    np.testing.assert_array_equal(oriented[0].numpy(), volume[::-1, ::-1, :])
    np.testing.assert_allclose(np.diag(oriented.affine.numpy())[:3], [0.8, 0.7, 2.5], atol=1e-9)
    marker_world = affine_ras @ np.array([3, 2, 1, 1.0])
    index = np.argwhere(oriented[0].numpy() == 1000.0)[0]
    np.testing.assert_allclose(oriented.affine.numpy() @ np.append(index, 1.0), marker_world, atol=1e-6)

    resampled = Spacingd(keys="image", pixdim=(1.6, 1.4, 5.0), mode="nearest")({"image": oriented})["image"]
    np.testing.assert_allclose(resampled.affine.numpy()[:3, :3], np.diag([1.6, 1.4, 5.0]), atol=1e-6)
    np.testing.assert_allclose(resampled.affine.numpy()[:3, 3], oriented.affine.numpy()[:3, 3], atol=1e-6)
    # MONAI sizes the grid to cover the old extent: about n * old / new voxels per axis
    for size, expected in zip(resampled.shape[1:], (10 * 0.8 / 1.6, 8 * 0.7 / 1.4, 6 * 2.5 / 5.0), strict=True):
        assert abs(size - expected) <= 1


def test_full_preprocessing_chain_and_batching(ct_series, make_dicom_row):
    rows = []
    for index in range(2):
        files, _ = ct_series(phantom(), folder=f"s{index}")
        rows.append(make_dicom_row(files, sample_id=f"s{index}"))
    chain = Compose([
        LoadSampled(keys="image"),
        Orientationd(keys="image", axcodes="RAS", labels=None),
        Spacingd(keys="image", pixdim=(1.0, 1.0, 2.5), mode="bilinear"),
        ScaleIntensityRanged(keys="image", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
        CropForegroundd(keys="image", source_key="image"),
        ResizeWithPadOrCropd(keys="image", spatial_size=(8, 8, 4)),
    ])
    out = chain(rows[0])
    image = out["image"]
    assert tuple(image.shape) == (1, 8, 8, 4) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0 and float(image.max()) > 0.5
    assert out["sample_id"] == "s0"
    batch = next(iter(DataLoader(Dataset(rows, transform=chain), batch_size=2, num_workers=0)))
    assert tuple(batch["image"].shape) == (2, 1, 8, 8, 4)
    assert list(batch["sample_id"]) == ["s0", "s1"]


def test_2d_image_chain(slice_writer, tmp_path):
    stored = np.arange(12 * 10).reshape(12, 10)  # rows x cols
    path = slice_writer(tmp_path / "dx.dcm", stored, ipp=None, iop=None, pixel_spacing=(0.2, 0.25), slope=1.0,
                        intercept=0.0, modality="DX")
    row = {"sample_id": "dx", "format": "dicom", "files": [str(path)], "modality": "DX"}
    chain = Compose([LoadSampled(keys="image"), Orientationd(keys="image", axcodes="RA", labels=None),
                     Spacingd(keys="image", pixdim=(0.5, 0.4), mode="nearest")])
    image = chain(row)["image"]
    assert image.ndim == 3 and image.shape[0] == 1
    np.testing.assert_allclose(image.meta["spacing"], [0.25, 0.2])
    np.testing.assert_allclose(np.abs(np.diag(image.affine.numpy()))[:2], [0.5, 0.4], atol=1e-6)
    for size, expected in zip(image.shape[1:], (10 * 0.25 / 0.5, 12 * 0.2 / 0.4), strict=True):
        assert abs(size - expected) <= 1


def test_several_keys_get_independent_copies(ct_series, make_dicom_row):
    files, _ = ct_series(phantom())
    out = LoadSampled(keys=("image", "image_copy"))(make_dicom_row(files))
    assert torch.equal(out["image"], out["image_copy"])
    out["image_copy"] += 1
    assert not torch.equal(out["image"], out["image_copy"])
