"""Vectorised shape primitives that the phantoms are painted with.

A :class:`Canvas` holds the image being rendered and maps voxel indices to the patient's body
frame (mm, LPS axes of the patient, origin at the patient's centre) through the study's pose,
so that one patient's anatomy lands at a different place in each of their studies. Shapes are
evaluated only inside their bounding box, which keeps a 128 x 128 x 40 render well under a second.
Soft edges (a sigmoid of the signed distance) give partial-volume voxels at every boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

Box = tuple[slice, ...]


@dataclass(frozen=True)
class Wobble:
    """A sum of plane waves, ``sum_k a_k sin(f_k . q + phi_k)``, in mm: a smooth random perturbation.

    Added to a signed distance it makes organ and lesion borders lobulated instead of perfect ellipses.
    """

    frequencies: np.ndarray  # (m, dims) radians per mm
    amplitudes: np.ndarray  # (m,) mm
    phases: np.ndarray  # (m,)

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        dims: int,
        amplitude_mm: float,
        wavelength_mm: tuple[float, float],
        waves: int = 4,
    ) -> Wobble:
        """Draw ``waves`` plane waves with random directions and wavelengths in ``wavelength_mm``."""
        directions = rng.normal(size=(waves, dims))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(wavelength_mm[0], wavelength_mm[1], size=waves)
        frequencies = directions * (2.0 * np.pi / wavelengths)[:, None]
        amplitudes = rng.uniform(0.5, 1.0, size=waves) * amplitude_mm / np.sqrt(waves)
        phases = rng.uniform(0.0, 2.0 * np.pi, size=waves)
        return cls(frequencies, amplitudes, phases)

    def __call__(self, coords: Sequence[np.ndarray]) -> np.ndarray:
        total = np.zeros(np.broadcast_shapes(*(np.shape(c) for c in coords)), dtype=np.float32)
        for frequency, amplitude, phase in zip(self.frequencies, self.amplitudes, self.phases, strict=True):
            argument = phase + sum(float(f) * c for f, c in zip(frequency, coords, strict=True))
            total += np.float32(amplitude) * np.sin(argument, dtype=np.float32)
        return total


def ellipsoid_distance(
    coords: Sequence[np.ndarray], center: Sequence[float], axes: Sequence[float], rotation: np.ndarray | None = None
) -> np.ndarray:
    """Approximate signed distance (mm, positive inside) to an ellipsoid / ellipse.

    Uses ``(1 - s) / |grad s|`` with ``s`` the normalised radius: exact along the axes and
    close to the true distance near the surface, where the soft edge needs it.

    Args:
        coords: body-frame coordinate arrays (x, y[, z]), broadcastable.
        center: centre in mm.
        axes: semi-axes in mm, in the shape's own frame.
        rotation: optional orthonormal matrix; columns are the shape's axes in the body frame.
    """
    rel = [c - np.float32(o) for c, o in zip(coords, center, strict=True)]
    if rotation is not None:
        rel = [sum(np.float32(rotation[r, a]) * rel[r] for r in range(len(rel))) for a in range(len(rel))]
    inv_axes = [np.float32(1.0 / a) for a in axes]
    s2 = sum((r * ia) ** 2 for r, ia in zip(rel, inv_axes, strict=True))
    g2 = sum((r * ia * ia) ** 2 for r, ia in zip(rel, inv_axes, strict=True))
    s = np.sqrt(s2)
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = np.sqrt(g2) / s
        distance = (1.0 - s) / grad
    return np.where(s > 1e-4, distance, np.float32(min(axes))).astype(np.float32)


def soft(distance: np.ndarray, edge_mm: float) -> np.ndarray:
    """Fraction of the voxel inside the shape: a sigmoid of the signed distance (partial volume)."""
    return expit(np.asarray(distance, dtype=np.float32) * np.float32(1.0 / edge_mm))


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation from small angles: one angle (2D) or (about x, about y, about z) in degrees (3D)."""
    if len(angles_deg) == 1:
        a = np.deg2rad(angles_deg[0])
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class Canvas:
    """An image under construction plus the map from voxel index to body-frame mm.

    ``index_to_body`` is the affine ``q = M @ index + b`` (body frame from voxel index); the
    inverse finds the voxel box that a body-frame shape covers.
    """

    def __init__(self, shape: Sequence[int], index_to_body: np.ndarray, background: float) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dims = len(self.shape)
        self.index_to_body = np.asarray(index_to_body, dtype=np.float64)
        self.body_to_index = np.linalg.inv(self.index_to_body)
        self.image = np.full(self.shape, background, dtype=np.float32)
        self.voxel_mm = np.linalg.norm(self.index_to_body[: self.dims, : self.dims], axis=0)
        self.tracked: dict[str, np.ndarray] = {}
        self._coords_cache: dict[tuple, list[np.ndarray]] = {}

    def track(self, name: str) -> None:
        """Start a map of how much of each voxel is organ ``name``; later paint over it reduces it."""
        self.tracked[name] = np.zeros(self.shape, dtype=np.float32)

    @property
    def full(self) -> Box:
        return tuple(slice(0, n) for n in self.shape)

    def box(self, center: Sequence[float], half_extent: Sequence[float] | float, margin_mm: float = 4.0) -> Box | None:
        """Voxel slices covering a body-frame box; ``None`` when it misses the image."""
        half = np.broadcast_to(np.asarray(half_extent, dtype=np.float64), (self.dims,)) + margin_mm
        corners = np.array(np.meshgrid(*[[-1.0, 1.0]] * self.dims, indexing="ij")).reshape(self.dims, -1).T
        points = np.asarray(center, dtype=np.float64)[None, :] + corners * half[None, :]
        homogeneous = np.c_[points, np.ones(len(points))]
        indices = (self.body_to_index @ homogeneous.T)[: self.dims]
        lo = np.floor(indices.min(axis=1)).astype(int)
        hi = np.ceil(indices.max(axis=1)).astype(int) + 1
        lo = np.clip(lo, 0, self.shape)
        hi = np.clip(hi, 0, self.shape)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))

    def coords(self, box: Box | None = None) -> list[np.ndarray]:
        """Body-frame coordinate arrays (mm) of the voxels in ``box``, as float32 broadcast views."""
        box = self.full if box is None else box
        key = tuple((part.start, part.stop) for part in box)
        if key in self._coords_cache:
            return self._coords_cache[key]
        axes = []
        for axis, part in enumerate(box):
            shape = [1] * self.dims
            shape[axis] = part.stop - part.start
            axes.append(np.arange(part.start, part.stop, dtype=np.float64).reshape(shape))
        out = []
        for row in range(self.dims):
            total = np.float64(self.index_to_body[row, self.dims])
            for axis in range(self.dims):
                total = total + self.index_to_body[row, axis] * axes[axis]
            out.append(np.broadcast_to(total, tuple(p.stop - p.start for p in box)).astype(np.float32))
        if len(self._coords_cache) > 64:
            self._coords_cache.clear()
        self._coords_cache[key] = out
        return out

    def blend(self, box: Box, fraction: np.ndarray, value: float | np.ndarray, track: str | None = None) -> None:
        """Replace the tissue in ``box`` by ``value`` in proportion ``fraction`` (0..1).

        Every tracked organ map loses what was painted over; ``track`` names the organ gaining it.
        """
        region = self.image[box]
        region += (np.asarray(value, dtype=np.float32) - region) * fraction
        for organ in self.tracked.values():
            organ[box] *= 1.0 - fraction
        if track is not None:
            self.tracked[track][box] += fraction

    def add(self, box: Box, amount: np.ndarray) -> None:
        self.image[box] += amount.astype(np.float32, copy=False)


def paint_ellipsoid(
    canvas: Canvas,
    value: float,
    center: Sequence[float],
    axes: Sequence[float],
    rotation: np.ndarray | None = None,
    edge_mm: float = 1.0,
    wobble: Wobble | None = None,
    within: np.ndarray | None = None,
    track: str | None = None,
) -> tuple[Box, np.ndarray] | None:
    """Blend an ellipsoid of tissue ``value`` into the canvas; returns (box, fraction) or None if outside.

    ``within`` (a full-size fraction map) restricts the shape to another organ; ``track`` names the
    tracked organ map that the painted tissue belongs to.
    """
    axes_array = np.asarray(axes, dtype=np.float64)
    if rotation is None:
        extent = axes_array
    else:  # the half-extent of the rotated ellipsoid along each world axis
        extent = np.sqrt(((np.asarray(rotation) * axes_array[None, :]) ** 2).sum(axis=1))
    box = canvas.box(center, extent + (0.0 if wobble is None else float(np.sum(np.abs(wobble.amplitudes)))))
    if box is None:
        return None
    coords = canvas.coords(box)
    distance = ellipsoid_distance(coords, center, axes, rotation)
    if wobble is not None:
        distance += wobble(coords)
    fraction = soft(distance, edge_mm)
    if within is not None:
        fraction *= within[box]
    canvas.blend(box, fraction, value, track=track)
    return box, fraction


def smooth_field(rng: np.random.Generator, shape: Sequence[int], sigma_voxels: Sequence[float] | float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation (textures, bias fields).

    Wide kernels are applied on a coarse grid and interpolated back, which keeps a 60 mm bias
    field as cheap as a 5 mm texture.
    """
    from scipy.ndimage import gaussian_filter, zoom

    sigma = np.broadcast_to(np.asarray(sigma_voxels, dtype=np.float64), (len(shape),))
    factor = np.maximum(np.floor(sigma / 2.0), 1.0).astype(int)
    coarse_shape = tuple(int(-(-n // f)) + 2 for n, f in zip(shape, factor, strict=True))
    field = gaussian_filter(rng.standard_normal(coarse_shape, dtype=np.float32), sigma=sigma / factor, mode="wrap")
    if np.any(factor > 1):
        field = zoom(field, [f for f in factor], order=1, mode="nearest", grid_mode=False)
    field = np.ascontiguousarray(field[tuple(slice(0, n) for n in shape)])
    field -= np.float32(field.mean())
    std = float(field.std())
    return field / np.float32(std if std > 0 else 1.0)
