"""Lesions: irregular (lobulated, noisy-bordered) blobs painted into a rendered phantom.

The border of a lesion of nominal radius ``R`` lies at ``R * (1 + g(u)) + w(q)`` along the unit
direction ``u`` from its centre: ``g`` is a few low-order lobes (a lobulated outline) and ``w``
a fine plane-wave wobble (a ragged margin). The shape is fixed by ``shape_seed``, so a follow-up
study of the same patient shows the same lesion (grown or shrunk by its diameter only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medrec.synth.shapes import Canvas, Wobble, soft


@dataclass(frozen=True)
class Lesion:
    """One lesion in the patient's body frame.

    Attributes:
        center: body-frame centre in mm (x left, y posterior, z superior; 2D: u left, v feet).
        diameter_mm: nominal diameter (of the enhancing tumor for MR, of the nodule for XR).
        contrast: CT: HU added to the organ (negative for hypodense); MR: enhancement of the
            rim relative to white matter; XR: added attenuation relative to the lung / soft-tissue difference.
        lesion_type: hypodense | hyperdense (CT), tumor (MR), nodule (XR).
        shape_seed: fixes the irregular outline.
        core_fraction: MR only: radius of the necrotic core over the tumor radius (0: solid).
        edema_factor: MR only: radius of the surrounding edema over the tumor radius (<= 1: none).
    """

    center: tuple[float, ...]
    diameter_mm: float
    contrast: float
    lesion_type: str
    shape_seed: int
    core_fraction: float = 0.0
    edema_factor: float = 0.0

    def scaled(self, factor: float) -> Lesion:
        """The same lesion with its diameter multiplied by ``factor`` (a follow-up study)."""
        return Lesion(
            self.center, self.diameter_mm * factor, self.contrast, self.lesion_type, self.shape_seed,
            self.core_fraction, self.edema_factor,
        )


@dataclass(frozen=True)
class LesionOutline:
    """The irregular outline of one lesion (see the module docstring)."""

    lobe_directions: np.ndarray  # (m, dims) unit vectors
    lobe_frequencies: np.ndarray  # (m,)
    lobe_amplitudes: np.ndarray  # (m,) fraction of the radius
    lobe_phases: np.ndarray  # (m,)
    margin: Wobble

    @classmethod
    def sample(cls, shape_seed: int, dims: int, radius_mm: float) -> LesionOutline:
        rng = np.random.default_rng(shape_seed)
        lobes = 3
        directions = rng.normal(size=(lobes, dims))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        return cls(
            lobe_directions=directions,
            lobe_frequencies=rng.uniform(2.0, 4.5, size=lobes),
            lobe_amplitudes=rng.uniform(0.03, 0.10, size=lobes),
            lobe_phases=rng.uniform(0.0, 2.0 * np.pi, size=lobes),
            margin=Wobble.sample(rng, dims, amplitude_mm=0.08 * radius_mm,
                                 wavelength_mm=(0.5 * radius_mm + 2.0, radius_mm + 4.0), waves=5),
        )

    def distance(self, coords: Sequence[np.ndarray], center: Sequence[float], radius_mm: float) -> np.ndarray:
        """Signed distance (mm, positive inside) to the outline scaled to ``radius_mm``."""
        rel = [c - np.float32(o) for c, o in zip(coords, center, strict=True)]
        r = np.sqrt(sum(x * x for x in rel))
        inv = 1.0 / np.maximum(r, np.float32(1e-3))
        lobulation = np.zeros_like(r)
        for direction, frequency, amplitude, phase in zip(
            self.lobe_directions, self.lobe_frequencies, self.lobe_amplitudes, self.lobe_phases, strict=True
        ):
            cosine = sum(np.float32(d) * x for d, x in zip(direction, rel, strict=True)) * inv
            lobulation += np.float32(amplitude) * np.sin(np.float32(frequency) * cosine + np.float32(phase))
        border = np.float32(radius_mm) * (1.0 + lobulation) + self.margin(rel)
        return (border - r).astype(np.float32)


def lesion_distance(canvas: Canvas, lesion: Lesion, radius_mm: float, reach: float = 1.3, seed_offset: int = 0):
    """Box and signed distance map of a lesion outline of ``radius_mm`` on ``canvas`` (None if outside)."""
    box = canvas.box(lesion.center, radius_mm * reach + 2.0)
    if box is None:
        return None, None
    outline = LesionOutline.sample(lesion.shape_seed + seed_offset, canvas.dims, radius_mm)
    return box, outline.distance(canvas.coords(box), lesion.center, radius_mm)


def paint_ct_lesion(canvas: Canvas, lesion: Lesion, organ: np.ndarray, edge_mm: float) -> None:
    """Add ``contrast`` HU inside the lesion, restricted to the organ (the liver)."""
    box, distance = lesion_distance(canvas, lesion, lesion.diameter_mm / 2.0)
    if box is None:
        return
    fraction = soft(distance, edge_mm) * organ[box]
    # a slightly brighter / darker centre than margin, as in real lesions
    rim_weight = 0.85 + 0.15 * np.clip(distance / max(lesion.diameter_mm / 2.0, 1.0), 0.0, 1.0)
    canvas.add(box, np.float32(lesion.contrast) * fraction * rim_weight)


def paint_mr_tumor(
    canvas: Canvas, lesion: Lesion, brain: np.ndarray, white_matter_value: float, edge_mm: float
) -> None:
    """Paint edema (T1-hypointense), an enhancing rim and a necrotic core, in that order.

    ``contrast`` sets the conspicuity of all three: the rim is ``white_matter * (1 + contrast)``,
    the core ``white_matter * max(0.3, 1 - 1.5 * contrast)`` and the edema darkens white matter by
    up to ``min(0.15, 0.5 * contrast)``; so a low-contrast tumor is subtle throughout.
    """
    radius = lesion.diameter_mm / 2.0
    contrast = abs(lesion.contrast)
    inside_brain = np.clip(brain * 1.5, 0.0, 1.0)
    if lesion.edema_factor > 1.0:
        box, distance = lesion_distance(canvas, lesion, radius * lesion.edema_factor, seed_offset=1)
        if box is not None:
            fraction = soft(distance, 2.0 * edge_mm) * brain[box]
            darkening = np.float32(min(0.15, 0.5 * contrast))
            canvas.image[box] *= 1.0 - darkening * fraction
    box, distance = lesion_distance(canvas, lesion, radius)
    if box is None:
        return
    fraction = soft(distance, edge_mm) * inside_brain[box]
    canvas.blend(box, fraction, white_matter_value * (1.0 + contrast))
    if lesion.core_fraction > 0.0:
        box, distance = lesion_distance(canvas, lesion, radius * lesion.core_fraction, seed_offset=2)
        if box is not None:
            fraction = soft(distance, edge_mm) * inside_brain[box]
            canvas.blend(box, fraction, white_matter_value * max(0.3, 1.0 - 1.5 * contrast))


def paint_xr_nodule(canvas: Canvas, lesion: Lesion, lung: np.ndarray, lung_drop: float, edge_mm: float) -> None:
    """Add the projected attenuation of a (lobulated) sphere inside the lung fields."""
    radius = lesion.diameter_mm / 2.0
    box, distance = lesion_distance(canvas, lesion, radius)
    if box is None:
        return
    # chord length through a sphere of the local border radius, normalised to 1 at the centre
    rel = [c - np.float32(o) for c, o in zip(canvas.coords(box), lesion.center, strict=True)]
    r = np.sqrt(sum(x * x for x in rel))
    border = r + distance
    chord = np.sqrt(np.clip(1.0 - (r / np.maximum(border, 1e-3)) ** 2, 0.0, 1.0))
    fraction = soft(distance, edge_mm) * np.maximum(chord, 0.15)
    canvas.add(box, np.float32(lesion.contrast * lung_drop) * fraction * np.clip(lung[box] * 1.3, 0.0, 1.0))
