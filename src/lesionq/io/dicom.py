"""DICOM: header reading, grouping into series, classification, conversion to NIfTI.

Reading
    :func:`is_dicom_file` recognises a DICOM Part-10 file by its 128-byte preamble
    followed by ``DICM`` (file names and extensions are ignored).
    :func:`read_header` reads one header with pydicom (``stop_before_pixels``);
    :func:`group_series` groups headers by ``SeriesInstanceUID`` and collapses
    repeated files (same ``SOPInstanceUID``).

Classification
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

Conversion
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
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from ..errors import CorruptFileError, ProcessingError
from .deid import anonymous_nifti, filter_sidecar, hash_uid, identifying_values, redact
from .nifti import atomic_path, sha256_file

__all__ = [
    "SERIES_CLASSES",
    "CLASS_TO_CONTRAST",
    "MIN_SCORE",
    "MIN_MARGIN",
    "MIN_SLICES",
    "CLASSIFICATION_RULES",
    "Rule",
    "DicomHeader",
    "DicomSeries",
    "SeriesFeatures",
    "Classification",
    "WrittenFile",
    "ConversionResult",
    "is_dicom_file",
    "read_header",
    "group_series",
    "classify_series",
    "pixel_digest",
    "find_dcm2niix",
    "dcm2niix_version",
    "convert_series",
    "write_bytes_if_changed",
]

logger = logging.getLogger(__name__)

SeriesClass = Literal["flair", "t1", "t1ce", "t2", "localiser", "other", "unknown"]

#: Every class a series can get.
SERIES_CLASSES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2", "localiser", "other", "unknown")

#: Series class -> key of :data:`lesionq.io.bids.CONTRASTS` (classes that are written).
CLASS_TO_CONTRAST: Mapping[str, str] = {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2"}

#: Points the winning class needs.
MIN_SCORE = 3
#: Points by which the winning class must lead the runner-up.
MIN_MARGIN = 2
#: Series with fewer slices than this are localisers.
MIN_SLICES = 10

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
    import pydicom
    from pydicom.errors import InvalidDicomError

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


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class Rule:
    """One classification rule: when ``test`` holds, ``points`` go to ``target``.

    ``target`` is a class (``flair``, ``t1``, ``t2``, ``other``), or ``post`` /
    ``pre`` for contrast evidence, or ``localiser`` (decisive).
    """

    name: str
    target: str
    points: int
    test: Callable[[SeriesFeatures], bool]
    reason: Callable[[SeriesFeatures], str]


def _rx(pattern: str) -> Callable[[SeriesFeatures], bool]:
    rx = re.compile(pattern)
    return lambda f: bool(rx.search(f.name))


_B = r"(?<![a-z0-9])"  # token start (underscores, spaces, dashes separate tokens)
_E = r"(?![a-z0-9])"
_FLAIR_NAME = rf"flair|dark.?fluid|{_B}(?:tirm|df|spc_?fl|space_?flair){_E}"
_has_flair_name = _rx(_FLAIR_NAME)


def _ti(f: SeriesFeatures) -> float:
    return f.inversion_time_ms or 0.0


def _has_ir(f: SeriesFeatures) -> bool:
    return "IR" in f.scanning_sequence or "IR" in f.scan_options or _ti(f) > 0


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:g}"


def _name_reason(label: str) -> Callable[[SeriesFeatures], str]:
    return lambda f: f"name {f.description or f.protocol!r} suggests {label}"


#: The rule table (see the module docstring for the decision procedure).
CLASSIFICATION_RULES: tuple[Rule, ...] = (
    # localiser (decisive)
    Rule(
        "localiser-image-type",
        "localiser",
        99,
        lambda f: "LOCALIZER" in f.image_type,
        lambda f: "ImageType contains LOCALIZER",
    ),
    Rule(
        "localiser-name",
        "localiser",
        99,
        _rx(rf"{_B}(?:loc|localizer|localiser|scout|survey|aahead|aascout|3.?plane){_E}|localiz"),
        _name_reason("a localiser"),
    ),
    Rule(
        "localiser-planes",
        "localiser",
        99,
        lambda f: f.n_orientations > 1,
        lambda f: f"{f.n_orientations} slice orientations in one series (multi-plane)",
    ),
    Rule(
        "localiser-few-slices",
        "localiser",
        99,
        lambda f: 0 < f.n_slices < MIN_SLICES,
        lambda f: f"{f.n_slices} slices (< {MIN_SLICES})",
    ),
    # names
    Rule("flair-name", "flair", 3, _has_flair_name, _name_reason("FLAIR")),
    Rule(
        "t2-name",
        "t2",
        2,
        lambda f: (
            bool(re.search(rf"{_B}t2(?:w|_?tse|_?fse|_?space)?{_E}(?!\*)", f.name))
            and not _has_flair_name(f)
        ),
        _name_reason("T2"),
    ),
    Rule(
        "t1-name",
        "t1",
        2,
        _rx(rf"{_B}t1w?{_E}|mp.?rage|mp2rage|{_B}(?:spgr|bravo|tfl|vibe|flash|tfe|ffe|fspgr){_E}"),
        _name_reason("T1"),
    ),
    Rule(
        "other-name",
        "other",
        4,
        _rx(
            rf"diff|{_B}(?:dwi|dti|adc|trace|tracew|swi|pd|pdw|asl|pcasl|bold|fmri|rest|tof|"
            rf"mra|mip|minip|fieldmap|perf|dsc|dce|fa|exp|b0|b1000){_E}|t2\*|t2_?star|angio|"
            r"susc|perfusion|phase"
        ),
        _name_reason("a non-structural series (diffusion, perfusion, SWI, angiography...)"),
    ),
    # physics
    Rule(
        "flair-inversion",
        "flair",
        3,
        lambda f: _has_ir(f) and _ti(f) >= 1500,
        lambda f: (
            f"inversion recovery with TI {_ms(f.inversion_time_ms)} ms >= 1500 (fluid nulled)"
        ),
    ),
    Rule(
        "flair-long-te",
        "flair",
        1,
        lambda f: _ti(f) >= 1500 and (f.echo_time_ms or 0) >= 60,
        lambda f: f"long TE {_ms(f.echo_time_ms)} ms with fluid-nulling inversion",
    ),
    Rule(
        "t2-long-tr-te",
        "t2",
        3,
        lambda f: (
            (f.repetition_time_ms or 0) >= 2000
            and (f.echo_time_ms or 0) >= 60
            and _ti(f) < 1500
            and "EP" not in f.scanning_sequence
        ),
        lambda f: (
            f"TR {_ms(f.repetition_time_ms)} ms >= 2000 and TE {_ms(f.echo_time_ms)} ms "
            ">= 60 without fluid nulling (T2 weighting)"
        ),
    ),
    Rule(
        "t1-short-tr-te",
        "t1",
        3,
        lambda f: 0 < (f.repetition_time_ms or 0) < 1000 and 0 < (f.echo_time_ms or 0) < 30,
        lambda f: (
            f"TR {_ms(f.repetition_time_ms)} ms < 1000 and TE {_ms(f.echo_time_ms)} ms < 30 "
            "(T1 weighting)"
        ),
    ),
    Rule(
        "t1-mp-gradient-echo",
        "t1",
        3,
        lambda f: _has_ir(f) and 300 <= _ti(f) < 1400 and 0 < (f.echo_time_ms or 0) < 10,
        lambda f: (
            f"magnetisation-prepared gradient echo (TI {_ms(f.inversion_time_ms)} ms, "
            f"TE {_ms(f.echo_time_ms)} ms)"
        ),
    ),
    Rule(
        "other-epi",
        "other",
        2,
        lambda f: "EP" in f.scanning_sequence,
        lambda f: "echo-planar acquisition (ScanningSequence EP)",
    ),
    Rule(
        "other-image-type",
        "other",
        4,
        lambda f: bool(
            set(f.image_type)
            & {"DIFFUSION", "ADC", "TRACEW", "FA", "PERFUSION", "PHASE", "P", "MIP", "SWI"}
        ),
        lambda f: f"ImageType {'/'.join(f.image_type)} is not a structural magnitude image",
    ),
    Rule(
        "other-modality",
        "other",
        99,
        lambda f: bool(f.modality) and f.modality != "MR",
        lambda f: f"Modality {f.modality} is not MR",
    ),
    # contrast evidence
    Rule(
        "post-contrast-tag",
        "post",
        1,
        lambda f: bool(f.contrast_agent or f.contrast_route),
        lambda f: "ContrastBolusAgent/Route set",
    ),
    Rule(
        "post-contrast-name",
        "post",
        1,
        _rx(
            rf"{_B}(?:post|gd|gad|gado|ce|kontrast|mdc|postcontrast|contrast|postgd){_E}"
            rf"|\+ ?c{_E}|\+ ?gd|post.?gad|post.?contr"
        ),
        _name_reason("post-contrast"),
    ),
    Rule(
        "pre-contrast-name",
        "pre",
        1,
        _rx(rf"{_B}(?:pre|native|nativ|precontrast|pre.?gd|pre.?gad|wo){_E}|w/o"),
        _name_reason("pre-contrast"),
    ),
)

_SCORED = ("flair", "t1", "t2", "other")


@dataclass(frozen=True)
class Classification:
    """Result of :func:`classify_series`.

    Attributes
    ----------
    label : str
        One of :data:`SERIES_CLASSES`.
    reasons : tuple of str
        Every matching rule's reason, then the decision.
    scores : dict
        Points per scored class (``flair``, ``t1``, ``t2``, ``other``).
    candidates : tuple of str
        For ``unknown``: the contrast classes it could be (``flair``, ``t1``,
        ``t1ce``, ``t2``); for a decided label, ``(label,)``.
    derived : bool
        Set by the caller from ``ImageType`` (see :attr:`DicomSeries.derived`).
    """

    label: str
    reasons: tuple[str, ...]
    scores: Mapping[str, int] = field(default_factory=dict)
    candidates: tuple[str, ...] = ()
    derived: bool = False


def classify_series(
    features: SeriesFeatures,
    *,
    rules: Sequence[Rule] = CLASSIFICATION_RULES,
    min_score: int = MIN_SCORE,
    min_margin: int = MIN_MARGIN,
) -> Classification:
    """Classify a series from its header values (pure; see the module docstring).

    Parameters
    ----------
    features : SeriesFeatures
    rules : sequence of Rule
        The rule table (:data:`CLASSIFICATION_RULES` by default).
    min_score, min_margin : int
        Points the winner needs, and its lead over the runner-up.

    Returns
    -------
    Classification

    Examples
    --------
    >>> f = SeriesFeatures("t2_tirm_tra_dark-fluid", scanning_sequence=("SE", "IR"),
    ...                    echo_time_ms=81, repetition_time_ms=9000, inversion_time_ms=2500,
    ...                    n_slices=40)
    >>> c = classify_series(f)
    >>> c.label, c.scores["flair"], c.scores["t2"]
    ('flair', 7, 0)
    >>> classify_series(SeriesFeatures("series 7", n_slices=40)).label
    'unknown'
    """
    reasons: list[str] = []
    scores = dict.fromkeys(_SCORED, 0)
    post = pre = False
    localiser = False
    for rule in rules:
        if not rule.test(features):
            continue
        reasons.append(f"{rule.reason(features)} [{rule.name}: {rule.target} +{rule.points}]")
        if rule.target == "localiser":
            localiser = True
        elif rule.target == "post":
            post = True
        elif rule.target == "pre":
            pre = True
        else:
            scores[rule.target] = scores.get(rule.target, 0) + rule.points
    if localiser:
        return Classification("localiser", tuple(reasons), scores, ())
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], _SCORED.index(kv[0])))
    (best, top), (_, second) = ranked[0], ranked[1]

    def expand(cls: str) -> tuple[str, ...]:
        if cls != "t1":
            return (cls,)
        return ("t1ce",) if post and not pre else ("t1",) if not post else ("t1", "t1ce")

    if top < min_score or top - second < min_margin:
        cands = tuple(c for cls, pts in ranked if pts > 0 and cls != "other" for c in expand(cls))
        why = (
            f"no class reaches {min_score} points"
            if top < min_score
            else f"{best} leads by {top - second} < {min_margin} points"
        )
        reasons.append(f"undecided: {why} (scores {scores})")
        return Classification("unknown", tuple(reasons), scores, cands)
    label = best
    if best == "t1" and post:
        if pre:
            reasons.append("undecided: contrast evidence and a pre-contrast name")
            return Classification("unknown", tuple(reasons), scores, ("t1", "t1ce"))
        label = "t1ce"
    reasons.append(f"decided: {label} ({top} points, runner-up {second})")
    return Classification(label, tuple(reasons), scores, (label,) if label != "other" else ())


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
    import pydicom

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


# --------------------------------------------------------------------------- conversion


@dataclass(frozen=True)
class WrittenFile:
    """A file written (or found already up to date) by ingest.

    ``action`` is ``created``, ``replaced`` (content changed) or ``unchanged``.
    """

    path: Path
    action: Literal["created", "replaced", "unchanged"]
    sha256: str


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_series` wrote."""

    image: WrittenFile
    sidecar: WrittenFile
    converter: str
    dropped_fields: tuple[str, ...]
    cleared_header_fields: tuple[str, ...]
    shape: tuple[int, ...]
    affine: np.ndarray


def write_bytes_if_changed(dest: str | os.PathLike[str], data: bytes) -> WrittenFile:
    """Write ``data`` atomically unless ``dest`` already holds exactly these bytes.

    Returns
    -------
    WrittenFile
        ``unchanged`` (same sha256, nothing written), ``replaced`` or ``created``.
    """
    dest = Path(dest)
    digest = hashlib.sha256(data).hexdigest()
    if dest.is_file():
        if sha256_file(dest) == digest:
            return WrittenFile(dest, "unchanged", digest)
        action: Literal["created", "replaced", "unchanged"] = "replaced"
    else:
        action = "created"
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return WrittenFile(dest, action, digest)


@functools.lru_cache(maxsize=4)
def _find(exe_dir: str, path_env: str) -> str | None:
    local = Path(exe_dir) / "dcm2niix"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("dcm2niix", path=path_env)


def find_dcm2niix() -> Path:
    """Path of the ``dcm2niix`` binary: next to ``sys.executable``, else on ``PATH``.

    Raises
    ------
    ProcessingError
        Not found (install it with ``pip install dcm2niix``).
    """
    found = _find(str(Path(sys.executable).parent), os.environ.get("PATH", ""))
    if found is None:
        raise ProcessingError(
            f"dcm2niix not found next to {sys.executable} nor on PATH "
            "(rule: DICOM ingest converts with dcm2niix); install it with 'pip install dcm2niix'"
        )
    return Path(found)


@functools.lru_cache(maxsize=4)
def dcm2niix_version(binary: str | None = None) -> str:
    """``dcm2niix vX.Y.Z`` of the binary (its ``--version`` exits 3: that is normal)."""
    exe = binary or str(find_dcm2niix())
    try:
        run = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProcessingError(f"{exe}: cannot run ({type(exc).__name__}: {exc})") from exc
    m = re.search(r"v\d+\.\d+\.\d+\w*", run.stdout + run.stderr)
    return f"dcm2niix {m.group(0) if m else 'unknown-version'}"


def _nifti_gz_bytes(img: nib.Nifti1Image) -> bytes:
    # mtime 0 and no file name in the gzip header: identical voxels -> identical bytes
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def convert_series(
    series: DicomSeries,
    dest: str | os.PathLike[str],
    *,
    identifiers: Iterable[str] = (),
    sidecar_extra: Mapping[str, Any] | None = None,
    timeout_s: float = 300.0,
    binary: str | os.PathLike[str] | None = None,
) -> ConversionResult:
    """Convert one series to a de-identified ``.nii.gz`` + ``.json`` sidecar.

    Parameters
    ----------
    series : DicomSeries
    dest : path-like
        Destination ``.nii.gz``; the sidecar goes beside it (``.json``).
    identifiers : iterable of str
        Values to redact from free-text sidecar fields (the subject's headers).
    sidecar_extra : mapping, optional
        Fields added to the sidecar (e.g. provenance); must be JSON-serialisable.
    timeout_s : float
        Limit on the converter's run time, s.
    binary : path-like, optional
        The ``dcm2niix`` to run (:func:`find_dcm2niix` when None).

    Returns
    -------
    ConversionResult

    Raises
    ------
    ProcessingError
        dcm2niix is missing, fails, times out, or gives other than one volume.
    """
    dest = Path(dest)
    if not dest.name.endswith(".nii.gz"):
        raise ProcessingError(f"{dest}: destination must end in .nii.gz")
    exe = str(binary) if binary is not None else str(find_dcm2niix())
    version = dcm2niix_version(exe)
    label = f"series {series.series_number}"
    ids = list(identifiers) + list(series.identifiers)
    with tempfile.TemporaryDirectory(prefix="lesionq-dcm2niix-") as tmp:
        src = Path(tmp) / "in"
        out = Path(tmp) / "out"
        src.mkdir()
        out.mkdir()
        for i, f in enumerate(series.files):
            os.symlink(Path(f).resolve(), src / f"{i:05d}.dcm")
        cmd = [exe, "-b", "y", "-ba", "y", "-c", "", "-z", "n", "-x", "n", "-l", "o"]
        cmd += ["-i", "n", "-w", "1", "-f", "series", "-o", str(out), str(src)]
        try:
            run = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ProcessingError(
                f"{label}: dcm2niix ran longer than {timeout_s:g} s (rule: timeout_s)"
            ) from exc
        except OSError as exc:
            raise ProcessingError(f"{label}: cannot run {exe} ({exc})") from exc
        images = sorted(out.glob("*.nii"))
        if run.returncode != 0 or len(images) != 1:
            tail = redact((run.stderr or run.stdout)[-400:].replace(str(tmp), "<tmp>"), ids)
            raise ProcessingError(
                f"{label}: dcm2niix gave {len(images)} volumes with exit status "
                f"{run.returncode} (rule: one series converts to one 3-D volume): {tail.strip()}"
            )
        sidecar_path = images[0].with_suffix(".json")
        meta = (
            json.loads(sidecar_path.read_text(encoding="utf-8")) if sidecar_path.is_file() else {}
        )
        raw = nib.load(str(images[0]))
        if not isinstance(raw, nib.Nifti1Image):
            raise ProcessingError(f"{label}: dcm2niix wrote a {type(raw).__name__}, not NIfTI-1")
        if len(raw.shape) > 3 and int(np.prod(raw.shape[3:])) != 1:
            raise ProcessingError(
                f"{label}: dcm2niix gave a {raw.shape} image (rule: one 3-D volume per series)"
            )
        cleared = [
            n
            for n in ("descrip", "aux_file", "intent_name", "db_name")
            if bytes(raw.header[n].item()).strip(b"\x00 \t")
        ]
        img = anonymous_nifti(raw)
        payload = _nifti_gz_bytes(img)
    kept, dropped = filter_sidecar(meta, ids)
    if sidecar_extra:
        kept.update(sidecar_extra)
    text = json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    image = write_bytes_if_changed(dest, payload)
    sidecar = write_bytes_if_changed(
        dest.with_name(dest.name[: -len(".nii.gz")] + ".json"), text.encode("utf-8")
    )
    return ConversionResult(
        image=image,
        sidecar=sidecar,
        converter=version,
        dropped_fields=tuple(dropped),
        cleared_header_fields=tuple(cleared),
        shape=tuple(int(s) for s in img.shape),
        affine=np.asarray(img.affine),
    )
