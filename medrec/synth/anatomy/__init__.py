"""The three phantoms: abdominal CT, brain MR and chest radiograph.

Each phantom samples a patient's anatomy (sizes, positions, rotations of a few degrees) in the
patient's body frame, places lesions where they belong (liver, cerebral white matter, lung fields)
and renders a study onto a :class:`~medrec.synth.shapes.Canvas` in modality units: HU for CT,
signal relative to white matter ~0.78 for MR (T1-weighted, post contrast), attenuation for XR.
Organs are soft-edged ellipsoids painted back to front; the canvas keeps track of how much of
each voxel is still liver / brain / lung, so lesions stay inside their organ.

Body frame: x towards the patient's left, y posterior, z superior (LPS axes), origin at the centre
of the scanned region. 2D (chest radiograph): u towards the patient's left, v towards the feet.

One module per phantom kind (:mod:`~medrec.synth.anatomy.ct_abdomen`, :mod:`~medrec.synth.anatomy.mr_brain`,
:mod:`~medrec.synth.anatomy.xr_chest`), each a :class:`~medrec.synth.anatomy.phantom.Phantom`;
``PHANTOMS`` maps each kind to its phantom.
"""

from __future__ import annotations

from medrec.synth.anatomy.ct_abdomen import CtAbdomen
from medrec.synth.anatomy.mr_brain import MrBrain
from medrec.synth.anatomy.phantom import Anatomy, Ellipsoid, Phantom, rot
from medrec.synth.anatomy.xr_chest import XrChest

__all__ = [
    "PHANTOMS",
    "Anatomy",
    "CtAbdomen",
    "Ellipsoid",
    "MrBrain",
    "Phantom",
    "XrChest",
    "rot",
]


PHANTOMS: dict[str, Phantom] = {p.kind: p for p in (CtAbdomen(), MrBrain(), XrChest())}
