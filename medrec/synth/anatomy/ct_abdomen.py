"""The abdominal CT phantom: contrast-enhanced (portal venous) abdomen in HU, lesions in the liver.

Organs are soft-edged ellipsoids painted back to front; the canvas keeps track of how much of
each voxel is still liver, so lesions stay inside it.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from medrec.synth.anatomy.phantom import Anatomy, Ellipsoid, Phantom, _u, rot
from medrec.synth.lesions import Lesion, paint_ct_lesion
from medrec.synth.shapes import (
    Canvas,
    Wobble,
    ellipsoid_distance,
    paint_ellipsoid,
    smooth_field,
    soft,
)


def _paint_tube(
    canvas: Canvas, value: float, start: np.ndarray, end: np.ndarray, radius: float, within: np.ndarray
) -> None:
    center = (start + end) / 2.0
    half = np.abs(end - start) / 2.0 + radius
    box = canvas.box(center, half)
    if box is None:
        return
    coords = canvas.coords(box)
    axis = end - start
    length2 = float(axis @ axis)
    t = sum(
        np.float32(a) * (c - np.float32(s)) for a, c, s in zip(axis, coords, start, strict=True)
    ) / np.float32(length2)
    t = np.clip(t, 0.0, 1.0)
    dist2 = sum((c - np.float32(s) - t * np.float32(a)) ** 2 for a, c, s in zip(axis, coords, start, strict=True))
    fraction = soft(np.float32(radius) - np.sqrt(dist2), 1.0) * within[box]
    canvas.blend(box, fraction, value)


class CtAbdomen(Phantom):
    """Contrast-enhanced (portal venous) abdominal CT in HU; lesions in the liver."""

    kind = "ct-lesion"
    modality = "CT"
    dims = 3
    background = -1000.0
    default_image_size = 128
    coverage_mm = 180.0
    default_diameter_mm = (18.0, 40.0)
    default_contrast = (10.0, 60.0)
    lesion_types = ("hypodense", "hyperdense")
    max_lesions = 3
    pose_rotation_deg = (2.0, 2.0, 4.0)
    pose_shift_mm = (10.0, 12.0, 8.0)

    def sample_anatomy(self, rng: np.random.Generator, sex: str) -> Anatomy:
        scale = 1.05 if sex == "M" else 0.96
        ax, ay = _u(rng, 135, 168) * scale, _u(rng, 100, 124) * scale
        fat, muscle = _u(rng, 6, 32), _u(rng, 7, 12)
        cax, cay = ax - fat - muscle, ay - fat - muscle
        spine_y = 0.6 * cay
        liver_hu = _u(rng, 95, 120)
        liver = (
            Ellipsoid((-0.42 * cax, _u(rng, -0.1, 0.0) * cay, _u(rng, 0, 15)),
                      (0.5 * cax * _u(rng, 0.9, 1.1), 0.72 * cay * _u(rng, 0.9, 1.05), _u(rng, 72, 86)),
                      rot(_u(rng, -5, 5), _u(rng, -5, 5), _u(rng, -10, 10))),
            Ellipsoid((0.08 * cax, -0.45 * cay, _u(rng, 22, 38)),
                      (0.38 * cax * _u(rng, 0.85, 1.15), 0.32 * cay, _u(rng, 38, 50)),
                      rot(_u(rng, -5, 5), _u(rng, -5, 5), _u(rng, -12, 12))),
        )
        occluders = [
            Ellipsoid((-0.18 * cax, spine_y - 28, 0.0), (14.0, 10.0, 300.0)),  # inferior vena cava
            Ellipsoid((0.12 * cax, spine_y - 30, 0.0), (11.0, 11.0, 300.0)),  # aorta
            Ellipsoid((0.0, spine_y, 0.0), (23.0, 19.0, 300.0)),  # vertebral bodies
            Ellipsoid((-0.5 * cax, 0.5 * cay, _u(rng, -70, -50)), (27.0, 30.0, 50.0), rot(0, 0, _u(rng, 10, 30))),
            Ellipsoid((0.5 * cax, 0.5 * cay, _u(rng, -55, -35)), (27.0, 30.0, 50.0), rot(0, 0, -_u(rng, 10, 30))),
        ]
        gallbladder = None
        if rng.random() < 0.85:
            gallbladder = Ellipsoid((-0.22 * cax, -0.42 * cay, _u(rng, -55, -30)),
                                    (_u(rng, 11, 16), _u(rng, 22, 34), _u(rng, 16, 26)),
                                    rot(_u(rng, -10, 10), 0, _u(rng, -30, 10)))
            occluders.append(gallbladder)
        gas = []
        for _ in range(int(rng.integers(3, 7))):
            blob = Ellipsoid((_u(rng, -0.1, 0.8) * cax, _u(rng, -0.8, 0.1) * cay, _u(rng, -90, -20)),
                             (_u(rng, 5, 14),) * 3)
            gas.append(blob)
            occluders.append(blob)
        porta = np.array([-0.22 * cax, 0.05 * cay, _u(rng, -10, 10)])
        vessels = []
        for _ in range(int(rng.integers(5, 9))):
            direction = rng.normal(size=3) + np.array([-1.0, -0.3, 0.6])
            direction /= np.linalg.norm(direction)
            vessels.append((porta, porta + direction * _u(rng, 40, 100), _u(rng, 2.5, 5.0)))
        return {
            "body": Ellipsoid((0.0, 0.0, 0.0), (ax, ay, 300.0)),
            "wall": Ellipsoid((0.0, 0.0, 0.0), (ax - fat, ay - fat, 300.0)),
            "cavity": Ellipsoid((0.0, 0.0, 0.0), (cax, cay, 300.0)),
            "fat_hu": _u(rng, -110, -85),
            "muscle_hu": _u(rng, 45, 60),
            "cavity_hu": _u(rng, 25, 45),
            "mesenteric_fat": _u(rng, 0.2, 0.6),
            "liver": liver,
            "liver_hu": liver_hu,
            "liver_wobble": Wobble.sample(rng, 3, 5.0, (50.0, 120.0)),
            "spleen": Ellipsoid((0.62 * cax, 0.35 * cay, _u(rng, 10, 35)),
                                (_u(rng, 22, 30), _u(rng, 40, 52), _u(rng, 45, 60)),
                                rot(0, 0, _u(rng, 20, 40))),
            "spleen_hu": liver_hu - _u(rng, 0, 15),
            "stomach": Ellipsoid((0.35 * cax, -0.3 * cay, _u(rng, 30, 50)),
                                 (_u(rng, 35, 50), _u(rng, 28, 38), _u(rng, 28, 40))),
            "aorta_hu": _u(rng, 150, 230),
            "occluders": occluders,
            "gallbladder": gallbladder,
            "gas": gas,
            "vessels": vessels,
            "spine_y": spine_y,
            "disc_phase": _u(rng, 0, 32),
            "lesion_box": (np.array([-0.95 * cax, -0.85 * cay, -80.0]), np.array([0.5 * cax, 0.8 * cay, 80.0])),
        }

    def lesion_clearance(self, anatomy: Anatomy, points: np.ndarray) -> np.ndarray:
        coords = [points[:, d].astype(np.float32) for d in range(3)]
        wobble = anatomy["liver_wobble"](coords)
        liver = np.maximum(*(part.distance(coords) for part in anatomy["liver"])) + wobble
        clearance = np.minimum(liver, anatomy["cavity"].distance(coords))
        for occluder in anatomy["occluders"]:
            clearance = np.minimum(clearance, -occluder.distance(coords))
        # keep the whole lesion inside every study's slab, whatever its pose
        slab = self.coverage_mm / 2.0 - self.pose_shift_mm[2] - np.abs(points[:, 2])
        return np.minimum(clearance, slab)

    def render(self, canvas: Canvas, anatomy: Anatomy, lesions: tuple[Lesion, ...], rng: np.random.Generator) -> None:
        a = anatomy
        paint_ellipsoid(canvas, a["fat_hu"], a["body"].center, a["body"].axes, edge_mm=1.5)
        paint_ellipsoid(canvas, a["muscle_hu"], a["wall"].center, a["wall"].axes)
        box, cavity = paint_ellipsoid(canvas, a["cavity_hu"], a["cavity"].center, a["cavity"].axes)
        # mesenteric fat: a smooth random pattern of fat lobules between the bowel loops
        sigma = np.maximum(6.0 / canvas.voxel_mm, 0.5)
        fat_share = soft(smooth_field(rng, canvas.shape, sigma) - np.float32(1.0 - a["mesenteric_fat"]), 0.25)
        canvas.blend(box, fat_share[box] * cavity * np.float32(0.8), a["fat_hu"])

        canvas.track("liver")
        in_cavity = _full(canvas, (box, cavity))
        for part in a["liver"]:
            paint_ellipsoid(canvas, a["liver_hu"], part.center, part.axes, part.rotation, wobble=a["liver_wobble"],
                            within=in_cavity, track="liver")
        texture = smooth_field(rng, canvas.shape, np.maximum(5.0 / canvas.voxel_mm, 0.5)) * np.float32(3.0)
        canvas.image += texture * canvas.tracked["liver"]
        for start, end, radius in a["vessels"]:
            _paint_tube(canvas, a["liver_hu"] + 45.0, start, end, radius, within=canvas.tracked["liver"].copy())

        spleen = a["spleen"]
        paint_ellipsoid(canvas, a["spleen_hu"], spleen.center, spleen.axes, spleen.rotation)
        stomach = a["stomach"]
        hit = paint_ellipsoid(canvas, 45.0, stomach.center, stomach.axes)
        if hit is not None:
            inner = paint_ellipsoid(canvas, 12.0, stomach.center, tuple(x - 4.0 for x in stomach.axes))
            gas_center = (stomach.center[0], stomach.center[1] - 0.55 * stomach.axes[1], stomach.center[2])
            gas_axes = (0.7 * stomach.axes[0], 0.45 * stomach.axes[1], 0.6 * stomach.axes[2])
            paint_ellipsoid(canvas, -950.0, gas_center, gas_axes, within=_full(canvas, inner))
        if a["gallbladder"] is not None:
            g = a["gallbladder"]
            paint_ellipsoid(canvas, 8.0, g.center, g.axes, g.rotation)
        for blob in a["gas"]:
            paint_ellipsoid(canvas, -900.0, blob.center, blob.axes, within=in_cavity)
        # kidneys: cortex, medulla, sinus fat
        for kidney in a["occluders"][3:5]:
            paint_ellipsoid(canvas, 175.0, kidney.center, kidney.axes, kidney.rotation)
            paint_ellipsoid(canvas, 115.0, kidney.center, tuple(0.62 * x for x in kidney.axes), kidney.rotation)
            medial = (kidney.center[0] * 0.8, kidney.center[1], kidney.center[2])
            paint_ellipsoid(canvas, -60.0, medial, (7.0, 10.0, 18.0), kidney.rotation)
        ivc, aorta = a["occluders"][0], a["occluders"][1]
        paint_ellipsoid(canvas, a["aorta_hu"] - 40.0, ivc.center, ivc.axes)
        paint_ellipsoid(canvas, a["aorta_hu"], aorta.center, aorta.axes)
        self._paint_spine(canvas, a)

        for lesion in lesions:
            paint_ct_lesion(canvas, lesion, canvas.tracked["liver"], self.edge_mm)

    def _paint_spine(self, canvas: Canvas, a: Anatomy) -> None:
        y = a["spine_y"]
        for side in (-1.0, 1.0):
            paint_ellipsoid(canvas, 55.0, (side * 38.0, y + 42.0, 0.0), (26.0, 22.0, 300.0))
        paint_ellipsoid(canvas, 480.0, (0.0, y + 30.0, 0.0), (17.0, 14.0, 300.0))
        paint_ellipsoid(canvas, 15.0, (0.0, y + 29.0, 0.0), (9.0, 8.0, 300.0))
        paint_ellipsoid(canvas, 450.0, (0.0, y + 52.0, 0.0), (5.0, 13.0, 300.0))
        body = paint_ellipsoid(canvas, 550.0, (0.0, y, 0.0), (23.0, 19.0, 300.0))
        if body is None:
            return
        box, _ = body
        z = canvas.coords(box)[2]
        # intervertebral discs every 32 mm: soft tissue instead of cancellous bone
        disc = soft(np.float32(4.0) - np.abs(np.mod(z + np.float32(a["disc_phase"]), 32.0) - 16.0), 1.0)
        inner = soft(ellipsoid_distance(canvas.coords(box), (0.0, y, 0.0), (20.0, 16.0, 300.0)), 1.0)
        canvas.blend(box, inner, np.float32(220.0) * (1.0 - disc) + np.float32(90.0) * disc)

    def add_noise(self, canvas: Canvas, sigma: float, rng: np.random.Generator) -> None:
        # CT noise is correlated in-plane by the reconstruction kernel
        white = rng.standard_normal(canvas.shape, dtype=np.float32)
        noise = gaussian_filter(white, sigma=(0.6, 0.6, 0.0), mode="wrap")
        noise *= np.float32(sigma / max(float(noise.std()), 1e-6))
        canvas.image += noise


def _full(canvas: Canvas, painted: tuple | None) -> np.ndarray:
    """A full-size fraction map from a (box, fraction) pair returned by paint_ellipsoid."""
    out = np.zeros(canvas.shape, dtype=np.float32)
    if painted is not None:
        box, fraction = painted
        out[box] = fraction
    return out
