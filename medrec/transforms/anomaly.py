"""Synthetic anomalies: what an anomaly detector trained on normal scans only learns to find.

A model that has seen only normal studies is taught what departs from normal by self-supervision:
a smooth ellipsoid patch of a normal image is altered, and the network learns a voxel map of how
strongly each voxel was altered. Two alterations, after the methods that lead the MOOD challenge
without pretrained weights:

- ``fpi`` (Foreign Patch Interpolation, Tan et al. 2020): the patch is blended with the same place
  of *another* normal image, ``x' = (1 - t) x + t s``; the target ``t`` is the blend factor;
- ``intensity`` (after the intensity-altered patches of Natural Synthetic Anomalies, Schlüter et
  al. 2022): the patch is made brighter or darker by a multiple of the body's intensity spread,
  ``x' = x + t a``; the target is ``t``.

Patches lie inside the body (Otsu's foreground of the first channel, holes filled per slice):
nothing outside it changes, so the model cannot learn that anomalies float in the air. The patch
is an ellipsoid (findings are compact) whose edge falls from 1 to 0 over about one voxel, and the
target is the per-voxel blend factor: ``t * weight``.

Hand-written: MONAI has no synthetic-anomaly transform, and nnOOD's live inside its own pipeline.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform
from scipy import ndimage

from medrec.transforms.presets import otsu_threshold

ANOMALY_MODES: tuple[str, ...] = ("fpi", "intensity")


def body_mask(image: np.ndarray) -> np.ndarray:
    """The body's voxels of ``image`` ``(C, *spatial)``: above Otsu's threshold of the first channel,
    with holes filled in each axial slice (ventricles, bowel gas and lungs count as body)."""
    first = np.asarray(image[0], dtype=np.float32)
    mask = first > otsu_threshold(torch.from_numpy(first))
    if mask.ndim == 2:
        return np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)
    filled = np.empty_like(mask)
    for z in range(mask.shape[-1]):
        filled[..., z] = ndimage.binary_fill_holes(mask[..., z])
    return filled


def ellipsoid_weight(shape: Sequence[int], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """1 inside the ellipsoid of ``radii`` (voxels) about ``centre``, falling linearly to 0 over
    about one voxel across its surface, 0 beyond."""
    grids = np.ogrid[tuple(slice(0, size) for size in shape)]
    scaled = sum(((grid - c) / r) ** 2 for grid, c, r in zip(grids, centre, radii, strict=True))
    distance = np.sqrt(np.asarray(scaled, dtype=np.float64))
    # (distance - 1) * radius is about the voxel distance outside the surface
    weight = np.clip(0.5 - (distance - 1.0) * float(min(radii)), 0.0, 1.0)
    return np.asarray(weight, dtype=np.float32)


class SyntheticAnomaly(RandomizableTransform):
    """Alter one ellipsoid patch of an image; returns the altered image and the target map.

    Parameters are drawn first (:meth:`randomize`), then applied; the same seed gives the same
    patch, factor and alteration.

    Args:
        modes: the alterations to choose from (``fpi``, ``intensity``); ``fpi`` needs a source image.
        diameter_mm: range of the patch's diameter along each axis (drawn per axis, so patches are
            ellipsoids).
        spacing: voxel size in mm of the images (one value per spatial axis).
        factor: range of the blend factor ``t`` at the patch's centre.
        amplitude: ``intensity``: range of the change as a multiple of the body's interquartile range.
        prob: probability of altering the image at all (else it is returned with an empty target).
    """

    def __init__(
        self,
        modes: Sequence[str] = ANOMALY_MODES,
        diameter_mm: tuple[float, float] = (8.0, 48.0),
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        factor: tuple[float, float] = (0.3, 1.0),
        amplitude: tuple[float, float] = (1.0, 3.0),
        prob: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        unknown = [mode for mode in modes if mode not in ANOMALY_MODES]
        if not modes or unknown:
            raise ValueError(f"anomaly modes {list(modes)}: choose among {list(ANOMALY_MODES)}")
        if not 0 < diameter_mm[0] <= diameter_mm[1]:
            raise ValueError(f"diameter_mm {diameter_mm}: need 0 < low <= high")
        if not 0 < factor[0] <= factor[1] <= 1:
            raise ValueError(f"factor {factor}: need 0 < low <= high <= 1")
        self.modes = tuple(modes)
        self.diameter_mm = diameter_mm
        self.spacing = tuple(float(s) for s in spacing)
        self.factor = factor
        self.amplitude = amplitude
        self.mode = self.modes[0]
        self.centre: tuple[float, ...] = ()
        self.radii: tuple[float, ...] = ()
        self.blend = 1.0
        self.sign = 1.0
        self.strength = 1.0

    def randomize(self, data: Any = None) -> None:
        """Draw the patch: ``data`` is the body mask ``(*spatial)`` whose voxels may be its centre."""
        super().randomize(None)
        if not self._do_transform:
            return
        body = np.asarray(data, dtype=bool)
        spacing = self.spacing[: body.ndim]
        self.mode = self.modes[int(self.R.randint(len(self.modes)))]
        inside = np.flatnonzero(body)
        flat = int(inside[self.R.randint(len(inside))]) if len(inside) else int(self.R.randint(body.size))
        self.centre = tuple(float(c) for c in np.unravel_index(flat, body.shape))
        low, high = self.diameter_mm
        self.radii = tuple(max(0.75, float(self.R.uniform(low, high)) / 2.0 / s) for s in spacing)
        self.blend = float(self.R.uniform(*self.factor))
        self.sign = 1.0 if self.R.rand() < 0.5 else -1.0
        self.strength = float(self.R.uniform(*self.amplitude))

    def __call__(
        self, image: np.ndarray, source: np.ndarray | None = None, randomize: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Alter ``image`` ``(C, *spatial)`` (``source``: another normal image of the same shape).

        Returns:
            The altered image (a new array) and the target ``(1, *spatial)``: the blend factor of
            each voxel (0 where nothing changed).
        """
        image = np.asarray(image, dtype=np.float32)
        body = body_mask(image)
        if randomize:
            self.randomize(body)
        target = np.zeros((1, *image.shape[1:]), dtype=np.float32)
        if not self._do_transform:
            return image.copy(), target
        weight = ellipsoid_weight(image.shape[1:], self.centre, self.radii) * body
        blend = (self.blend * weight).astype(np.float32)
        mode = self.mode if source is not None or self.mode != "fpi" else "intensity"
        if mode == "fpi":
            other = np.asarray(source, dtype=np.float32)
            if other.shape != image.shape:
                raise ValueError(f"fpi source of shape {other.shape} does not match the image {image.shape}")
            altered = image + blend[None] * (other - image)
        else:
            values = image[:, body] if body.any() else image.reshape(image.shape[0], -1)
            spread = np.subtract(*np.percentile(values, [75, 25], axis=1)).astype(np.float32)
            spread = np.where(spread > 0, spread, 1.0).reshape((-1,) + (1,) * (image.ndim - 1))
            altered = image + blend[None] * (self.sign * self.strength * spread)
        target[0] = blend
        return altered.astype(np.float32), target


class RandSyntheticAnomalyd(MapTransform, RandomizableTransform):
    """Dict version of :class:`SyntheticAnomaly`: alters ``keys`` (one patch for all of them),
    reads the fpi source from ``source_key`` and writes the target under ``target_key``."""

    def __init__(
        self,
        keys: Sequence[Hashable],
        source_key: str = "anomaly_source",
        target_key: str = "anomaly",
        prob: float = 1.0,
        **kwargs: Any,
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.source_key = source_key
        self.target_key = target_key
        self.anomaly = SyntheticAnomaly(prob=1.0, **kwargs)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandSyntheticAnomalyd:
        super().set_random_state(seed, state)
        self.anomaly.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        self.randomize(None)
        first = True
        for key in self.key_iterator(out):
            image = np.asarray(out[key], dtype=np.float32)
            if not self._do_transform:
                out[self.target_key] = np.zeros((1, *image.shape[1:]), dtype=np.float32)
                continue
            source = out.get(self.source_key)
            out[key], out[self.target_key] = self.anomaly(image, source, randomize=first)
            first = False
        return out
