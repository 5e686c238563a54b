"""Ingest an upload (DICOM or BIDS) into the BIDS layout lesionq reads.

Upload layout::

    UPLOAD/<site>/<subject>/<visit>/**/*     DICOM files, any names, any nesting, any order
    UPLOAD/<site>/  (or UPLOAD/ itself)       already a BIDS dataset (dataset_description.json)

Labels
    The subject label is the subject folder name reduced to ``[0-9a-zA-Z]``
    (trial subject codes are pseudonyms), or ``subject_map[folder name]``; the
    session label is the visit folder name reduced the same way. DICOM
    ``PatientName`` / ``PatientID`` are never used. The site goes to
    ``participants.tsv`` (``participant_id``, ``site``); birth date, age and sex
    are not written anywhere.

DICOM visits
    Files are recognised by their ``DICM`` preamble; headers are grouped into
    series (:func:`lesionq.io.dicom.group_series`), classified from headers only
    (:func:`lesionq.io.dicom.classify_series`), localisers and non-structural
    series dropped, exact duplicates (same pixel data) collapsed. For each
    contrast of :data:`lesionq.io.bids.CONTRASTS` exactly one series must be a
    candidate: two original series of the same class, or an unclassifiable
    series that could be that contrast, is an *ambiguity*: the contrast is not
    written and a finding (``error`` for the FLAIR, ``warning`` otherwise) names
    the series; ``choices={(subject, visit, contrast): series_number}`` resolves
    it (subject/visit as upload folder names or labels; contrast a key of
    ``CONTRASTS``: ``flair``, ``t1``, ``t2``, ``t1ce``). A derived/reformatted
    series is used only when no original of its class exists.

Outputs (all de-identified, see :mod:`lesionq.io.deid`)
    ``sub-<s>/ses-<v>/anat/sub-<s>_ses-<v>_<suffix>.nii.gz`` + ``.json`` (whitelisted
    fields + ``LesionqIngest`` provenance), ``sub-<s>/sub-<s>_sessions.tsv``
    (``acq_time`` shifted per subject so that the earliest visit is on
    1900-01-01, times of day kept, intervals exact), ``participants.tsv``,
    ``dataset_description.json`` (when absent), and the ingest report in
    ``sourcedata/lesionq-ingest/`` (``ingest_report.json``, ``ingest_series.tsv``;
    BIDS tools ignore ``sourcedata``): series numbers, redacted descriptions,
    classes, reasons and hashed UIDs, no absolute paths and no real dates.
    Every file is written atomically and only when its bytes change, so a
    re-ingest of the same upload is a no-op; a changed upload replaces files
    and says so (``file-replaced``).

Date shift: the shift of a subject (whole days) is computed from its first
upload and kept in ``sourcedata/lesionq-ingest/date_shift_key.tsv``, so a
later upload of a follow-up visit lands at the right interval from baseline.
That file is the key back to real dates: it stays with the uploads at the
reading centre; lesionq never copies it into its outputs or the database.
Sessions ingested before any key existed are reported (``date-shift-partial``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import nibabel as nib

from .._version import __version__
from ..errors import CorruptFileError, InputError, MissingInputError, ProcessingError
from ..io.bids import CONTRASTS, layout_problems, natural_key, normalise_participant_label
from ..io.checks import Finding, Level, format_findings, has_errors
from ..io.deid import (
    anonymous_nifti,
    apply_date_shift,
    date_shift_days,
    filter_sidecar,
    redact,
    scrub_nifti_header,
)
from ..io.dicom import (
    CLASS_TO_CONTRAST,
    Classification,
    DicomHeader,
    DicomSeries,
    WrittenFile,
    classify_series,
    convert_series,
    dcm2niix_version,
    find_dcm2niix,
    group_series,
    is_dicom_file,
    pixel_digest,
    read_header,
    write_bytes_if_changed,
)

__all__ = [
    "REPORT_DIR",
    "DATE_SHIFT_KEY",
    "SeriesRecord",
    "VisitIngest",
    "IngestReport",
    "ingest_upload",
    "read_subject_map",
]

logger = logging.getLogger(__name__)

#: Folder (relative to the BIDS root) of the ingest report.
REPORT_DIR = Path("sourcedata") / "lesionq-ingest"

_NON_LABEL = re.compile(r"[^0-9a-zA-Z]")

ChoiceKey = tuple[str, str, str]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SeriesRecord:
    """One series of a visit, as reported (no identifiers, UID hashed).

    Attributes
    ----------
    series_number : int or None
    description : str
        ``SeriesDescription`` redacted (see :func:`lesionq.io.deid.redact`).
    series_hash : str
        :func:`lesionq.io.deid.hash_uid` of the ``SeriesInstanceUID``.
    n_files, n_slices : int
    label : str
        Class from :func:`lesionq.io.dicom.classify_series`.
    candidates : tuple of str
        Contrasts an ``unknown`` series could be.
    derived : bool
    reasons : tuple of str
        Redacted reasons of the classification.
    status : str
        ``chosen``, ``localiser``, ``other``, ``duplicate``, ``ambiguous``,
        ``not-preferred`` (derived with an original present), ``unclassified``,
        ``corrupt``, ``conversion-failed``.
    contrast : str or None
        Key of :data:`~lesionq.io.bids.CONTRASTS` it was written as.
    duplicate_of : int or None
        Series number of the series it duplicates.
    """

    series_number: int | None
    description: str
    series_hash: str
    n_files: int
    n_slices: int
    label: str
    candidates: tuple[str, ...]
    derived: bool
    reasons: tuple[str, ...]
    status: str
    contrast: str | None = None
    duplicate_of: int | None = None

    @property
    def chosen(self) -> bool:
        """True when the series was written."""
        return self.status == "chosen"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "series_number": self.series_number,
            "description": self.description,
            "series_hash": self.series_hash,
            "n_files": self.n_files,
            "n_slices": self.n_slices,
            "class": self.label,
            "candidates": list(self.candidates),
            "derived": self.derived,
            "status": self.status,
            "contrast": self.contrast,
            "duplicate_of": self.duplicate_of,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class VisitIngest:
    """Outcome of one visit of the upload.

    ``subject``/``session`` are the BIDS labels (``None`` when no valid label
    could be made); ``acq_time`` is the *shifted* ISO date-time written to
    ``sessions.tsv``.
    """

    site: str
    upload_subject: str
    upload_visit: str
    subject: str | None
    session: str | None
    kind: str = "dicom"
    series: tuple[SeriesRecord, ...] = ()
    findings: tuple[Finding, ...] = ()
    written: tuple[WrittenFile, ...] = ()
    acq_time: str | None = None
    conversion_s: float = 0.0

    @property
    def visit_id(self) -> str:
        """``sub-<s>_ses-<v>``, or the upload path when there are no labels."""
        if self.subject is None or self.session is None:
            return f"{self.upload_subject}/{self.upload_visit}"
        return f"sub-{self.subject}_ses-{self.session}"

    @property
    def ok(self) -> bool:
        """No error finding for this visit."""
        return not has_errors(self.findings)

    @property
    def contrasts(self) -> dict[str, str]:
        """``{contrast key: BIDS file name}`` of the images written (or unchanged)."""
        out = {}
        for f in self.written:
            for key, suffix in CONTRASTS.items():
                if f.path.name.endswith(f"_{suffix}.nii.gz"):
                    out[key] = f.path.name
        return out


@dataclass(frozen=True)
class IngestReport:
    """Outcome of :func:`ingest_upload`.

    Attributes
    ----------
    upload_dir, bids_dir : Path
    visits : tuple of VisitIngest
    findings : tuple of Finding
        Every finding: upload-level ones first, then each visit's.
    written : tuple of WrittenFile
        Every file written or found unchanged (images, sidecars, tables, report).
    converter : str or None
        ``dcm2niix vX`` when DICOM was converted.
    elapsed_s : float
        Wall time of the ingest, s.
    """

    upload_dir: Path
    bids_dir: Path
    visits: tuple[VisitIngest, ...] = ()
    findings: tuple[Finding, ...] = ()
    written: tuple[WrittenFile, ...] = ()
    converter: str | None = None
    elapsed_s: float = 0.0
    report_files: tuple[Path, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """No error finding anywhere (warnings allowed)."""
        return not has_errors(self.findings)

    def counts(self) -> dict[str, int]:
        """Files per action (``created``, ``replaced``, ``unchanged``)."""
        out = {"created": 0, "replaced": 0, "unchanged": 0}
        for f in self.written:
            out[f.action] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths relative to the upload / BIDS root; no real dates)."""
        return {
            "lesionq_version": __version__,
            "converter": self.converter,
            "upload": self.upload_dir.name,
            "ok": self.ok,
            "files": self.counts(),
            "findings": [_finding_dict(f, self.upload_dir, self.bids_dir) for f in self.findings],
            "visits": [
                {
                    "site": v.site,
                    "upload_subject": v.upload_subject,
                    "upload_visit": v.upload_visit,
                    "participant_id": None if v.subject is None else f"sub-{v.subject}",
                    "session_id": None if v.session is None else f"ses-{v.session}",
                    "kind": v.kind,
                    "ok": v.ok,
                    "acq_time": v.acq_time,
                    "contrasts": v.contrasts,
                    "series": [s.to_dict() for s in v.series],
                    "written": [
                        {
                            "path": _rel(w.path, self.bids_dir),
                            "action": w.action,
                            "sha256": w.sha256,
                        }
                        for w in v.written
                    ],
                }
                for v in self.visits
            ],
        }

    def to_text(self) -> str:
        """Human-readable report for the command line."""
        lines = [
            f"lesionq ingest: {self.upload_dir} -> {self.bids_dir}"
            + (f" ({self.converter})" if self.converter else "")
        ]
        for v in self.visits:
            head = f"{v.visit_id}  (site {v.site}, upload {v.upload_subject}/{v.upload_visit}"
            head += f", acq_time {v.acq_time})" if v.acq_time else ")"
            lines.append("")
            lines.append(head)
            if v.series:
                lines.append(f"  {'#':>4}  {'class':<9} {'status':<17} {'contrast':<8} description")
                for s in v.series:
                    num = "?" if s.series_number is None else str(s.series_number)
                    cls = s.label + ("*" if s.derived else "")
                    lines.append(
                        f"  {num:>4}  {cls:<9} {s.status:<17} {s.contrast or '-':<8} "
                        f"{s.description!r}"
                    )
            for f in v.findings:
                lines.append(f"  {f.level.upper():<8} {f.code}  {f.message}")
                if f.fix:
                    lines.append(f"  {'':<8} fix: {f.fix}")
        top = [f for f in self.findings if not any(f in v.findings for v in self.visits)]
        if top:
            lines.append("")
            lines.append("upload:")
            lines.extend("  " + ln for ln in format_findings(top).splitlines()[:-1])
        c = self.counts()
        lines.append("")
        lines.append(
            f"{len(self.visits)} visits; files: {c['created']} created, {c['replaced']} replaced, "
            f"{c['unchanged']} unchanged; {format_findings(self.findings).splitlines()[-1]} "
            f"({self.elapsed_s:.1f} s)"
        )
        lines.append("* = derived/reformatted series")
        return "\n".join(lines)


def _rel(path: Path | None, *roots: Path) -> str | None:
    if path is None:
        return None
    for root in roots:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            continue
    return Path(path).name


def _finding_dict(f: Finding, *roots: Path) -> dict[str, Any]:
    msg = f.message
    for root in roots:
        msg = msg.replace(f"{root}{os.sep}", "")
    return {
        "level": f.level,
        "code": f.code,
        "path": _rel(f.path, *roots),
        "message": msg,
        "fix": f.fix,
    }


# --------------------------------------------------------------------------- helpers


def read_subject_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a subject map TSV: columns ``upload_name`` and ``participant_id``.

    ``participant_id`` may carry the ``sub-`` prefix. Returns ``{upload name: label}``.

    Raises
    ------
    InputError
        Missing file or columns, an invalid label, or a repeated upload name.
    """
    p = Path(path)
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise InputError(f"{p}: cannot read the subject map ({exc})") from exc
    if not rows or not {"upload_name", "participant_id"} <= set(rows[0]):
        raise InputError(
            f"{p}: subject map needs the columns 'upload_name' and 'participant_id' "
            f"(got {sorted(rows[0]) if rows else 'no rows'})"
        )
    out: dict[str, str] = {}
    for i, row in enumerate(rows, start=2):
        name = (row["upload_name"] or "").strip()
        if name in out:
            raise InputError(f"{p}: line {i}: upload_name {name!r} appears twice")
        try:
            out[name] = normalise_participant_label((row["participant_id"] or "").strip())
        except InputError as exc:
            raise InputError(f"{p}: line {i}: {exc}") from exc
    return out


def _label(name: str) -> str:
    return _NON_LABEL.sub("", name)


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _stray_files(folder: Path, where: str) -> list[Finding]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        return []
    return [
        Finding(
            "info",
            "stray-file",
            folder,
            f"{folder}: {len(files)} file(s) at the {where} level ignored "
            f"(rule: UPLOAD/<site>/<subject>/<visit>/...; e.g. {files[0].name})",
            "",
        )
    ]


def _tsv(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, delimiter="\t", lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("n/a" if r.get(c) in (None, "") else r[c]) for c in columns})
    return buf.getvalue().encode("utf-8")


def _read_tsv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh, delimiter="\t")]


def _describe(s: DicomSeries, ids: Iterable[str]) -> str:
    num = "?" if s.series_number is None else s.series_number
    return f"#{num} {redact(s.description, ids)!r}"


# --------------------------------------------------------------------------- DICOM visit


@dataclass
class _VisitJob:
    site: str
    upload_subject: str
    upload_visit: str
    folder: Path
    subject: str
    session: str


def _choice_for(
    choices: Mapping[ChoiceKey, int], job: _VisitJob, key: str
) -> tuple[bool, int | None]:
    for subj in (job.upload_subject, job.subject, f"sub-{job.subject}"):
        for ses in (job.upload_visit, job.session, f"ses-{job.session}"):
            if (subj, ses, key) in choices:
                return True, int(choices[(subj, ses, key)])
    return False, None


def _scan_files(job: _VisitJob, upload: Path) -> tuple[list[DicomHeader], list[Finding]]:
    headers: list[DicomHeader] = []
    findings: list[Finding] = []
    skipped: list[Path] = []
    for p in sorted(job.folder.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(job.folder).parts):
            continue
        rel = p.relative_to(upload)
        if p.name.upper() == "DICOMDIR":
            skipped.append(p)
            continue
        if not is_dicom_file(p):
            if p.name.endswith((".nii", ".nii.gz")):
                findings.append(
                    Finding(
                        "warning",
                        "nifti-outside-bids",
                        p,
                        f"{rel}: NIfTI file in a DICOM visit folder not ingested "
                        "(rule: NIfTI uploads must be a BIDS dataset with dataset_description.json)",
                        "upload NIfTI files as a BIDS dataset, or upload the DICOM series",
                    )
                )
            else:
                skipped.append(p)
            continue
        try:
            headers.append(read_header(p))
        except CorruptFileError as exc:
            findings.append(
                Finding(
                    "warning",
                    "dicom-unreadable",
                    p,
                    str(exc).replace(str(p), str(rel)),
                    "re-export this file from the PACS; the rest of the visit is ingested",
                )
            )
    if skipped:
        names = ", ".join(str(q.relative_to(upload)) for q in skipped[:3])
        findings.append(
            Finding(
                "info",
                "non-dicom-file",
                skipped[0],
                f"{len(skipped)} non-DICOM file(s) ignored (rule: DICOM files start with a "
                f"128-byte preamble and 'DICM'; e.g. {names})",
                "",
            )
        )
    return headers, findings


@dataclass
class _DicomVisit:
    """One DICOM visit being ingested: its series, their classes and records, the findings."""

    job: _VisitJob
    upload: Path
    vid: str
    ids: frozenset[str]
    series: list[DicomSeries]
    classes: dict[str, Classification]
    records: dict[str, dict[str, Any]]
    findings: list[Finding]


def _triage(job: _VisitJob, upload: Path) -> _DicomVisit:
    """Read the headers of a visit folder, group them into series and classify each."""
    vid = f"sub-{job.subject}_ses-{job.session}"
    headers, findings = _scan_files(job, upload)
    series = group_series(headers)
    ids: frozenset[str] = (
        frozenset().union(*(s.identifiers for s in series)) if series else frozenset()
    )
    records: dict[str, dict[str, Any]] = {}
    classes = {}
    for s in series:
        c = classify_series(s.features())
        classes[s.uid] = c
        records[s.uid] = {
            "series_number": s.series_number,
            "description": redact(s.description, ids),
            "series_hash": s.uid_hash,
            "n_files": len(s.headers),
            "n_slices": s.n_slices,
            "label": c.label,
            "candidates": c.candidates if c.label == "unknown" else (),
            "derived": s.derived,
            "reasons": tuple(redact(r, ids) for r in c.reasons),
            "status": "",
        }
        if s.repeated_files:
            findings.append(
                Finding(
                    "info",
                    "duplicate-file",
                    s.repeated_files[0],
                    f"{vid}: series {_describe(s, ids)}: {len(s.repeated_files)} file(s) repeat "
                    "images already read (same SOPInstanceUID); used once",
                    "",
                )
            )
    return _DicomVisit(job, upload, vid, ids, series, classes, records, findings)


def _usable_series(v: _DicomVisit) -> list[DicomSeries]:
    """The series that may become a contrast: no localisers, others, corrupt or duplicates."""
    vid, ids, upload, records, classes, findings = (
        v.vid, v.ids, v.upload, v.records, v.classes, v.findings
    )  # fmt: skip
    usable: list[DicomSeries] = []
    digests: dict[str, DicomSeries] = {}
    for s in v.series:
        c = classes[s.uid]
        rec = records[s.uid]
        if c.label == "localiser":
            rec["status"] = "localiser"
            findings.append(
                Finding(
                    "info",
                    "localiser-dropped",
                    s.files[0],
                    f"{vid}: series {_describe(s, ids)} is a localiser ({rec['reasons'][0]}); dropped",
                )
            )
            continue
        if c.label == "other":
            rec["status"] = "other"
            findings.append(
                Finding(
                    "info",
                    "other-series",
                    s.files[0],
                    f"{vid}: series {_describe(s, ids)} is not a FLAIR/T1/T2 series "
                    f"({rec['reasons'][0]}); not ingested",
                )
            )
            continue
        try:
            digest = pixel_digest(s)
        except CorruptFileError as exc:
            rec["status"] = "corrupt"
            findings.append(
                Finding(
                    "warning",
                    "series-corrupt",
                    s.files[0],
                    f"{vid}: series {_describe(s, ids)} ({c.label}) not used: "
                    + str(exc).replace(f"{upload}{os.sep}", ""),
                    "re-export the series from the PACS",
                )
            )
            continue
        if digest in digests:
            first = digests[digest]
            rec["status"] = "duplicate"
            rec["duplicate_of"] = first.series_number
            findings.append(
                Finding(
                    "info",
                    "duplicate-series",
                    s.files[0],
                    f"{vid}: series {_describe(s, ids)} has the same pixel data as series "
                    f"{_describe(first, ids)}; collapsed into it",
                )
            )
            continue
        digests[digest] = s
        usable.append(s)

    return usable


def _choose_contrasts(
    v: _DicomVisit, usable: list[DicomSeries], choices: Mapping[ChoiceKey, int]
) -> dict[str, tuple[DicomSeries, str]]:
    """One series per contrast (explicit choice, else unambiguous classification), with why."""
    job, vid, ids, records, classes, findings, series = (
        v.job, v.vid, v.ids, v.records, v.classes, v.findings, v.series
    )  # fmt: skip
    chosen: dict[str, tuple[DicomSeries, str]] = {}
    for key in CONTRASTS:
        suffix = CONTRASTS[key]
        level: Level = "error" if key == "flair" else "warning"
        explicit, number = _choice_for(choices, job, key)
        if explicit:
            picks = [s for s in usable if s.series_number == number]
            if len(picks) != 1:
                findings.append(
                    Finding(
                        "error",
                        "choice-invalid",
                        job.folder,
                        f"{vid}: choice {key}=series {number} matches {len(picks)} usable series "
                        f"(usable: {[s.series_number for s in usable]})",
                        "choose the series number of one usable series of this visit",
                    )
                )
                continue
            chosen[key] = (picks[0], "explicit choice")
            findings.append(
                Finding(
                    "info",
                    "choice-applied",
                    picks[0].files[0],
                    f"{vid}: {suffix} taken from series {_describe(picks[0], ids)} "
                    f"by explicit choice (classified {classes[picks[0].uid].label})",
                )
            )
            continue
        cands = [s for s in usable if CLASS_TO_CONTRAST.get(classes[s.uid].label) == key]
        unknown = [
            s
            for s in usable
            if classes[s.uid].label == "unknown" and key in classes[s.uid].candidates
        ]
        originals = [s for s in cands if not s.derived]
        pool = originals or cands
        if unknown or len(pool) > 1:
            listed = [f"{_describe(s, ids)} ({classes[s.uid].label})" for s in pool] + [
                f"{_describe(s, ids)} (unclassified; could be "
                f"{'/'.join(classes[s.uid].candidates)})"
                for s in unknown
            ]
            for s in pool + unknown:
                records[s.uid]["status"] = "ambiguous"
            nums = [s.series_number for s in pool + unknown]
            findings.append(
                Finding(
                    level,
                    "ambiguous-series",
                    job.folder,
                    f"{vid}: {len(listed)} series could be the {suffix}: {', '.join(listed)}; "
                    f"the {suffix} is not written (rule: one series per contrast, no guessing)",
                    f"choose one: choices={{({job.upload_subject!r}, {job.upload_visit!r}, "
                    f"{key!r}): <series number, one of {nums}>}}",
                )
            )
            continue
        if pool:
            s = pool[0]
            chosen[key] = (s, "classification")
            for d in cands:
                if d.derived and originals:
                    records[d.uid]["status"] = "not-preferred"
                    findings.append(
                        Finding(
                            "info",
                            "derived-not-preferred",
                            d.files[0],
                            f"{vid}: derived/reformatted series {_describe(d, ids)} not used; "
                            f"the original series {_describe(s, ids)} is",
                        )
                    )
            if s.derived:
                findings.append(
                    Finding(
                        "warning",
                        "derived-only",
                        s.files[0],
                        f"{vid}: the {suffix} comes from the derived/reformatted series "
                        f"{_describe(s, ids)} (no original series of this class)",
                        "upload the original acquisition if it exists",
                    )
                )
        elif key == "flair":
            findings.append(
                Finding(
                    "error",
                    "missing-flair",
                    job.folder,
                    f"{vid}: no usable FLAIR series in the upload (rule: every visit needs a "
                    f"FLAIR; series: {[records[s.uid]['series_number'] for s in series]})",
                    "upload the FLAIR series of this visit, or choose one with choices=",
                )
            )
    for s in usable:
        rec = records[s.uid]
        if not rec["status"]:
            if classes[s.uid].label == "unknown":
                rec["status"] = "unclassified"
                findings.append(
                    Finding(
                        "warning",
                        "unclassified-series",
                        s.files[0],
                        f"{vid}: series {_describe(s, ids)} cannot be classified "
                        f"({rec['reasons'][-1]}); not ingested",
                        "choose it explicitly with choices= if it is a FLAIR/T1/T2",
                    )
                )
            else:
                rec["status"] = "ambiguous" if not rec["status"] else rec["status"]

    return chosen


def _write_contrasts(
    v: _DicomVisit, chosen: dict[str, tuple[DicomSeries, str]], bids: Path, timeout_s: float
) -> list[WrittenFile]:
    """Convert the chosen series into the BIDS dataset; flag replaced and stale files."""
    job, vid, ids, upload, records, classes, findings = (
        v.job, v.vid, v.ids, v.upload, v.records, v.classes, v.findings
    )  # fmt: skip
    anat = bids / f"sub-{job.subject}" / f"ses-{job.session}" / "anat"
    written: list[WrittenFile] = []
    for key, (s, how) in chosen.items():
        rec = records[s.uid]
        dest = anat / f"sub-{job.subject}_ses-{job.session}_{CONTRASTS[key]}.nii.gz"
        extra = {
            "LesionqIngest": {
                "LesionqVersion": __version__,
                "SourceSeriesHash": s.uid_hash,
                "SourceFiles": len(s.headers),
                "Classification": classes[s.uid].label,
                "ChosenBy": how,
                "Reasons": list(rec["reasons"]),
            }
        }
        try:
            res = convert_series(s, dest, identifiers=ids, sidecar_extra=extra, timeout_s=timeout_s)
        except ProcessingError as exc:
            rec["status"] = "conversion-failed"
            findings.append(
                Finding(
                    "error" if key == "flair" else "warning",
                    "conversion-failed",
                    s.files[0],
                    f"{vid}: {redact(str(exc), ids)}".replace(f"{upload}{os.sep}", ""),
                    "check the series in a DICOM viewer; re-export it",
                )
            )
            continue
        rec["status"] = "chosen"
        rec["contrast"] = key
        written.extend([res.image, res.sidecar])
        for w in (res.image, res.sidecar):
            if w.action == "replaced":
                findings.append(
                    Finding(
                        "warning",
                        "file-replaced",
                        w.path,
                        f"{_rel(w.path, bids)}: replaced with different content from this upload "
                        f"(series {_describe(s, ids)})",
                        "results computed from the old file are out of date: re-run the visit",
                    )
                )
    for key, suffix in CONTRASTS.items():
        stale = anat / f"sub-{job.subject}_ses-{job.session}_{suffix}.nii.gz"
        if key not in chosen and stale.is_file() and not any(w.path == stale for w in written):
            findings.append(
                Finding(
                    "warning",
                    "stale-file",
                    stale,
                    f"{_rel(stale, bids)}: kept from an earlier ingest, but this upload did not "
                    f"write the {suffix} of {vid}",
                    "delete the file if it should not be used",
                )
            )
    return written


def _session_start(v: _DicomVisit) -> datetime | None:
    """When the visit started: StudyDate/StudyTime, else the earliest acquisition."""
    series = v.series
    # the session starts at StudyDate/StudyTime; the earliest acquisition when that is absent
    starts = [s.study_started for s in series if s.study_started is not None]
    starts = starts or [s.acquired for s in series if s.acquired is not None]
    when = min(starts) if starts else None
    if when is None and series:
        v.findings.append(
            Finding(
                "warning",
                "no-acq-time",
                v.job.folder,
                f"{v.vid}: no StudyDate/AcquisitionDate in any header; acq_time is n/a",
                "the schedule cannot place this visit; fix the export",
            )
        )
    return when


def _ingest_dicom_visit(
    job: _VisitJob,
    upload: Path,
    bids: Path,
    choices: Mapping[ChoiceKey, int],
    timeout_s: float,
) -> tuple[VisitIngest, datetime | None, frozenset[str]]:
    v = _triage(job, upload)
    chosen = _choose_contrasts(v, _usable_series(v), choices)
    t0 = time.perf_counter()
    written = _write_contrasts(v, chosen, bids, timeout_s)
    conversion_s = time.perf_counter() - t0
    when = _session_start(v)
    series, records, findings, ids = v.series, v.records, v.findings, v.ids
    visit = VisitIngest(
        site=job.site,
        upload_subject=job.upload_subject,
        upload_visit=job.upload_visit,
        subject=job.subject,
        session=job.session,
        kind="dicom",
        series=tuple(SeriesRecord(**{k: v for k, v in records[s.uid].items()}) for s in series),
        findings=tuple(findings),
        written=tuple(written),
        conversion_s=conversion_s,
    )
    return visit, when, ids


# --------------------------------------------------------------------------- BIDS upload


def _ingest_bids_upload(
    site: str, root: Path, bids: Path
) -> tuple[list[VisitIngest], list[Finding], dict[str, dict[str, datetime | None]]]:
    """Copy a BIDS upload in (images with scrubbed headers, filtered sidecars)."""
    visits, problems = layout_problems(root)
    findings = [
        Finding(p.level, p.code, p.path, f"BIDS upload {root.name}: {p.message}", p.fix)
        for p in problems
    ]
    if any(p.level == "error" for p in problems):
        findings.append(
            Finding(
                "error",
                "bids-upload-rejected",
                root,
                f"BIDS upload {root.name}: not copied because of the layout errors above",
                "fix the layout and upload again",
            )
        )
        return [], findings, {}
    out: list[VisitIngest] = []
    times: dict[str, dict[str, datetime | None]] = {}
    for v in visits:
        vf: list[Finding] = []
        written: list[WrittenFile] = []
        session = v.session or "1"
        anat = bids / f"sub-{v.subject}" / f"ses-{session}" / "anat"
        for key, src in v.images().items():
            dest = anat / f"sub-{v.subject}_ses-{session}_{CONTRASTS[key]}.nii.gz"
            try:
                img = nib.load(str(src))
                if not isinstance(img, nib.Nifti1Image):
                    raise ValueError(f"{type(img).__name__} is not NIfTI")
                hdr = img.header.copy()
                cleared = scrub_nifti_header(hdr)
                clean = anonymous_nifti(img)  # also drops extensions; gz with mtime 0
                data = gzip.compress(clean.to_bytes(), compresslevel=6, mtime=0)
            except Exception as exc:  # noqa: BLE001 - any unreadable image becomes a finding
                vf.append(
                    Finding(
                        "error" if key == "flair" else "warning",
                        "bids-image-unreadable",
                        src,
                        f"{src.name}: cannot be read as NIfTI ({type(exc).__name__}: {exc})",
                        "re-export the image",
                    )
                )
                continue
            if cleared:
                vf.append(
                    Finding(
                        "info",
                        "nifti-header-scrubbed",
                        src,
                        f"{src.name}: header text fields {cleared} emptied (de-identification)",
                    )
                )
            written.append(write_bytes_if_changed(dest, data))
            side = src.parent / (src.name.split(".nii")[0] + ".json")
            if side.is_file():
                try:
                    meta = json.loads(side.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                    meta = {}
                kept, _ = filter_sidecar(meta)
                text = json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
                written.append(
                    write_bytes_if_changed(
                        dest.with_name(dest.name[: -len(".nii.gz")] + ".json"), text.encode()
                    )
                )
        when = None
        if v.acq_time:
            try:
                when = datetime.fromisoformat(v.acq_time.strip())
            except ValueError:
                vf.append(Finding("warning", "acq-time-invalid", v.sessions_tsv, f"{v.acq_time!r}"))
        times.setdefault(v.subject, {})[session] = when
        out.append(
            VisitIngest(
                site=site,
                upload_subject=f"sub-{v.subject}",
                upload_visit=f"ses-{session}",
                subject=v.subject,
                session=session,
                kind="bids",
                findings=tuple(vf),
                written=tuple(written),
            )
        )
    return out, findings, times


# --------------------------------------------------------------------------- orchestration


def _plan(
    upload: Path, subject_map: Mapping[str, str]
) -> tuple[list[_VisitJob], list[tuple[str, Path]], list[Finding]]:
    jobs: list[_VisitJob] = []
    bids_roots: list[tuple[str, Path]] = []
    findings: list[Finding] = []
    if (upload / "dataset_description.json").is_file():
        return [], [("n/a", upload)], []
    findings.extend(_stray_files(upload, "upload"))
    seen: dict[str, tuple[str, str]] = {}
    for site_dir in _dirs(upload):
        site = site_dir.name
        if (site_dir / "dataset_description.json").is_file():
            bids_roots.append((site, site_dir))
            continue
        findings.extend(_stray_files(site_dir, "site"))
        for subj_dir in _dirs(site_dir):
            name = subj_dir.name
            raw = subject_map.get(name, _label(name))
            try:
                label = normalise_participant_label(raw)
            except InputError:
                findings.append(
                    Finding(
                        "error",
                        "subject-label-invalid",
                        subj_dir,
                        f"{site}/{name}: no BIDS label can be made from {raw!r} "
                        "(rule: letters and digits only)",
                        "rename the folder or map it with subject_map",
                    )
                )
                continue
            if label in seen:
                findings.append(
                    Finding(
                        "error",
                        "subject-label-collision",
                        subj_dir,
                        f"{site}/{name}: label sub-{label} already used by "
                        f"{seen[label][0]}/{seen[label][1]}; not ingested",
                        "give the subjects distinct names or map them with subject_map",
                    )
                )
                continue
            seen[label] = (site, name)
            findings.extend(_stray_files(subj_dir, "subject"))
            sessions: dict[str, str] = {}
            for visit_dir in _dirs(subj_dir):
                ses = _label(visit_dir.name)
                if not ses or ses in sessions:
                    why = "is empty" if not ses else f"repeats {sessions[ses]!r}"
                    findings.append(
                        Finding(
                            "error",
                            "session-label-invalid",
                            visit_dir,
                            f"{site}/{name}/{visit_dir.name}: session label {ses!r} {why}; "
                            "not ingested",
                            "rename the visit folder (letters and digits)",
                        )
                    )
                    continue
                sessions[ses] = visit_dir.name
                jobs.append(_VisitJob(site, name, visit_dir.name, visit_dir, label, ses))
    return jobs, bids_roots, findings


#: Per-subject date shifts (whole days), so later uploads of a subject share its anchor.
#: This is the key that turns shifted dates back into real ones: it stays with the upload
#: at the reading centre; lesionq never copies it into its outputs or the database.
DATE_SHIFT_KEY = REPORT_DIR / "date_shift_key.tsv"


def _write_sessions(
    bids: Path, subject: str, real: Mapping[str, datetime | None]
) -> tuple[list[WrittenFile], dict[str, str | None], list[Finding]]:
    path = bids / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    key_path = bids / DATE_SHIFT_KEY
    keys = {r["participant_id"]: r for r in _read_tsv(key_path)} if key_path.is_file() else {}
    stored = keys.get(f"sub-{subject}", {}).get("shift_days")
    findings = []
    written: list[WrittenFile] = []
    if stored not in (None, ""):
        days: int | None = int(stored)  # a later upload: the subject's anchor is kept
    else:
        days = date_shift_days(real)
        if days is not None:
            keys[f"sub-{subject}"] = {"participant_id": f"sub-{subject}", "shift_days": str(days)}
            ordered_keys = [keys[k] for k in sorted(keys)]
            written.append(
                write_bytes_if_changed(
                    key_path, _tsv(ordered_keys, ["participant_id", "shift_days"])
                )
            )
    shifted = apply_date_shift(real, days) if days is not None else dict(real)
    iso = {k: (None if v is None else v.isoformat(timespec="seconds")) for k, v in shifted.items()}
    rows: dict[str, dict[str, Any]] = {r.get("session_id", ""): r for r in _read_tsv(path)}
    earlier = sorted(k for k in rows if k[4:] not in real and rows[k].get("acq_time"))
    if earlier and stored in (None, ""):
        findings.append(
            Finding(
                "warning",
                "date-shift-partial",
                path,
                f"sub-{subject}: sessions {earlier} were ingested without a stored date shift "
                f"({DATE_SHIFT_KEY.as_posix()} has no row for this subject); this upload's dates "
                "are anchored on its own earliest visit, so intervals to the earlier sessions are "
                "not reliable",
                "re-ingest every visit of the subject together",
            )
        )
    for ses, value in iso.items():
        rows[f"ses-{ses}"] = {
            **rows.get(f"ses-{ses}", {}),
            "session_id": f"ses-{ses}",
            "acq_time": value,
        }
    ordered = sorted(
        rows.values(),
        key=lambda r: natural_key(r["session_id"]),
    )
    written.append(write_bytes_if_changed(path, _tsv(ordered, ["session_id", "acq_time"])))
    return written, iso, findings


def _write_participants(bids: Path, sites: Mapping[str, str]) -> WrittenFile:
    path = bids / "participants.tsv"
    existing = _read_tsv(path)
    columns = ["participant_id", "site"]
    for r in existing:
        columns += [c for c in r if c not in columns]
    rows = {r["participant_id"]: r for r in existing if r.get("participant_id")}
    for subject, site in sites.items():
        pid = f"sub-{subject}"
        rows[pid] = {**rows.get(pid, {}), "participant_id": pid, "site": site}
    return write_bytes_if_changed(path, _tsv([rows[k] for k in sorted(rows)], columns))


def _write_description(bids: Path, converter: str | None) -> WrittenFile | None:
    path = bids / "dataset_description.json"
    if path.is_file():
        return None
    generated = [{"Name": "lesionq ingest", "Version": __version__}]
    if converter:
        generated.append({"Name": "dcm2niix", "Version": converter.split()[-1]})
    desc = {
        "Name": "lesionq ingest",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": generated,
    }
    return write_bytes_if_changed(path, (json.dumps(desc, indent=2) + "\n").encode())


def ingest_upload(
    upload_dir: str | os.PathLike[str],
    bids_dir: str | os.PathLike[str],
    *,
    subject_map: Mapping[str, str] | None = None,
    choices: Mapping[ChoiceKey, int] | None = None,
    converter_timeout_s: float = 300.0,
) -> IngestReport:
    """Convert an upload folder into (or update) a BIDS dataset.

    Parameters
    ----------
    upload_dir : path-like
        ``UPLOAD/<site>/<subject>/<visit>/**`` of DICOM files, and/or
        ``UPLOAD/<site>/`` BIDS datasets (or ``UPLOAD`` itself a BIDS dataset).
    bids_dir : path-like
        Destination BIDS root (created when absent; existing content is kept
        and updated).
    subject_map : mapping, optional
        Upload subject folder name -> participant label (see
        :func:`read_subject_map`); folders not in it use their name reduced to
        ``[0-9a-zA-Z]``.
    choices : mapping, optional
        ``{(subject, visit, contrast): series_number}`` resolving ambiguities;
        subject/visit as upload folder names or labels, contrast a key of
        :data:`~lesionq.io.bids.CONTRASTS`.
    converter_timeout_s : float
        Limit on one dcm2niix run, s.

    Returns
    -------
    IngestReport
        ``.ok`` is False when any visit has an error finding (e.g. no usable or
        an ambiguous FLAIR); other visits are ingested regardless. The report is
        also written to ``bids_dir/sourcedata/lesionq-ingest/``.

    Raises
    ------
    MissingInputError
        ``upload_dir`` does not exist.
    ProcessingError
        The upload holds DICOM visits and dcm2niix is not installed.
    """
    t0 = time.perf_counter()
    upload = Path(upload_dir).resolve()
    bids = Path(bids_dir).resolve()
    if not upload.is_dir():
        raise MissingInputError(f"{upload}: upload folder not found (rule: upload_dir is a folder)")
    choices = dict(choices or {})
    jobs, bids_roots, findings = _plan(upload, dict(subject_map or {}))
    converter = None
    if jobs:
        converter = dcm2niix_version(str(find_dcm2niix()))
    visits: list[VisitIngest] = []
    written: list[WrittenFile] = []
    real_times: dict[str, dict[str, datetime | None]] = {}
    sites: dict[str, str] = {}
    all_ids: set[str] = set()
    for job in jobs:
        logger.info("ingest %s/%s/%s", job.site, job.upload_subject, job.upload_visit)
        visit, when, ids = _ingest_dicom_visit(job, upload, bids, choices, converter_timeout_s)
        visits.append(visit)
        written.extend(visit.written)
        all_ids |= ids
        real_times.setdefault(job.subject, {})[job.session] = when
        sites[job.subject] = job.site
    for site, root in bids_roots:
        bvisits, bfind, btimes = _ingest_bids_upload(site, root, bids)
        findings.extend(bfind)
        visits.extend(bvisits)
        for v in bvisits:
            written.extend(v.written)
            if v.subject is not None:
                sites.setdefault(v.subject, site)
        for subj, t in btimes.items():
            real_times.setdefault(subj, {}).update(t)
    shifted: dict[tuple[str, str], str | None] = {}
    for subject, times in real_times.items():
        wf, iso, sfind = _write_sessions(bids, subject, times)
        written.extend(wf)
        findings.extend(sfind)
        for ses, value in iso.items():
            shifted[(subject, ses)] = value
    visits = [
        v
        if v.subject is None
        else VisitIngest(**{**v.__dict__, "acq_time": shifted.get((v.subject, v.session or ""))})
        for v in visits
    ]
    if sites:
        written.append(_write_participants(bids, sites))
    if visits:
        desc = _write_description(bids, converter)
        if desc is not None:
            written.append(desc)
    all_findings = tuple(findings) + tuple(f for v in visits for f in v.findings)
    report = IngestReport(
        upload_dir=upload,
        bids_dir=bids,
        visits=tuple(visits),
        findings=all_findings,
        written=tuple(written),
        converter=converter,
        elapsed_s=time.perf_counter() - t0,
    )
    report_files = _write_report(report, all_ids)
    return IngestReport(
        **{**report.__dict__, "report_files": report_files, "elapsed_s": time.perf_counter() - t0}
    )


def _write_report(report: IngestReport, ids: Iterable[str]) -> tuple[Path, ...]:
    """``ingest_report.json`` and ``ingest_series.tsv`` (identifiers redacted again)."""
    ids = list(ids)
    out = report.bids_dir / REPORT_DIR
    data = report.to_dict()
    text = redact(
        json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True), ids, date_tokens=False
    )
    rows = [
        {
            "site": v["site"],
            "participant_id": v["participant_id"],
            "session_id": v["session_id"],
            "upload_subject": v["upload_subject"],
            "upload_visit": v["upload_visit"],
            **{
                k: s[k]
                for k in (
                    "series_number",
                    "series_hash",
                    "description",
                    "n_files",
                    "n_slices",
                    "class",
                    "derived",
                    "status",
                    "contrast",
                )
            },
            "reasons": " | ".join(s["reasons"]),
        }
        for v in data["visits"]
        for s in v["series"]
    ]
    cols = [
        "site",
        "participant_id",
        "session_id",
        "upload_subject",
        "upload_visit",
        "series_number",
        "series_hash",
        "description",
        "n_files",
        "n_slices",
        "class",
        "derived",
        "status",
        "contrast",
        "reasons",
    ]
    tsv = redact(_tsv(rows, cols).decode("utf-8"), ids, date_tokens=False)
    a = write_bytes_if_changed(out / "ingest_report.json", (text + "\n").encode("utf-8"))
    b = write_bytes_if_changed(out / "ingest_series.tsv", tsv.encode("utf-8"))
    return (a.path, b.path)
