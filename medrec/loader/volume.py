"""The intermediate result of every reader: voxels, RAS affine and what was noticed on the way."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# diag(-1, -1, 1, 1): DICOM patient space (LPS) to the RAS space of NIfTI / nibabel / MONAI.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """A decoded image in the medrec geometry convention.

    Attributes:
        array: float32 real-world values, ``(I, J, K)`` for volumes or ``(I, J)`` for 2D images;
            ``array[i, j, k]`` with i along the DICOM row direction, j along the column direction.
        affine_ras: 4x4 float64 voxel-to-RAS-world matrix (mm).
        modality: CT, MR, DX, ... (from the header or the manifest).
        photometric: the DICOM Photometric Interpretation, or ``""`` for NIfTI.
        notes: things the reader did or noticed that leave the image usable (re-sorted slices,
            colour converted to luminance, uneven spacing, assumed orientation).
        extra: further metadata (transfer syntax, affine source, ...); values are strings or numbers.
    """

    array: np.ndarray
    affine_ras: np.ndarray
    modality: str = ""
    photometric: str = ""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, str | float | int] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """2 for a single image, 3 for a volume."""
        return self.array.ndim

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each array axis (column norms of the affine, as MONAI computes it)."""
        return np.linalg.norm(self.affine_ras[:3, : self.spatial_dims], axis=0)
