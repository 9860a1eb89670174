"""The study filters of a ``dicomweb:URL`` INPUT, shared by ``medrec index`` and ``medrec score``."""

from __future__ import annotations

from typing import Any

import typer

STUDY_UID = typer.Option([], "--study-uid", help="dicomweb INPUT: only this StudyInstanceUID (repeatable).")
PATIENT_ID = typer.Option([], "--patient-id", help="dicomweb INPUT: only this PatientID (repeatable).")
ACCESSION = typer.Option([], "--accession", help="dicomweb INPUT: only this AccessionNumber (repeatable).")
SINCE = typer.Option(None, "--since", metavar="DATE", help="dicomweb INPUT: studies on or after DATE (YYYY-MM-DD).")
UNTIL = typer.Option(None, "--until", metavar="DATE", help="dicomweb INPUT: studies on or before DATE (YYYY-MM-DD).")


def filters_from(study_uid: list[str], patient_id: list[str], accession: list[str], modality: list[str],
                 since: str | None, until: str | None, source: str) -> Any:
    """The :class:`DicomwebFilters` the options give, or None when ``source`` is not a DICOMweb INPUT.

    Raises:
        ConfigError: a study filter given for a folder or manifest INPUT, or a malformed date.
    """
    from medrec.errors import ConfigError
    from medrec.index.dicomweb import DicomwebFilters, is_dicomweb, parse_date

    given = bool(study_uid or patient_id or accession or since or until)
    if not is_dicomweb(source):
        if given:
            raise ConfigError("--study-uid / --patient-id / --accession / --since / --until select studies of a "
                              "dicomweb:URL INPUT; a folder or manifest is taken whole")
        return None
    return DicomwebFilters(study_uid=tuple(study_uid), patient_id=tuple(patient_id), accession=tuple(accession),
                           modality=tuple(m.upper() for m in modality), since=parse_date(since, "--since"),
                           until=parse_date(until, "--until"))
