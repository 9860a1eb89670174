"""Slice directions: the unit normal of an ImageOrientationPatient, and directions from PatientOrientation letters."""

from __future__ import annotations

import numpy as np

from medrec.errors import DicomError

_IDENTITY_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

_LETTER_DIRECTIONS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0), "H": (0, 0, 1),
                      "F": (0, 0, -1)}


def _patient_orientation(value: object) -> np.ndarray | None:
    """Direction cosines (LPS) from PatientOrientation letters (e.g. ``L\\F`` for a PA chest film).

    Each of the two values names where the rows / columns run (``L``, ``R``, ``A``, ``P``, ``H``,
    ``F``; several letters for an oblique direction). Returns None when absent or not orthogonal.
    """
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    directions = []
    for letters in value:
        text = str(letters).strip().upper()
        if not text or any(letter not in _LETTER_DIRECTIONS for letter in text):
            return None
        vector = np.sum([_LETTER_DIRECTIONS[letter] for letter in text], axis=0).astype(np.float64)
        if np.linalg.norm(vector) == 0:
            return None
        directions.append(vector / np.linalg.norm(vector))
    if abs(directions[0] @ directions[1]) > 0.01:
        return None
    return np.concatenate(directions)


# Unit normals of the orientations seen so far (the slices of a series share one); read-only arrays.
_NORMALS: dict[bytes, np.ndarray] = {}  # dtype + bytes of the orientation -> normal
_NORMALS_KEPT = 256


def _normal(orientation: np.ndarray, path: str) -> np.ndarray:
    key = orientation.dtype.str.encode() + orientation.tobytes()
    normal = _NORMALS.get(key)
    if normal is not None:
        return normal
    row, col = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01 or abs(row @ col) > 0.01:
        raise DicomError(
            f"{path}: ImageOrientationPatient {list(orientation)} is not two orthogonal unit vectors"
        )
    normal = np.cross(row / np.linalg.norm(row), col / np.linalg.norm(col))
    normal = normal / np.linalg.norm(normal)
    normal.flags.writeable = False
    if len(_NORMALS) < _NORMALS_KEPT:
        _NORMALS[key] = normal
    return normal
