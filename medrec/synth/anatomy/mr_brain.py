"""The brain MR phantom: T1-weighted, post contrast, in units of white-matter signal (~0.78); tumors in the
cerebral white matter."""

from __future__ import annotations

import numpy as np

from medrec.synth.anatomy.phantom import Anatomy, Ellipsoid, Phantom, _u
from medrec.synth.lesions import Lesion, paint_mr_tumor
from medrec.synth.shapes import (
    Canvas,
    Wobble,
    ellipsoid_distance,
    paint_ellipsoid,
    rotation_matrix,
    smooth_field,
    soft,
)


class MrBrain(Phantom):
    """T1-weighted post-contrast brain MR in units of white-matter signal; tumors in the white matter."""

    kind = "mri-tumor"
    modality = "MR"
    dims = 3
    background = 0.0
    default_image_size = 128
    coverage_mm = 150.0
    default_diameter_mm = (12.0, 36.0)
    default_contrast = (0.06, 0.5)
    lesion_types = ("tumor",)
    max_lesions = 1
    pose_rotation_deg = (4.0, 3.0, 5.0)
    pose_shift_mm = (4.0, 6.0, 6.0)
    white_matter = 0.78

    def sample_anatomy(self, rng: np.random.Generator, sex: str) -> Anatomy:
        scale = 1.03 if sex == "M" else 0.97
        head = (_u(rng, 70, 78) * scale, _u(rng, 88, 98) * scale, _u(rng, 80, 90) * scale)
        center = (0.0, 0.0, _u(rng, -12, -4))
        rot = rotation_matrix((_u(rng, -3, 3), _u(rng, -3, 3), _u(rng, -3, 3)))
        ventricle_scale = _u(rng, 0.7, 1.6)
        ventricles = []
        for side in (-1.0, 1.0):
            ventricles.append(Ellipsoid((side * (6.0 + 3.0 * ventricle_scale), -2.0, center[2] + 22.0),
                                        (5.0 * ventricle_scale, 27.0, 11.0 * ventricle_scale),
                                        rotation_matrix((0.0, 0.0, -side * _u(rng, 5, 15)))))
        gm_shell, wm_inset = _u(rng, 11, 14), _u(rng, 4.5, 6.5)
        brain_axes = tuple(h - gm_shell for h in head)
        return {
            "center": center,
            "rotation": rot,
            "head": head,
            "skull": _u(rng, 5.0, 7.0),
            "scalp": _u(rng, 4.0, 6.5),
            "brain_axes": brain_axes,
            "wm_axes": tuple(b - wm_inset for b in brain_axes),
            "gyri": Wobble.sample(rng, 3, 3.0, (14.0, 28.0), waves=8),
            "ventricles": ventricles,
            "nuclei": [Ellipsoid((side * 20.0, 2.0, center[2] + 8.0), (10.0, 16.0, 11.0)) for side in (-1.0, 1.0)],
            "gm": _u(rng, 0.5, 0.56),
            "csf": _u(rng, 0.16, 0.24),
            "lesion_box": (np.array([-60.0, -75.0, center[2] - 40.0]), np.array([60.0, 75.0, center[2] + 60.0])),
        }

    def lesion_clearance(self, anatomy: Anatomy, points: np.ndarray) -> np.ndarray:
        coords = [points[:, d].astype(np.float32) for d in range(3)]
        clearance = ellipsoid_distance(coords, anatomy["center"], anatomy["wm_axes"], anatomy["rotation"]) + 6.0
        for structure in anatomy["ventricles"]:
            clearance = np.minimum(clearance, -structure.distance(coords) + 4.0)
        slab = self.coverage_mm / 2.0 - self.pose_shift_mm[2] - np.abs(points[:, 2])
        return np.minimum(clearance, slab)

    def sample_lesion_extras(self, rng: np.random.Generator, diameter_mm: float) -> dict[str, float]:
        core = _u(rng, 0.35, 0.65) if diameter_mm >= 16.0 and rng.random() < 0.8 else 0.0
        edema = _u(rng, 1.0, 2.0) if rng.random() < 0.85 else 0.0
        return {"core_fraction": round(core, 4), "edema_factor": round(edema, 4)}

    def render(self, canvas: Canvas, anatomy: Anatomy, lesions: tuple[Lesion, ...], rng: np.random.Generator) -> None:
        a = anatomy
        c, rot, head = a["center"], a["rotation"], a["head"]
        paint_ellipsoid(canvas, 0.85, c, head, rot, edge_mm=1.5)  # scalp fat
        paint_ellipsoid(canvas, 0.06, c, tuple(h - a["scalp"] for h in head), rot)  # skull
        paint_ellipsoid(canvas, a["csf"], c, tuple(h - a["scalp"] - a["skull"] for h in head), rot)
        canvas.track("brain")
        paint_ellipsoid(canvas, a["gm"], c, a["brain_axes"], rot, wobble=None, track="brain")
        paint_ellipsoid(canvas, self.white_matter, c, a["wm_axes"], rot, wobble=a["gyri"], track="brain")
        # sulci: CSF between gyri reaches into the grey matter
        brain = canvas.tracked["brain"]
        box = canvas.full
        coords = canvas.coords(box)
        sulci = soft(a["gyri"](coords) - np.float32(2.0), 0.6) * brain * np.float32(0.7)
        shell = soft(np.float32(6.0) - np.abs(ellipsoid_distance(coords, c, a["brain_axes"], rot) - 2.0), 1.0)
        canvas.blend(box, sulci * shell, a["csf"])
        # interhemispheric fissure
        fissure = (soft(np.float32(1.2) - np.abs(coords[0] - np.float32(c[0])), 0.5)
                   * soft(coords[2] - np.float32(c[2] - 10.0), 3.0))
        canvas.blend(box, fissure * brain, a["csf"])
        for nucleus in a["nuclei"]:
            paint_ellipsoid(canvas, 0.62, nucleus.center, nucleus.axes, rot, track="brain")
        for ventricle in a["ventricles"]:
            paint_ellipsoid(canvas, a["csf"], ventricle.center, ventricle.axes, ventricle.rotation)
        bias = smooth_field(rng, canvas.shape, np.maximum(3.0 / canvas.voxel_mm, 0.5))
        canvas.image *= 1.0 + np.float32(0.015) * bias
        for lesion in lesions:
            paint_mr_tumor(canvas, lesion, canvas.tracked["brain"], self.white_matter, self.edge_mm)
        # receive-coil bias field: smooth multiplicative shading
        bias = Wobble.sample(rng, 3, 0.1, (180.0, 400.0), waves=3)
        canvas.image *= 1.0 + bias(canvas.coords())

    def add_noise(self, canvas: Canvas, sigma: float, rng: np.random.Generator) -> None:
        # magnitude images: Rician noise
        real = canvas.image + rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(sigma)
        imag = rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(sigma)
        canvas.image = np.sqrt(real * real + imag * imag)
