"""DICOM: header reading, grouping into series, classification, conversion to NIfTI.

The package re-exports every public name of its submodules; import from
``lesionq.io.dicom``.

Reading (:mod:`lesionq.io.dicom.read`)
    :func:`is_dicom_file` recognises a DICOM Part-10 file by its 128-byte preamble
    followed by ``DICM`` (file names and extensions are ignored).
    :func:`read_header` reads one header with pydicom (``stop_before_pixels``);
    :func:`group_series` groups headers by ``SeriesInstanceUID`` and collapses
    repeated files (same ``SOPInstanceUID``). :func:`pixel_digest` hashes the
    pixel data of a series (reading each file in full).

Classification (:mod:`lesionq.io.dicom.classify`)
    :func:`classify_series` is a small pure function over :class:`SeriesFeatures`
    (header values only) driven by the table :data:`CLASSIFICATION_RULES`: each
    rule that matches adds points to one class and a human-readable reason.
    Decision, in order:

    1. *localiser* when ``ImageType`` holds ``LOCALIZER``, the name says
       localiser/scout/survey, the series has several slice orientations
       (3-plane) or fewer than ``min_slices`` slices;
    2. otherwise the class with the most points among ``flair``, ``t1``, ``t2``,
       ``other`` wins when it has at least :data:`MIN_SCORE` points and leads the
       runner-up by at least :data:`MIN_MARGIN`; else the series is *unknown*
       and every class with points is a *candidate*;
    3. a ``t1`` with contrast evidence (``ContrastBolusAgent``/``Route`` set or a
       post-contrast name) becomes ``t1ce``; contrast evidence together with a
       name that says "pre"/"native" makes it *unknown* (candidates t1, t1ce).

    ``ImageType`` ``DERIVED`` / ``MPR`` / ``REFORMATTED`` (or an ``mpr`` name)
    marks the series as derived; the class is kept, the orchestrator prefers an
    original series of the same class (:mod:`lesionq.batch.ingest`).

Conversion (:mod:`lesionq.io.dicom.convert`)
    :func:`convert_series` runs ``dcm2niix`` (the PyPI binary next to the Python
    executable, else on ``PATH``; no fallback converter) on one series in a
    private temporary folder, with its anonymisation on (``-ba y``, ``-c ""``),
    then rebuilds the NIfTI header from voxels + affine
    (:func:`lesionq.io.deid.anonymous_nifti`) and keeps only whitelisted sidecar
    fields (:func:`lesionq.io.deid.filter_sidecar`). Files are written
    atomically and only when their bytes change (:func:`write_bytes_if_changed`),
    so a re-ingest is a no-op; the gzip stream has mtime 0 and no name, so
    identical voxels give identical bytes.

Enhanced (multi-frame) MR: one file holds the whole series and keeps its
acquisition values in functional-group sequences; :func:`read_header` reads them
from there (and maps ``EchoPulseSequence``/``InversionRecovery`` onto the classic
sequence codes), so the same rules classify both kinds of header.

The submodules import downwards only: ``classify`` and ``convert`` import from
``read``; ``read`` imports neither.
"""

from __future__ import annotations

from .classify import (
    CLASS_TO_CONTRAST,
    CLASSIFICATION_RULES,
    MIN_MARGIN,
    MIN_SCORE,
    MIN_SLICES,
    SERIES_CLASSES,
    Classification,
    Rule,
    SeriesClass,
    classify_series,
)
from .convert import (
    ConversionResult,
    WrittenFile,
    convert_series,
    dcm2niix_version,
    find_dcm2niix,
    write_bytes_if_changed,
)
from .read import (
    DicomHeader,
    DicomSeries,
    SeriesFeatures,
    group_series,
    is_dicom_file,
    parse_dicom_datetime,
    pixel_digest,
    read_header,
)

__all__ = [
    "SERIES_CLASSES",
    "CLASS_TO_CONTRAST",
    "MIN_SCORE",
    "MIN_MARGIN",
    "MIN_SLICES",
    "CLASSIFICATION_RULES",
    "Rule",
    "SeriesClass",
    "DicomHeader",
    "DicomSeries",
    "SeriesFeatures",
    "Classification",
    "WrittenFile",
    "ConversionResult",
    "is_dicom_file",
    "parse_dicom_datetime",
    "read_header",
    "group_series",
    "classify_series",
    "pixel_digest",
    "find_dcm2niix",
    "dcm2niix_version",
    "convert_series",
    "write_bytes_if_changed",
]
