"""Which DICOM objects are images: SOP classes and modalities of non-image IODs.

A segmentation, a dose grid, a structure set, a report or a presentation state is stored next to
the images it belongs to, often in the same series folder, and SEG / RT Dose objects even carry
pixel data with a plausible geometry. They are not scans of the patient, so the index leaves
them out (``non_image_object``) unless ``include_non_image`` asks for them.

The SOP Class UID decides when it is a standard one; a private or missing SOP class falls back
to the Modality. Neither pydicom nor highdicom groups SOP classes by kind, hence the tables.
"""

from __future__ import annotations

import functools
import re

from pydicom.uid import UID

_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_STORAGE = "1.2.840.10008.5.1.4.1.1."
_RT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.1"

# (prefix of the SOP Class UID, what the objects are); a prefix ending in a digit matches itself
# and its sub-classes ("...66" matches "...66" and "...66.4", not "...661").
NON_IMAGE_SOP_CLASS_PREFIXES: tuple[tuple[str, str], ...] = (
    (_STORAGE + "9", "waveform"),
    (_STORAGE + "11", "presentation state"),
    (_STORAGE + "66", "raw data, registration, fiducials or segmentation"),
    (_STORAGE + "67", "real world value mapping"),
    (_STORAGE + "68", "surface scan"),
    (_STORAGE + "88", "structured report or key object selection"),
    (_STORAGE + "90", "content assessment"),
    (_STORAGE + "91", "annotation"),
    (_STORAGE + "104", "encapsulated document"),
    (_STORAGE + "200", "protocol"),
    (_STORAGE + "481", "radiotherapy object"),  # RT Image (481.1) excepted
    ("1.2.840.10008.5.1.4.34", "radiotherapy object"),
    ("1.2.840.10008.5.1.4.38", "hanging protocol"),
    ("1.2.840.10008.5.1.4.39", "color palette"),
    ("1.2.840.10008.5.1.4.43", "implant template"),
    ("1.2.840.10008.5.1.4.44", "implant template"),
    ("1.2.840.10008.5.1.4.45", "implant template"),
    ("1.2.840.10008.1.3.10", "media storage directory"),
)

# Modality (0008,0060) defined terms of non-image objects, for private or missing SOP classes.
NON_IMAGE_MODALITIES: frozenset[str] = frozenset(
    {"SEG", "RTDOSE", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTINTENT", "RTRAD", "RTSEGANN", "SR", "PR", "KO",
     "REG", "FID", "DOC", "PLAN", "RWV", "AU", "ECG", "EPS", "HD", "RESP", "M3D", "OSS", "POS"}
)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _standard_kind(sop_class_uid: str) -> tuple[bool, str | None]:
    """(is a standard SOP class, its non-image kind or None)."""
    if not _UID_PATTERN.match(sop_class_uid):
        return False, None  # not a UID (pydicom would warn on it): the modality decides
    standard = UID(sop_class_uid).name != sop_class_uid
    if sop_class_uid == _RT_IMAGE_STORAGE:
        return standard, None
    for prefix, kind in NON_IMAGE_SOP_CLASS_PREFIXES:
        if sop_class_uid == prefix or sop_class_uid.startswith(prefix + "."):
            return True, kind
    return standard, None


def non_image_object(sop_class_uid: str, modality: str) -> str | None:
    """Describe a non-image object (``Segmentation Storage (modality SEG)``), or None for an image.

    Args:
        sop_class_uid: SOP Class UID (``0008,0016``), empty when unknown.
        modality: Modality (``0008,0060``), empty when unknown.

    Returns:
        The SOP class name and modality of a non-image object; None when the SOP class is a
        standard image class, or is private / missing and the modality is not a non-image one.
    """
    sop_class_uid = sop_class_uid.strip()
    modality = modality.strip().upper()
    shown_modality = modality or "none"
    if sop_class_uid:
        standard, kind = _standard_kind(sop_class_uid)
        if kind is not None:
            return f"{UID(sop_class_uid).name} (modality {shown_modality})"
        if standard:
            return None
    if modality in NON_IMAGE_MODALITIES:
        sop_class = f"SOP class {sop_class_uid}" if sop_class_uid else "no SOP class"
        return f"{sop_class} (modality {modality})"
    return None
