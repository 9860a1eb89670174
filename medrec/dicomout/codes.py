"""The coded concepts medrec writes into DICOM, each with the reason it was chosen.

Every code here exists in DICOM PS3.16 (as listed by ``pydicom.sr.codedict``) or, where noted, in
SNOMED CT; none is invented. Meanings are spelled as PS3.16 spells them.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

# --- what the model looks for ------------------------------------------------------------------
# The positive class names a finding; the SR's qualitative evaluation asks "<finding>: present or
# absent?" and the SEG's segmented property type is the same finding. All four are members of
# CID 7151 (Segmentation Property Types) and CID 7159 (Lesion Segmentation Types), so one code
# serves both objects. An unknown class name (``anomaly``, ``abnormal``) falls back to Lesion
# (SCT 52988006), the most general of them.
FINDING_CODES: dict[str, CodedConcept] = {
    "lesion": CodedConcept("52988006", "SCT", "Lesion"),
    "tumor": CodedConcept("108369006", "SCT", "Neoplasm"),
    "tumour": CodedConcept("108369006", "SCT", "Neoplasm"),
    "neoplasm": CodedConcept("108369006", "SCT", "Neoplasm"),
    "mass": CodedConcept("4147007", "SCT", "Mass"),
    "nodule": CodedConcept("27925004", "SCT", "Nodule"),
}
DEFAULT_FINDING = FINDING_CODES["lesion"]

# SEG segmented property category (CID 7150): the finding is an abnormal structure.
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = CodedConcept("49755003", "SCT", "Morphologically Abnormal Structure")

# --- present / absent ----------------------------------------------------------------------------
# Values of CID 241 "Present-Absent Only" (SCT 52101004 / 272519000). Chosen over CID 230 Yes / No
# because the statement is about the finding's presence, and over DCM 121053 / 121054, which no
# context group lists. The evaluation's concept name is the finding code itself
# (``Lesion = Present``), the pattern TID 1500 qualitative evaluations use for "is X there".
PRESENT = CodedConcept("52101004", "SCT", "Present")
ABSENT = CodedConcept("272519000", "SCT", "Absent")

# --- numbers ---------------------------------------------------------------------------------------
# DCM 122157 "Probability": the calibrated probability of the positive class. Not DCM 111047
# "Probability of cancer": a lesion is not a cancer.
PROBABILITY = CodedConcept("122157", "DCM", "Probability")
# The finding's probability is the peak of the finding map: the same concept, derived as the
# maximum (SCT 56851009, CID 7464 Region of Interest Measurement Modifiers).
MAXIMUM = CodedConcept("56851009", "SCT", "Maximum")
DIAMETER = CodedConcept("81827009", "SCT", "Diameter")
# A probability has no unit: UCUM "1" (CID 7181 Abstract Multi-dimensional Image Model Component Units).
NO_UNITS = CodedConcept("1", "UCUM", "no units")
MILLIMETER = CodedConcept("mm", "UCUM", "mm")

# --- procedure reported (TID 1500 row 3) -----------------------------------------------------------
# By the source series' Modality. CT and plain radiography are in CID 10005; MR imaging is the
# SNOMED CT procedure 113091000 (not in PS3.16's lists, but a current SNOMED concept); anything
# else is the generic "Imaging procedure" of CID 100 / 101.
IMAGING_PROCEDURE = CodedConcept("363679005", "SCT", "Imaging procedure")
PROCEDURE_CODES: dict[str, CodedConcept] = {
    "CT": CodedConcept("77477000", "SCT", "Computed tomography"),
    "MR": CodedConcept("113091000", "SCT", "Magnetic resonance imaging"),
    "DX": CodedConcept("168537006", "SCT", "Plain radiography"),
    "CR": CodedConcept("168537006", "SCT", "Plain radiography"),
}

# SEG AlgorithmFamilyCodeSequence (CID 7162): medrec's models are neural networks.
ALGORITHM_FAMILY = codes.cid7162.ArtificialIntelligence


def finding_code(positive_class: str) -> CodedConcept:
    """The finding code of a positive class name (``lesion`` -> SCT 52988006 Lesion; unknown -> Lesion)."""
    return FINDING_CODES.get(positive_class.strip().lower(), DEFAULT_FINDING)


def procedure_code(modality: str) -> CodedConcept:
    """The procedure-reported code of a source Modality (CT, MR, DX / CR; others: Imaging procedure)."""
    return PROCEDURE_CODES.get(modality.upper(), IMAGING_PROCEDURE)
