"""What every phantom is: the :class:`Phantom` interface (sample an anatomy, place lesions in their organ,
render a study, add the modality's noise) and the soft-edged ellipsoids that anatomy is made of.

Body frame: x towards the patient's left, y posterior, z superior (LPS axes), origin at the centre
of the scanned region. 2D (chest radiograph): u towards the patient's left, v towards the feet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medrec.synth.lesions import Lesion
from medrec.synth.shapes import Canvas, ellipsoid_distance, rotation_matrix

Anatomy = dict[str, Any]


@dataclass(frozen=True)
class Ellipsoid:
    center: tuple[float, ...]
    axes: tuple[float, ...]
    rotation: np.ndarray | None = None

    def distance(self, coords) -> np.ndarray:  # sequence of arrays
        return ellipsoid_distance(coords, self.center, self.axes, self.rotation)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def rot(*angles_deg: float) -> np.ndarray:
    """Rotation matrix from angles in degrees (about x, y, z)."""
    return rotation_matrix(angles_deg)


class Phantom:
    """Interface of a phantom kind (see the concrete classes)."""

    kind: str
    modality: str
    dims: int
    background: float
    default_image_size: int
    coverage_mm: float  # extent along the slice normal (3D)
    default_diameter_mm: tuple[float, float]
    default_contrast: tuple[float, float]
    lesion_types: tuple[str, ...]
    max_lesions: int
    edge_mm: float = 1.0
    pose_rotation_deg: tuple[float, ...]
    pose_shift_mm: tuple[float, ...]

    def sample_anatomy(self, rng: np.random.Generator, sex: str) -> Anatomy:
        raise NotImplementedError

    def lesion_clearance(self, anatomy: Anatomy, points: np.ndarray) -> np.ndarray:
        """Distance (mm) from each body-frame point (n, dims) to the nearest edge of the lesion's organ."""
        raise NotImplementedError

    def sample_lesion_extras(self, rng: np.random.Generator, diameter_mm: float) -> dict[str, float]:
        return {}

    def render(self, canvas: Canvas, anatomy: Anatomy, lesions: tuple[Lesion, ...], rng: np.random.Generator) -> None:
        raise NotImplementedError

    def add_noise(self, canvas: Canvas, sigma: float, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def sample_lesions(
        self,
        rng: np.random.Generator,
        anatomy: Anatomy,
        count: int,
        diameter_mm: tuple[float, float],
        contrast: tuple[float, float],
        lesion_type: str,
    ) -> tuple[Lesion, ...]:
        """Place ``count`` non-overlapping lesions inside the target organ (rejection sampling).

        A lesion that finds no room after four tries shrinks by 15 % per try, down to the
        lower diameter bound, and is dropped if it still fits nowhere; the ground truth records the
        diameter actually rendered.
        """
        lesions: list[Lesion] = []
        lo, hi = anatomy["lesion_box"]
        for _ in range(count):
            diameter = _u(rng, *diameter_mm)
            magnitude = _u(rng, *contrast)
            sign = -1.0 if lesion_type == "hypodense" else 1.0
            center = None
            for attempt in range(12):
                if attempt >= 4:
                    diameter = max(diameter * 0.85, diameter_mm[0])
                radius = diameter / 2.0
                candidates = rng.uniform(lo, hi, size=(400, len(lo)))
                clearance = self.lesion_clearance(anatomy, candidates)
                ok = clearance >= 0.6 * radius + 1.0
                for other in lesions:
                    gap = np.linalg.norm(candidates - np.asarray(other.center), axis=1)
                    ok &= gap >= 1.1 * (radius + other.diameter_mm / 2.0)
                if ok.any():
                    center = candidates[int(np.flatnonzero(ok)[0])]
                    break
            if center is None:
                continue
            lesions.append(
                Lesion(
                    center=tuple(round(float(c), 3) for c in center),
                    diameter_mm=round(diameter, 3),
                    contrast=round(sign * magnitude, 4),
                    lesion_type=lesion_type,
                    shape_seed=int(rng.integers(0, 2**31 - 1)),
                    **self.sample_lesion_extras(rng, diameter),
                )
            )
        return tuple(lesions)
