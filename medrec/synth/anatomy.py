"""The three phantoms: abdominal CT, brain MR and chest radiograph.

Each phantom samples a patient's anatomy (sizes, positions, rotations of a few degrees) in the
patient's body frame, places lesions where they belong (liver, cerebral white matter, lung fields)
and renders a study onto a :class:`~medrec.synth.shapes.Canvas` in modality units: HU for CT,
signal relative to white matter ~0.78 for MR (T1-weighted, post contrast), attenuation for XR.
Organs are soft-edged ellipsoids painted back to front; the canvas keeps track of how much of
each voxel is still liver / brain / lung, so lesions stay inside their organ.

Body frame: x towards the patient's left, y posterior, z superior (LPS axes), origin at the centre
of the scanned region. 2D (chest radiograph): u towards the patient's left, v towards the feet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from medrec.synth.lesions import Lesion, paint_ct_lesion, paint_mr_tumor, paint_xr_nodule
from medrec.synth.shapes import (
    Canvas,
    Wobble,
    ellipsoid_distance,
    paint_ellipsoid,
    rotation_matrix,
    smooth_field,
    soft,
)

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


PHANTOMS: dict[str, Phantom] = {p.kind: p for p in (CtAbdomen(), MrBrain(), XrChest())}
