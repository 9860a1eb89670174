"""Stable pseudonyms for the identifiers that appear in a report.

A report names patients, studies and samples (the cohort table, the flagged cases, the
figures). By default none of the raw values may appear in any output, so every identifier
is replaced before the analysis sees it:

    pseudonym = PREFIX + first 8 hex digits of HMAC-SHA256(key, kind + ":" + raw value)

(more digits, 12 then 16 ..., for a column whose values would otherwise share a pseudonym: with
32 bits, two of 100,000 patients collide more often than not, which would merge them)
with ``P-`` for patients, ``ST-`` for studies and ``S-`` for samples. The key is the SHA-256
of a fixed domain prefix followed by the predictions file's bytes (not the file's plain SHA-256,
which the report prints in its provenance). Consequences, by design:

* the same predictions file always gives the same pseudonyms (a re-run report is identical,
  and a case named in one report can be found again in the next);
* reversing a pseudonym needs the predictions file itself, which already holds the raw ids,
  so the report discloses nothing the reader could not already see; without that file, a short
  id (a numeric record number) cannot be confirmed by guessing, since the key is unknown;
* two different predictions files give unrelated pseudonyms (reports cannot be linked).

No salt is stored anywhere: the key is derived, never written.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping

import pandas as pd

from medrec.errors import SecurityError
from medrec.hashing import sha256_file

# Identifier columns and the prefix of their pseudonyms.
IDENTIFIER_PREFIXES: dict[str, str] = {
    "patient_id": "P-",
    "study_uid": "ST-",
    "sample_id": "S-",
    "series_uid": "SE-",
    "accession": "A-",
}

# Columns that may carry identifying text (paths built from names, free-text descriptions):
# dropped from any table that is handed to the analysis when identifiers are hidden.
IDENTIFYING_COLUMNS: tuple[str, ...] = ("path", "files", "series_description", "patient_name", "birth_date")


_KEY_DOMAIN = b"medrec pseudonym key v1\0"


def key_from_file(path: str | os.PathLike[str]) -> bytes:
    """The pseudonymisation key of a predictions file: SHA-256 of a domain prefix plus its bytes."""
    return bytes.fromhex(sha256_file(path, prefix=_KEY_DOMAIN))


class Pseudonymiser:
    """Replaces identifiers by keyed-hash pseudonyms (see the module docstring).

    Args:
        key: secret bytes; use :func:`key_from_file` on the predictions file.
        enabled: when False every value is returned unchanged (``--keep-identifiers``).
    """

    min_digits = 8

    def __init__(self, key: bytes, enabled: bool = True) -> None:
        self.key = key
        self.enabled = enabled
        self.digits: dict[str, int] = {}

    def reserve(self, column: str, values: Iterable[object]) -> None:
        """Make the pseudonyms of ``values`` in ``column`` distinct (lengthen them when two collide).

        Call it once per column with every value any table holds, before the first :meth:`pseudonym`.
        """
        raw = {str(v) for v in values if v is not None and str(v) != ""}
        digits = self.min_digits
        while digits <= 64:
            self.digits[column] = digits
            if len({self.pseudonym(v, column) for v in raw}) == len(raw) or not self.enabled:
                return
            digits += 4
        raise SecurityError(f"column {column}: pseudonyms are not unique even at 64 hex digits")

    def pseudonym(self, value: object, column: str = "patient_id") -> str:
        """The pseudonym of one raw value of ``column``; empty values stay empty."""
        text = "" if value is None or (isinstance(value, float) and value != value) else str(value)
        if not self.enabled or text == "":
            return text
        prefix = IDENTIFIER_PREFIXES.get(column, "X-")
        mac = hmac.new(self.key, f"{column}:{text}".encode(), hashlib.sha256).hexdigest()
        return prefix + mac[: self.digits.get(column, self.min_digits)]

    def frame(self, table: pd.DataFrame | None) -> pd.DataFrame | None:
        """A copy of ``table`` with identifier columns pseudonymised and identifying columns dropped."""
        if table is None or not self.enabled:
            return table
        result = table.drop(columns=[c for c in IDENTIFYING_COLUMNS if c in table.columns])
        for column in IDENTIFIER_PREFIXES:
            if column in result.columns:
                result[column] = [self.pseudonym(v, column) for v in result[column]]
        return result


_DATA_URI = re.compile(r"data:[a-z/+.-]+;base64,[A-Za-z0-9+/=]+")
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_safe_file_token(value: str) -> bool:
    """True when ``value`` can be used as one file-name component (no separators, no dot-dot)."""
    return bool(_SAFE_TOKEN.match(value)) and ".." not in value


def raw_identifiers(tables: Iterable[pd.DataFrame | None], min_length: int = 4) -> set[str]:
    """Every raw patient / study / sample identifier in ``tables`` long enough to be searched for.

    Very short ids ("1", "12") would match unrelated numbers in the text, so they are skipped
    here; they are still replaced everywhere by :meth:`Pseudonymiser.frame`.
    """
    found: set[str] = set()
    for table in tables:
        if table is None:
            continue
        for column in ("patient_id", "study_uid", "sample_id", "accession"):
            if column in table.columns:
                found.update(str(v) for v in table[column] if isinstance(v, str) and len(v) >= min_length)
    return found


def check_no_identifiers(texts: Mapping[str, str], identifiers: set[str]) -> None:
    """Refuse outputs that contain a raw identifier (a safety net behind the pseudonymisation).

    Run it on the rendered texts and the file names before anything is written.

    Args:
        texts: output name -> its text (HTML, JSON, the PDF's strings, the figure file names).
        identifiers: raw values from :func:`raw_identifiers`.

    Raises:
        SecurityError: a raw identifier occurs in one of the texts. The message names the
            output, never the identifier.
    """
    if not identifiers:
        return
    alternatives = "|".join(re.escape(i) for i in sorted(identifiers, key=len, reverse=True))
    # Whole identifiers only: "s001" inside "s0012" or "1.2.3.1" inside "1.2.3.10" is another value.
    pattern = re.compile(rf"(?<![A-Za-z0-9._^-])(?:{alternatives})(?![A-Za-z0-9_^-]|\.[A-Za-z0-9])")
    for name, text in texts.items():
        text = _DATA_URI.sub("data:", text)  # embedded images are bytes, not text
        if pattern.search(text):
            raise SecurityError(
                f"{name}: would contain a raw patient / study / sample identifier, so the report was not "
                "written; this is a bug, please report it (--keep-identifiers skips the pseudonymisation)"
            )
