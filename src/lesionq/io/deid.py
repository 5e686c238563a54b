"""De-identification: what is identifying, what a sidecar may keep, scrubbing.

Policy (applies to every file the DICOM ingest writes: NIfTI, JSON sidecars,
TSV tables, the ingest report)
--------------------------------------------------------------------------

* **Names, IDs, addresses, institutions, devices** (:data:`IDENTIFYING_KEYWORDS`)
  never leave the DICOM headers. Subject and session labels come from the upload's
  folder names (trial pseudonyms) or a subject map, never from ``PatientName`` /
  ``PatientID``.
* **Sidecars are whitelisted**, not blacklisted: only the acquisition fields of
  :data:`SIDECAR_WHITELIST` are copied from the converter's JSON; anything a
  future converter version adds is dropped until it is reviewed.
* **Free text that is kept** (``SeriesDescription``, ``ProtocolName``) is needed
  by the reader to resolve an ambiguous series, and in practice holds sequence
  names; but an operator can type anything into it. It goes through
  :func:`redact`: every identifying value found in the subject's own headers
  (names and their ``^``-separated parts, IDs, accession number, institution,
  dates...) and every date-like token (``YYYYMMDD``, ``YYYY-MM-DD``,
  ``DD.MM.YYYY``) is replaced by ``[redacted]``. A name typed in a description
  that is not in any header cannot be detected; that residual risk is accepted
  and documented.
* **NIfTI headers** are rebuilt from the voxel data and the affine
  (:func:`anonymous_nifti`): text fields (``descrip``, ``aux_file``,
  ``intent_name``, ``db_name``) are empty and there are no header extensions,
  so nothing the converter put there (dcm2niix writes acquisition time into
  ``descrip``) survives. :func:`scrub_nifti_header` clears the same fields on a
  header one wants to keep (e.g. NIfTI uploads).
* **Dates**: every date of a subject is shifted by a whole number of days so
  that its earliest visit falls on 1900-01-01 (:func:`shift_dates`); times of
  day are kept (they are not identifying on their own and keep intervals exact
  to the second). Birth date, age, sex, weight and size are never written.
* **UIDs** are not directly identifying but are linkable to the hospital's
  PACS: outputs carry :func:`hash_uid` digests only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import nibabel as nib
import numpy as np

__all__ = [
    "IDENTIFYING_KEYWORDS",
    "PERSON_NAME_KEYWORDS",
    "DATE_KEYWORDS",
    "SIDECAR_WHITELIST",
    "TEXT_SIDECAR_FIELDS",
    "NIFTI_TEXT_FIELDS",
    "REDACTED",
    "ANCHOR_DATE",
    "identifying_values",
    "redact",
    "filter_sidecar",
    "scrub_nifti_header",
    "anonymous_nifti",
    "shift_dates",
    "hash_uid",
]

#: DICOM keywords whose values identify a person, an institution or a device.
IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAge",
    "PatientSex",
    "PatientSize",
    "PatientWeight",
    "MilitaryRank",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "OperatorsName",
    "RequestingPhysician",
    "StationName",
    "DeviceSerialNumber",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
    "ImageComments",
)

#: Identifying keywords holding person names (split into parts for redaction).
PERSON_NAME_KEYWORDS: frozenset[str] = frozenset(
    {
        "PatientName",
        "OtherPatientNames",
        "PatientBirthName",
        "PatientMotherBirthName",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansOfRecord",
        "OperatorsName",
        "RequestingPhysician",
    }
)

#: DICOM keywords holding dates (shifted or dropped, never copied).
DATE_KEYWORDS: tuple[str, ...] = (
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstanceCreationDate",
    "PerformedProcedureStepStartDate",
    "AcquisitionDateTime",
)

#: Fields a JSON sidecar may carry (BIDS names as written by dcm2niix).
SIDECAR_WHITELIST: frozenset[str] = frozenset(
    {
        "Modality",
        "MagneticFieldStrength",
        "Manufacturer",
        "ManufacturersModelName",
        "SoftwareVersions",
        "MRAcquisitionType",
        "SeriesDescription",
        "ProtocolName",
        "SeriesNumber",
        "ScanningSequence",
        "SequenceVariant",
        "ScanOptions",
        "SequenceName",
        "PulseSequenceType",
        "ImageType",
        "EchoTime",
        "RepetitionTime",
        "InversionTime",
        "FlipAngle",
        "SliceThickness",
        "SpacingBetweenSlices",
        "PixelBandwidth",
        "EchoTrainLength",
        "PercentPhaseFOV",
        "PercentSampling",
        "AcquisitionMatrixPE",
        "ReconMatrixPE",
        "PhaseEncodingSteps",
        "PhaseEncodingDirection",
        "InPlanePhaseEncodingDirectionDICOM",
        "ParallelReductionFactorInPlane",
        "ImageOrientationPatientDICOM",
        "ContrastBolusIngredient",
        "ConversionSoftware",
        "ConversionSoftwareVersion",
    }
)

#: Whitelisted sidecar fields that are free text (redacted before writing).
TEXT_SIDECAR_FIELDS: frozenset[str] = frozenset({"SeriesDescription", "ProtocolName"})

#: NIfTI-1 header fields that hold free text.
NIFTI_TEXT_FIELDS: tuple[str, ...] = ("descrip", "aux_file", "intent_name", "db_name")

#: Replacement of a redacted span.
REDACTED = "[redacted]"

#: The date every subject's earliest visit is shifted to.
ANCHOR_DATE = datetime(1900, 1, 1)

_DATE_TOKENS = re.compile(
    r"(?<!\d)(?:(?:19|20)\d{2}[-./]?(?:0[1-9]|1[0-2])[-./]?(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0[1-9]|[12]\d|3[01])[-./](?:0[1-9]|1[0-2])[-./](?:19|20)\d{2})(?!\d)"
)
_MIN_IDENTIFIER_CHARS = 3


def identifying_values(header: Any) -> set[str]:
    """Identifying strings of one DICOM header (for :func:`redact` and tests).

    Parameters
    ----------
    header : pydicom.Dataset or Mapping
        A header (or a mapping from DICOM keyword to value).

    Returns
    -------
    set of str
        The values of :data:`IDENTIFYING_KEYWORDS` and :data:`DATE_KEYWORDS`,
        person names (:data:`PERSON_NAME_KEYWORDS`) also split at ``^`` and
        spaces; parts shorter than 3 characters and sex/age/size codes are left
        out (they would redact ordinary text). Other values are kept whole (so
        an institution "X Medical Centre" does not redact the word "Medical").
        Empty when nothing is set.

    Examples
    --------
    >>> sorted(identifying_values({"PatientName": "DOE^JANE", "PatientID": "12345"}))
    ['12345', 'DOE', 'DOE^JANE', 'JANE']
    """
    get = header.get if isinstance(header, Mapping) else (lambda k: getattr(header, k, None))
    out: set[str] = set()
    for key in IDENTIFYING_KEYWORDS + DATE_KEYWORDS:
        if key in ("PatientSex", "PatientAge", "PatientSize", "PatientWeight"):
            continue
        value = get(key)
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            text = str(v).strip()
            if not text:
                continue
            out.add(text)
            if key in PERSON_NAME_KEYWORDS:
                out.update(p for p in re.split(r"[\^\s,]+", text) if p)
    return {v for v in out if len(v) >= _MIN_IDENTIFIER_CHARS}


def redact(text: str, identifiers: Iterable[str] = (), *, date_tokens: bool = True) -> str:
    """Replace identifying values and date-like tokens in free text.

    Parameters
    ----------
    text : str
    identifiers : iterable of str
        Values to remove (case-insensitive), e.g. from :func:`identifying_values`;
        values shorter than 3 characters are ignored.
    date_tokens : bool
        Also replace every date-like token (``YYYYMMDD``, ``YYYY-MM-DD``,
        ``DD.MM.YYYY``); turn off for machine text such as version strings.

    Returns
    -------
    str
        ``text`` with each match replaced by :data:`REDACTED`.

    Examples
    --------
    >>> redact("FLAIR DOE 2019-03-01", {"DOE^JANE", "DOE"})
    'FLAIR [redacted] [redacted]'
    >>> redact("t1_mprage_sag_p2")
    't1_mprage_sag_p2'
    """
    out = str(text)
    ids = sorted(
        {i for i in identifiers if len(i.strip()) >= _MIN_IDENTIFIER_CHARS},
        key=len,
        reverse=True,
    )
    for ident in ids:
        out = re.sub(re.escape(ident.strip()), REDACTED, out, flags=re.IGNORECASE)
    return _DATE_TOKENS.sub(REDACTED, out) if date_tokens else out


def filter_sidecar(
    meta: Mapping[str, Any], identifiers: Iterable[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """Keep only whitelisted sidecar fields; redact the free-text ones.

    Parameters
    ----------
    meta : mapping
        A converter's JSON sidecar.
    identifiers : iterable of str
        Passed to :func:`redact` for :data:`TEXT_SIDECAR_FIELDS`.

    Returns
    -------
    kept : dict
        Whitelisted fields, keys sorted.
    dropped : list of str
        Names of the fields left out (sorted), for the provenance record.

    Examples
    --------
    >>> kept, dropped = filter_sidecar({"EchoTime": 0.08, "InstitutionName": "X"})
    >>> kept, dropped
    ({'EchoTime': 0.08}, ['InstitutionName'])
    """
    ids = list(identifiers)
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key in sorted(meta):
        if key not in SIDECAR_WHITELIST:
            dropped.append(key)
            continue
        value = meta[key]
        if key in TEXT_SIDECAR_FIELDS and isinstance(value, str):
            value = redact(value, ids)
        kept[key] = value
    return kept, dropped


def scrub_nifti_header(header: nib.Nifti1Header) -> list[str]:
    """Empty the text fields of a NIfTI-1/2 header in place; drop its extensions.

    Returns
    -------
    list of str
        Names of the fields (and ``"extensions"``) that held something.

    Examples
    --------
    >>> h = nib.Nifti1Header()
    >>> h["descrip"] = b"DOE^JANE 20190301"
    >>> scrub_nifti_header(h), h["descrip"].item()
    (['descrip'], b'')
    """
    cleared = []
    for name in NIFTI_TEXT_FIELDS:
        if name in header and bytes(np.asarray(header[name]).tobytes()).strip(b"\x00 \t"):
            cleared.append(name)
        if name in header:
            header[name] = b""
    exts = getattr(header, "extensions", None)
    if exts:
        cleared.append("extensions")
        del exts[:]
    return cleared


def anonymous_nifti(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """A fresh NIfTI-1 image with the same voxels, geometry and scaling, no text.

    The stored (unscaled) array, its dtype, its scaling (``scl_slope``/``scl_inter``,
    which nibabel keeps on the array proxy of a loaded image), the
    affine (as sform and qform, code 1 = scanner) and ``xyzt`` units (mm, s) are
    kept; every other header field is at its default, so no text, extension or
    vendor field of the source header is carried over.

    Parameters
    ----------
    image : nibabel.Nifti1Image
        3-D (a trailing singleton 4th axis is dropped).
    """
    proxy: Any = image.dataobj
    if nib.is_proxy(proxy):
        # a loaded image: nibabel moved scl_slope/scl_inter from the header to the proxy
        raw = np.asanyarray(proxy.get_unscaled())
        slope, inter = float(proxy.slope), float(proxy.inter)
    else:
        raw = np.asanyarray(proxy)  # in-memory values are already scaled
        slope, inter = 1.0, 0.0
    if raw.ndim == 4 and raw.shape[3] == 1:
        raw = raw[..., 0]
    affine = np.asarray(image.affine, dtype=float)
    out = nib.Nifti1Image(raw, affine)
    out.set_data_dtype(raw.dtype)
    out.set_sform(affine, code=1)
    out.set_qform(affine, code=1)
    out.header.set_xyzt_units("mm", "sec")
    if slope != 1.0 or inter != 0.0:
        out.header.set_slope_inter(slope, inter)
    scrub_nifti_header(out.header)
    return out


def shift_dates(
    datetimes: Mapping[str, datetime | None], anchor: datetime = ANCHOR_DATE
) -> dict[str, datetime | None]:
    """Shift the visit date-times of one subject so that the earliest is on ``anchor``'s day.

    The shift is a whole number of days, so times of day and every interval
    between visits are kept exactly.

    Parameters
    ----------
    datetimes : mapping
        Session label -> real acquisition date-time (``None`` stays ``None``).
    anchor : datetime
        Date of the earliest visit after shifting (its time of day is ignored).

    Examples
    --------
    >>> out = shift_dates({"1": datetime(2019, 3, 1, 9, 30), "2": datetime(2019, 3, 29, 8, 0)})
    >>> [v.isoformat() for v in out.values()]
    ['1900-01-01T09:30:00', '1900-01-29T08:00:00']
    """
    days = date_shift_days(datetimes, anchor)
    if days is None:
        return dict(datetimes)
    return apply_date_shift(datetimes, days)


def date_shift_days(
    datetimes: Mapping[str, datetime | None], anchor: datetime = ANCHOR_DATE
) -> int | None:
    """Whole days to subtract so that the earliest of ``datetimes`` falls on ``anchor``'s day.

    Returns ``None`` when no date is known.

    Examples
    --------
    >>> date_shift_days({"1": datetime(1900, 1, 3, 9, 30), "2": None})
    2
    >>> date_shift_days({"1": None}) is None
    True
    """
    known = [d for d in datetimes.values() if d is not None]
    if not known:
        return None
    return (min(known).date() - anchor.date()).days


def apply_date_shift(
    datetimes: Mapping[str, datetime | None], days: int
) -> dict[str, datetime | None]:
    """Subtract ``days`` whole days from every date-time (``None`` stays ``None``).

    Examples
    --------
    >>> apply_date_shift({"2": datetime(2019, 3, 29, 8, 0)}, 43523)["2"].isoformat()
    '1900-01-29T08:00:00'
    """
    delta = timedelta(days=int(days))
    return {k: (None if v is None else v - delta) for k, v in datetimes.items()}


def hash_uid(uid: str, length: int = 16) -> str:
    """Short sha256 digest of a DICOM UID (unlinkable to the PACS without the UID).

    Examples
    --------
    >>> hash_uid("1.2.3")
    'c47f5b18b8a430e6'
    """
    return hashlib.sha256(str(uid).strip().encode("ascii", "replace")).hexdigest()[:length]
