"""The chest radiograph phantom: PA projection in attenuation units; nodules in the lung fields."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from medrec.synth.anatomy.phantom import Anatomy, Ellipsoid, Phantom, _u
from medrec.synth.lesions import Lesion, paint_xr_nodule
from medrec.synth.shapes import Canvas, rotation_matrix, soft


class XrChest(Phantom):
    """PA chest radiograph in attenuation units (air 0, soft tissue ~1); nodules in the lung fields."""

    kind = "xr-nodule"
    modality = "DX"
    dims = 2
    background = 0.0
    default_image_size = 256
    coverage_mm = 0.0
    default_diameter_mm = (10.0, 30.0)
    default_contrast = (0.12, 0.4)
    lesion_types = ("nodule",)
    max_lesions = 1
    edge_mm = 1.0
    lung_drop = 0.55
    pose_rotation_deg = (3.0,)
    pose_shift_mm = (12.0, 12.0)

    def sample_anatomy(self, rng: np.random.Generator, sex: str) -> Anatomy:
        scale = 1.05 if sex == "M" else 0.95
        width = _u(rng, 150, 178) * scale
        lungs = []
        dome = _u(rng, 60, 85)
        for side in (-1.0, 1.0):
            lungs.append(Ellipsoid((side * 0.5 * width * _u(rng, 0.9, 1.0), _u(rng, -30, -15)),
                                   (0.36 * width * _u(rng, 0.92, 1.08), _u(rng, 120, 140)),
                                   rotation_matrix((side * _u(rng, 0, 6),))))
        ribs = []
        first = _u(rng, -175, -160)
        pitch = _u(rng, 22, 27)
        for k in range(11):
            ribs.append((first + k * pitch, _u(rng, 8.5, 11.0)))
        return {
            "width": width,
            "lungs": lungs,
            "dome": (dome, dome + _u(rng, 8, 20)),  # right dome higher than left
            "heart": Ellipsoid((_u(rng, 0.1, 0.2) * width, _u(rng, 40, 60)),
                               (_u(rng, 0.36, 0.46) * width, _u(rng, 55, 72)),
                               rotation_matrix((_u(rng, -35, -20),))),
            "knob": Ellipsoid((_u(rng, 15, 30), _u(rng, -85, -70)), (_u(rng, 16, 24), _u(rng, 14, 20))),
            "ribs": ribs,
            "lesion_box": (np.array([-width, -170.0]), np.array([width, 100.0])),
        }

    def _lung_distance(self, anatomy: Anatomy, coords) -> np.ndarray:
        best = None
        for side, lung in zip((-1.0, 1.0), anatomy["lungs"], strict=True):
            distance = lung.distance(coords)
            dome = anatomy["dome"][0 if side < 0 else 1]
            rel = (coords[0] - np.float32(lung.center[0])) / np.float32(lung.axes[0])
            diaphragm = np.float32(dome) - np.float32(22.0) * (1.0 - np.clip(rel, -1.0, 1.0) ** 2) - coords[1]
            distance = np.minimum(distance, diaphragm)
            best = distance if best is None else np.maximum(best, distance)
        heart = anatomy["heart"].distance(coords)
        knob = anatomy["knob"].distance(coords)
        return np.minimum(best, -np.maximum(heart, knob))

    def lesion_clearance(self, anatomy: Anatomy, points: np.ndarray) -> np.ndarray:
        coords = [points[:, d].astype(np.float32) for d in range(2)]
        return self._lung_distance(anatomy, coords)

    def render(self, canvas: Canvas, anatomy: Anatomy, lesions: tuple[Lesion, ...], rng: np.random.Generator) -> None:
        a = anatomy
        width = a["width"]
        box = canvas.full
        u, v = canvas.coords(box)
        # trunk: a boxy outline (superellipse), thicker (more attenuating) in the middle
        s = (np.abs(u / np.float32(width)) ** 4 + np.abs((v - np.float32(60.0)) / np.float32(330.0)) ** 4) ** 0.25
        trunk = soft((1.0 - s) * np.float32(width), 3.0)
        profile = np.sqrt(np.clip(1.0 - (u / np.float32(width)) ** 2, 0.0, 1.0))
        canvas.image += trunk * (np.float32(0.55) + np.float32(0.45) * profile)
        canvas.image += trunk * soft(v - np.float32(a["dome"][1] + 10.0), 15.0) * np.float32(0.15)  # abdomen
        # spine with vertebral bodies every ~28 mm
        spine = soft(np.float32(18.0) - np.abs(u), 2.0) * trunk
        canvas.image += spine * (np.float32(0.25) + np.float32(0.05) * np.cos(v * np.float32(2 * np.pi / 28.0)))
        # lung fields: air lowers attenuation; the heart and aortic knob overlie them
        lung = soft(self._lung_distance(a, [u, v]), 2.5)
        lung_profile = np.float32(0.65) + np.float32(0.35) * profile
        canvas.image -= np.float32(self.lung_drop) * lung * lung_profile
        heart = soft(a["heart"].distance([u, v]), 2.5)
        canvas.image += heart * np.float32(0.12)
        # ribs: posterior arcs (brighter) and anterior arcs (fainter), both sides
        for offset, thickness in a["ribs"]:
            for side in (-1.0, 1.0):
                lateral = np.clip(side * u, 0.0, None)
                posterior = np.float32(offset) + np.float32(0.0032) * (lateral - np.float32(70.0)) ** 2
                reach = soft(np.float32(0.92 * width) - lateral, 4.0) * soft(lateral - np.float32(10.0), 3.0)
                band = soft(np.float32(thickness / 2.0) - np.abs(v - posterior), 1.2) * reach
                anterior = np.float32(offset + 55.0) + np.float32(0.3) * (np.float32(150.0) - lateral)
                band_a = (soft(np.float32(thickness / 2.5) - np.abs(v - anterior), 1.5) * reach
                          * soft(lateral - 40.0, 5.0))
                canvas.image += (np.float32(0.16) * band + np.float32(0.06) * band_a) * trunk
        # clavicles
        for side in (-1.0, 1.0):
            lateral = side * u
            line = np.float32(-172.0) - np.float32(0.15) * (lateral - np.float32(20.0))
            band = (soft(np.float32(7.0) - np.abs(v - line), 1.5) * soft(lateral - 20.0, 3.0)
                    * soft(np.float32(150.0) - lateral, 4.0))
            canvas.image += np.float32(0.22) * band
        lung_map = lung * (1.0 - heart)
        for lesion in lesions:
            paint_xr_nodule(canvas, lesion, lung_map, self.lung_drop, self.edge_mm)
        # detector blur
        canvas.image = gaussian_filter(canvas.image, sigma=0.6)

    def add_noise(self, canvas: Canvas, sigma: float, rng: np.random.Generator) -> None:
        # after the log transform, quantum noise grows where fewer photons arrive (more attenuation)
        noise = rng.standard_normal(canvas.shape, dtype=np.float32)
        canvas.image += noise * np.float32(sigma) * np.exp(np.float32(0.5) * canvas.image)
