"""Reading DICOM headers and grouping them into series.

Reading
    :func:`is_dicom_file` recognises a DICOM Part-10 file by its 128-byte preamble
    followed by ``DICM`` (file names and extensions are ignored).
    :func:`read_header` reads one header with pydicom (``stop_before_pixels``) into
    a :class:`DicomHeader`; :func:`parse_dicom_datetime` parses DICOM DA/TM values.

Enhanced (multi-frame) MR
    One file holds the whole series and keeps its acquisition values in
    functional-group sequences; :func:`read_header` reads them from there (and
    maps ``EchoPulseSequence``/``InversionRecovery`` onto the classic sequence
    codes), so the same rules classify both kinds of header.

Series
    :func:`group_series` groups headers by ``SeriesInstanceUID`` into
    :class:`DicomSeries` and collapses repeated files (same ``SOPInstanceUID``);
    :meth:`DicomSeries.features` gives the :class:`SeriesFeatures` the classifier
    reads (:mod:`lesionq.io.dicom.classify`).

Pixels
    :func:`pixel_digest` reads every file of a series in full and hashes its
    pixel data (a truncated file is found here).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ...errors import CorruptFileError
from ..deid import hash_uid, identifying_values

__all__ = [
    "DicomHeader",
    "DicomSeries",
    "SeriesFeatures",
    "is_dicom_file",
    "parse_dicom_datetime",
    "read_header",
    "group_series",
    "pixel_digest",
]

_PREAMBLE = 128


# --------------------------------------------------------------------------- reading


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with a 128-byte preamble and ``DICM``.

    Unreadable paths (permissions, folders) are not DICOM.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_PREAMBLE + 4)
    except OSError:
        return False
    return len(head) == _PREAMBLE + 4 and head[_PREAMBLE:] == b"DICM"


def _multi(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        return tuple(p.strip().upper() for p in text.split("\\") if p.strip())
    return tuple(str(v).strip().upper() for v in value if str(v).strip())


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def parse_dicom_datetime(date: Any, time: Any = None) -> datetime | None:
    """``datetime`` from DICOM DA (``YYYYMMDD``) and TM (``HHMMSS[.ffffff]``) values.

    Examples
    --------
    >>> parse_dicom_datetime("20190301", "093012.5")
    datetime.datetime(2019, 3, 1, 9, 30, 12, 500000)
    >>> parse_dicom_datetime("") is None
    True
    """
    d = _text(date).replace(".", "").replace("-", "")
    if not re.fullmatch(r"\d{8}", d):
        return None
    t = _text(time).replace(":", "")
    m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", t)
    hh = mm = ss = us = 0
    if m:
        hh, mm, ss = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
        us = int((m.group(4) or "0").ljust(6, "0"))
    try:
        return datetime(int(d[:4]), int(d[4:6]), int(d[6:8]), hh, min(mm, 59), min(ss, 59), us)
    except ValueError:
        return None


@dataclass(frozen=True)
class DicomHeader:
    """The header values of one DICOM file that ingest uses.

    ``identifiers`` holds the identifying strings of this header (see
    :func:`lesionq.io.deid.identifying_values`); they are used to redact free
    text and are never written. Times are in ms, as in DICOM.
    """

    path: Path
    sop_uid: str
    series_uid: str
    study_uid: str
    modality: str
    series_number: int | None
    instance_number: int | None
    description: str
    protocol: str
    image_type: tuple[str, ...]
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    scan_options: tuple[str, ...]
    echo_time_ms: float | None
    repetition_time_ms: float | None
    inversion_time_ms: float | None
    acquisition_type: str
    contrast_agent: str
    contrast_route: str
    orientation: tuple[float, ...] | None
    position: tuple[float, ...] | None
    rows: int | None
    columns: int | None
    n_frames: int
    acquired: datetime | None
    study_started: datetime | None
    identifiers: frozenset[str] = frozenset()


def _functional(ds: Any, sequence: str, keyword: str) -> Any:
    """A value of an enhanced (multi-frame) header's functional groups, or None.

    Looks in ``SharedFunctionalGroupsSequence``, then in the first item of
    ``PerFrameFunctionalGroupsSequence`` (the frame a classic header describes),
    for ``sequence[0].keyword``.
    """
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(groups)
        if not items:
            continue
        inner = items[0].get(sequence)
        if inner and keyword in inner[0]:
            return inner[0].get(keyword)
    return None


def _enhanced_sequence(ds: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Classic ``ScanningSequence``/``SequenceVariant`` of an enhanced MR header.

    Enhanced MR replaces them with ``EchoPulseSequence`` (SPIN, GRADIENT, BOTH),
    ``InversionRecovery`` (YES/NO), ``EchoPlanarPulseSequence`` (YES/NO) and
    ``Spoiling``; mapped here onto the classic codes the classifier reads
    (SE, GR, IR, EP; variant SP for spoiled, MP for magnetisation-prepared).
    """
    scanning: list[str] = []
    echo = _text(ds.get("EchoPulseSequence")).upper()
    if echo in ("SPIN", "BOTH"):
        scanning.append("SE")
    if echo in ("GRADIENT", "BOTH"):
        scanning.append("GR")
    if _text(ds.get("InversionRecovery")).upper() == "YES":
        scanning.append("IR")
    if _text(ds.get("EchoPlanarPulseSequence")).upper() == "YES":
        scanning.append("EP")
    variant: list[str] = []
    if _text(ds.get("Spoiling")).upper() not in ("", "NONE"):
        variant.append("SP")
    if _text(ds.get("InversionRecovery")).upper() == "YES":
        variant.append("MP")
    return tuple(scanning), tuple(variant)


def _enhanced_times(ds: Any) -> tuple[float | None, float | None, float | None]:
    """(TE, TR, TI) in ms from an enhanced MR header's functional groups."""
    te = _float(_functional(ds, "MREchoSequence", "EffectiveEchoTime"))
    tr = _float(_functional(ds, "MRTimingAndRelatedParametersSequence", "RepetitionTime"))
    ti = None
    if _text(_functional(ds, "MRModifierSequence", "InversionRecovery")).upper() == "YES" or (
        _text(ds.get("InversionRecovery")).upper() == "YES"
    ):
        times = _functional(ds, "MRModifierSequence", "InversionTimes")
        if times is not None:
            values = [times] if isinstance(times, int | float) else list(times)
            ti = _float(values[0]) if values else None
    return te, tr, ti


def _parse_dicom_dt(value: Any) -> datetime | None:
    """``datetime`` from a DICOM DT value (``YYYYMMDDHHMMSS[.ffffff]``; offset ignored)."""
    text = re.split(r"[+-]", _text(value))[0]
    if len(text) < 8:
        return None
    return parse_dicom_datetime(text[:8], text[8:] or None)


def read_header(path: str | os.PathLike[str]) -> DicomHeader:
    """Read one DICOM file's header (pixels are not read).

    Classic and enhanced (multi-frame) MR: for an enhanced header, echo,
    repetition and inversion times, slice geometry, sequence type and contrast
    use come from its functional groups when the classic attributes are absent.

    Raises
    ------
    CorruptFileError
        pydicom cannot parse the file, or it lacks ``SOPInstanceUID`` /
        ``SeriesInstanceUID`` (not an image of a series, or truncated).
    """
    p = Path(path)
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        sop = _text(ds.get("SOPInstanceUID"))
        series = _text(ds.get("SeriesInstanceUID"))
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(
            f"{p}: cannot read the DICOM header ({type(exc).__name__}: {exc})"
        ) from exc
    if not sop or not series:
        raise CorruptFileError(
            f"{p}: DICOM file without SOPInstanceUID/SeriesInstanceUID "
            "(rule: an image of a series has both; the file is truncated or not an image)"
        )
    try:
        orient = ds.get("ImageOrientationPatient") or _functional(
            ds, "PlaneOrientationSequence", "ImageOrientationPatient"
        )
        pos = ds.get("ImagePositionPatient") or _functional(
            ds, "PlanePositionSequence", "ImagePositionPatient"
        )
        sn = ds.get("SeriesNumber")
        inum = ds.get("InstanceNumber")
        acquired = (
            parse_dicom_datetime(ds.get("AcquisitionDate"), ds.get("AcquisitionTime"))
            or _parse_dicom_dt(ds.get("AcquisitionDateTime"))
            or parse_dicom_datetime(ds.get("SeriesDate"), ds.get("SeriesTime"))
            or parse_dicom_datetime(ds.get("ContentDate"), ds.get("ContentTime"))
        )
        scanning, variant = _multi(ds.get("ScanningSequence")), _multi(ds.get("SequenceVariant"))
        te, tr, ti = (
            _float(ds.get("EchoTime")),
            _float(ds.get("RepetitionTime")),
            _float(ds.get("InversionTime")),
        )
        agent = _text(ds.get("ContrastBolusAgent"))
        if "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds:
            e_te, e_tr, e_ti = _enhanced_times(ds)
            te, tr, ti = te or e_te, tr or e_tr, ti or e_ti
            if not scanning:
                scanning, variant = _enhanced_sequence(ds)
            if not agent:
                used = _functional(
                    ds, "ContrastBolusUsageSequence", "ContrastBolusAgentAdministered"
                )
                agents = ds.get("ContrastBolusAgentSequence")
                if _text(used).upper() == "YES" and agents:
                    agent = _text(agents[0].get("CodeMeaning")) or "administered"
        return DicomHeader(
            path=p,
            sop_uid=sop,
            series_uid=series,
            study_uid=_text(ds.get("StudyInstanceUID")),
            modality=_text(ds.get("Modality")).upper(),
            series_number=int(sn) if sn not in (None, "") else None,
            instance_number=int(inum) if inum not in (None, "") else None,
            description=_text(ds.get("SeriesDescription")),
            protocol=_text(ds.get("ProtocolName")),
            image_type=_multi(ds.get("ImageType")),
            scanning_sequence=scanning,
            sequence_variant=variant,
            scan_options=_multi(ds.get("ScanOptions")),
            echo_time_ms=te,
            repetition_time_ms=tr,
            inversion_time_ms=ti,
            acquisition_type=_text(ds.get("MRAcquisitionType")).upper(),
            contrast_agent=agent,
            contrast_route=_text(ds.get("ContrastBolusRoute")),
            orientation=tuple(round(float(v), 3) for v in orient) if orient else None,
            position=tuple(float(v) for v in pos) if pos else None,
            rows=int(ds.Rows) if "Rows" in ds else None,
            columns=int(ds.Columns) if "Columns" in ds else None,
            n_frames=int(ds.get("NumberOfFrames") or 1),
            acquired=acquired,
            study_started=parse_dicom_datetime(ds.get("StudyDate"), ds.get("StudyTime")),
            identifiers=frozenset(identifying_values(ds)),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise CorruptFileError(
            f"{p}: invalid value in the DICOM header ({type(exc).__name__}: {exc})"
        ) from exc


# --------------------------------------------------------------------------- series


@dataclass(frozen=True)
class SeriesFeatures:
    """What the classifier sees of a series: header values only (times in ms)."""

    description: str = ""
    protocol: str = ""
    modality: str = "MR"
    image_type: tuple[str, ...] = ()
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    scan_options: tuple[str, ...] = ()
    echo_time_ms: float | None = None
    repetition_time_ms: float | None = None
    inversion_time_ms: float | None = None
    acquisition_type: str = ""
    contrast_agent: str = ""
    contrast_route: str = ""
    n_slices: int = 0
    n_orientations: int = 1

    @property
    def name(self) -> str:
        """Description and protocol name, lower case (what name rules read)."""
        return f"{self.description} {self.protocol}".lower()


@dataclass(frozen=True)
class DicomSeries:
    """The files of one ``SeriesInstanceUID`` (repeated SOP instances collapsed).

    ``headers`` are sorted along the slice normal (then by instance number);
    ``repeated_files`` are files whose ``SOPInstanceUID`` was already seen.
    """

    uid: str
    headers: tuple[DicomHeader, ...]
    repeated_files: tuple[Path, ...] = ()

    @property
    def first(self) -> DicomHeader:
        """The first header (series-level values are read from it)."""
        return self.headers[0]

    @property
    def series_number(self) -> int | None:
        """``SeriesNumber``."""
        return self.first.series_number

    @property
    def description(self) -> str:
        """``SeriesDescription`` (else ``ProtocolName``), verbatim: redact before writing."""
        return self.first.description or self.first.protocol

    @property
    def uid_hash(self) -> str:
        """:func:`~lesionq.io.deid.hash_uid` of the ``SeriesInstanceUID``."""
        return hash_uid(self.uid)

    @property
    def files(self) -> tuple[Path, ...]:
        """One file per SOP instance, in slice order."""
        return tuple(h.path for h in self.headers)

    @property
    def identifiers(self) -> frozenset[str]:
        """Union of the identifying values of every header."""
        return frozenset().union(*(h.identifiers for h in self.headers))

    @property
    def n_slices(self) -> int:
        """Distinct slice positions (frames, for multi-frame files)."""
        positions = {h.position and tuple(round(v, 2) for v in h.position) for h in self.headers}
        frames = sum(h.n_frames for h in self.headers)
        return max(len(positions - {None}), frames if frames > len(self.headers) else 0)

    @property
    def n_orientations(self) -> int:
        """Distinct ``ImageOrientationPatient`` values (3 for a 3-plane localiser)."""
        return max(1, len({h.orientation for h in self.headers if h.orientation is not None}))

    @property
    def derived(self) -> bool:
        """``ImageType`` says DERIVED/MPR/REFORMATTED or the name says MPR."""
        it = set(self.first.image_type)
        return bool(
            it & {"DERIVED", "MPR", "REFORMATTED", "PROJECTION IMAGE"}
            or re.search(r"(?<![a-z0-9])mpr(?![a-z0-9])", self.description.lower())
        )

    @property
    def acquired(self) -> datetime | None:
        """Earliest acquisition date-time of the series."""
        times = [h.acquired for h in self.headers if h.acquired is not None]
        return min(times) if times else None

    @property
    def study_started(self) -> datetime | None:
        """``StudyDate``/``StudyTime`` of the series' study."""
        times = [h.study_started for h in self.headers if h.study_started is not None]
        return min(times) if times else None

    def features(self) -> SeriesFeatures:
        """:class:`SeriesFeatures` of this series."""
        h = self.first
        return SeriesFeatures(
            description=h.description,
            protocol=h.protocol,
            modality=h.modality,
            image_type=h.image_type,
            scanning_sequence=h.scanning_sequence,
            sequence_variant=h.sequence_variant,
            scan_options=h.scan_options,
            echo_time_ms=h.echo_time_ms,
            repetition_time_ms=h.repetition_time_ms,
            inversion_time_ms=h.inversion_time_ms,
            acquisition_type=h.acquisition_type,
            contrast_agent=h.contrast_agent,
            contrast_route=h.contrast_route,
            n_slices=self.n_slices,
            n_orientations=self.n_orientations,
        )


def _slice_key(h: DicomHeader) -> tuple[float, int, str]:
    if h.position is not None and h.orientation is not None and len(h.orientation) == 6:
        normal = np.cross(np.asarray(h.orientation[:3]), np.asarray(h.orientation[3:]))
        d = float(np.dot(normal, np.asarray(h.position)))
    else:
        d = 0.0
    return (round(d, 4), h.instance_number or 0, h.sop_uid)


def group_series(headers: Iterable[DicomHeader]) -> list[DicomSeries]:
    """Group headers by ``SeriesInstanceUID``; collapse repeated SOP instances.

    A file whose ``SOPInstanceUID`` was seen before (the same image uploaded
    twice) is listed in ``repeated_files`` of its series and not used; the
    first file in path order is kept. Series are returned sorted by series
    number, then UID hash (deterministic whatever the file order).
    """
    by_uid: dict[str, dict[str, DicomHeader]] = {}
    repeats: dict[str, list[Path]] = {}
    for h in sorted(headers, key=lambda x: str(x.path)):
        sops = by_uid.setdefault(h.series_uid, {})
        if h.sop_uid in sops:
            repeats.setdefault(h.series_uid, []).append(h.path)
        else:
            sops[h.sop_uid] = h
    out = [
        DicomSeries(
            uid=uid,
            headers=tuple(sorted(sops.values(), key=_slice_key)),
            repeated_files=tuple(repeats.get(uid, ())),
        )
        for uid, sops in by_uid.items()
    ]
    return sorted(out, key=lambda s: (s.series_number is None, s.series_number or 0, s.uid_hash))


# --------------------------------------------------------------------------- pixels


def pixel_digest(series: DicomSeries) -> str:
    """sha256 of the pixel data of every file of the series, in slice order.

    Reads each file in full (one at a time) and checks that its ``PixelData``
    has the length the header announces (uncompressed transfer syntaxes), so a
    truncated file is found here.

    Raises
    ------
    CorruptFileError
        A file cannot be read, has no pixel data or is truncated; the message
        names the file.
    """
    h = hashlib.sha256()
    for path in series.files:
        try:
            ds = pydicom.dcmread(path)
            data = ds.PixelData
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on bad files
            raise CorruptFileError(
                f"{path}: cannot read the DICOM pixel data ({type(exc).__name__}: {exc}); "
                "the file is truncated or corrupt"
            ) from exc
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if ts is not None and not ts.is_compressed:
            expected = (
                int(ds.Rows)
                * int(ds.Columns)
                * int(ds.get("SamplesPerPixel", 1))
                * int(ds.get("NumberOfFrames") or 1)
                * int(ds.BitsAllocated)
                // 8
            )
            if len(data) < expected:
                raise CorruptFileError(
                    f"{path}: pixel data holds {len(data)} bytes, the header announces "
                    f"{expected} (rule: Rows x Columns x frames x bytes); the file is truncated"
                )
        h.update(data)
    return h.hexdigest()
