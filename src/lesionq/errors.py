"""Exceptions raised by lesionq.

Every error names the file (when there is one), the rule that was broken and the
value that was received, so a reading centre can act on it without reading code.
"""

from __future__ import annotations

__all__ = [
    "LesionQError",
    "InputError",
    "CorruptFileError",
    "MissingInputError",
    "GeometryError",
    "ConfigError",
    "OutputError",
    "ProcessingError",
    "RegistrationError",
]


class LesionQError(Exception):
    """Base class of every error lesionq raises on purpose."""


class InputError(LesionQError, ValueError):
    """An input image or dataset breaks a rule (wrong dimensionality, NaN, empty...)."""


class CorruptFileError(LesionQError, OSError):
    """A file cannot be read: truncated, corrupt gzip, not a NIfTI."""


class MissingInputError(LesionQError, FileNotFoundError):
    """A required input (e.g. the FLAIR of a visit) is missing."""


class GeometryError(InputError):
    """Images that must share a grid or field of view do not."""


class ConfigError(LesionQError, ValueError):
    """A pipeline protocol (TOML) or an override is invalid."""


class OutputError(LesionQError, OSError):
    """An output folder cannot be created or written (a file in the way, read-only...)."""


class ProcessingError(LesionQError, RuntimeError):
    """A processing step failed on valid input (e.g. brain extraction found nothing)."""


class RegistrationError(ProcessingError):
    """An image registration did not converge or gave an implausible transform."""
