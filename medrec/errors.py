"""One exception tree for everything medrec raises on purpose.

The CLI turns any :class:`MedrecError` into a one-line message and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MedrecError(Exception):
    """Base of every error medrec raises deliberately."""

    exit_code: int = 1


class InputError(MedrecError):
    """A file or folder given by the user cannot be used (names the path and the reason)."""


class DicomError(InputError):
    """A DICOM file or series is unreadable, inconsistent or unsafe."""


class NiftiError(InputError):
    """A NIfTI file is unreadable, inconsistent or unsafe."""


class ResourceBudgetError(InputError):
    """An input claims more voxels or bytes than the configured memory budget allows."""


class ManifestError(InputError):
    """A manifest, qc or splits table is missing columns or holds inconsistent rows."""


class LabelsError(InputError):
    """A labels file is missing columns or holds conflicting labels."""


class ConfigError(MedrecError):
    """A configuration or recipe is invalid (names the key and the allowed values)."""


class LeakageError(MedrecError):
    """A split would put the same patient, study or pixel content in two partitions."""


class ModelError(MedrecError):
    """A model name, checkpoint or run directory is unknown, incomplete or refused."""


class NotFittedError(MedrecError):
    """An object was used before it was fitted."""


class SecurityError(MedrecError):
    """An input tried something unsafe (pickle payload, path escape, executable preamble)."""


class OutputError(MedrecError):
    """An output cannot be written (read-only folder, full disk, existing file not to overwrite)."""


class AnnotationError(InputError):
    """A lesion table or lesion mask is missing columns or cannot be read (names the file and row)."""
